"""Names and value ranges shared by every layer: actors, actions, tiers, levels."""

from __future__ import annotations

import re

from rampgate.errors import InvalidInput

ACTOR_TYPES: tuple[str, ...] = ("user", "device", "ip", "org", "service")
TIERS: tuple[str, ...] = ("A", "B", "C", "D")
ENFORCEMENT_LEVELS: tuple[str, ...] = ("E0", "E1", "E2", "E3", "E4", "E5")
DEFAULT_TIER = "B"
DEFAULT_LEVEL = "E0"
SUSPENDED_LEVEL = "E5"
MAX_ACTOR_ID_LENGTH = 256
MAX_ACTION_LENGTH = 64

_ACTION_RE = re.compile(r"[a-z0-9_:.\-]{1,64}")
_ACTOR_TYPE_SET = frozenset(ACTOR_TYPES)


def is_valid_action(action: str) -> bool:
    return isinstance(action, str) and _ACTION_RE.fullmatch(action) is not None


def check_action(action: object, field: str = "action") -> str:
    if not isinstance(action, str) or _ACTION_RE.fullmatch(action) is None:
        raise InvalidInput(field, action, "1 to 64 characters of a-z 0-9 _ : . -")
    return action


def check_actor_type(actor_type: object, field: str = "actor_type") -> str:
    if not isinstance(actor_type, str) or actor_type not in _ACTOR_TYPE_SET:
        raise InvalidInput(field, actor_type, "one of " + ", ".join(ACTOR_TYPES))
    return actor_type


def check_actor_id(actor_id: object, field: str = "actor_id") -> str:
    if not isinstance(actor_id, str) or not 1 <= len(actor_id) <= MAX_ACTOR_ID_LENGTH:
        raise InvalidInput(field, actor_id, f"a string of 1 to {MAX_ACTOR_ID_LENGTH} characters")
    # PostgreSQL text cannot hold NUL, so such an id could be neither counted nor audited there.
    if "\x00" in actor_id:
        raise InvalidInput(field, actor_id, f"a string of 1 to {MAX_ACTOR_ID_LENGTH} characters without NUL")
    return actor_id


def check_tier(tier: object, field: str = "tier") -> str:
    if not isinstance(tier, str) or tier not in TIERS:
        raise InvalidInput(field, tier, "one of A, B, C, D")
    return tier


def check_level(level: object, field: str = "enforcement_level") -> str:
    if not isinstance(level, str) or level not in ENFORCEMENT_LEVELS:
        raise InvalidInput(field, level, "one of E0, E1, E2, E3, E4, E5")
    return level


def check_percentage(percentage: object, field: str = "percentage") -> int:
    if isinstance(percentage, bool) or not isinstance(percentage, int) or not 0 <= percentage <= 100:
        raise InvalidInput(field, percentage, "an integer from 0 to 100")
    return percentage


def check_cost(cost: object, field: str = "cost") -> int:
    if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= 1_000_000:
        raise InvalidInput(field, cost, "an integer from 1 to 1000000")
    return cost


def parse_actor(text: str, field: str = "actor") -> tuple[str, str]:
    """Split ``TYPE:ID`` (``user:u-42``) into a checked actor type and id."""
    actor_type, sep, actor_id = text.partition(":")
    if not sep:
        raise InvalidInput(field, text, "TYPE:ID, for example user:u-42, with TYPE one of " + ", ".join(ACTOR_TYPES))
    check_actor_type(actor_type, field + " type")
    check_actor_id(actor_id, field + " id")
    return actor_type, actor_id
