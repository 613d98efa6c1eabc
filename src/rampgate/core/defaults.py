"""The shipped defaults that ``rampgate migrate`` seeds."""

from __future__ import annotations

from rampgate.core.flags import ENFORCEMENT_FLAG, Flag
from rampgate.core.policies import Policy

GOVERNED_ACTIONS: tuple[str, ...] = (
    "create_post",
    "send_message",
    "follow",
    "media_upload",
    "search",
    "api_call",
)

# (limit, window_seconds) per action and tier A, B, C, D.
DEFAULT_LIMITS: dict[str, tuple[tuple[int, int], ...]] = {
    "create_post": ((50, 60), (20, 60), (5, 60), (1, 3600)),
    "send_message": ((100, 60), (60, 60), (15, 60), (1, 3600)),
    "follow": ((40, 60), (15, 60), (3, 60), (1, 3600)),
    "media_upload": ((20, 60), (5, 60), (1, 60), (1, 3600)),
    "search": ((300, 60), (100, 60), (30, 60), (1, 3600)),
    "api_call": ((500, 60), (200, 60), (50, 60), (2, 3600)),
}


def default_flag() -> Flag:
    return Flag(ENFORCEMENT_FLAG, False, 0, {"actions": list(GOVERNED_ACTIONS)})


def default_policies() -> list[Policy]:
    policies = []
    for action, limits in DEFAULT_LIMITS.items():
        for tier, (limit, window) in zip("ABCD", limits):
            policies.append(Policy(scope="tier", tier=tier, action=action, limit_value=limit, window_seconds=window))
    return policies
