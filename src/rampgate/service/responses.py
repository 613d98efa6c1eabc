"""RateLimit headers and the 429 response, shared by the service, the middleware and the decorator.

Headers follow the IETF draft "RateLimit header fields for HTTP" (-10
syntax): the policy name is ``<tier>.<action>``, ``q`` and ``w`` come from
the policy, ``r`` is the whole units left (at most ``q``) and ``t`` the
seconds until one more unit, rounded up; ``t`` is left out when the counter
is full, and on a 429 it equals ``Retry-After``.
"""

from __future__ import annotations

from math import ceil
from typing import Any

from rampgate.core.decision import Decision, header_seconds


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    """Return ``RateLimit-Policy`` and ``RateLimit`` for a decision that has a policy."""
    if decision.policy is None or decision.limit is None:
        return {}

    name = f"{decision.tier}.{decision.action}"
    headers = {"RateLimit-Policy": f'"{name}";q={decision.limit};w={decision.window_seconds}'}

    remaining = decision.remaining
    if remaining is None:
        remaining = decision.limit
    remaining = max(0, min(remaining, decision.limit))

    if not decision.allowed and decision.retry_after is not None:
        seconds: int | None = header_seconds(decision.retry_after)
    elif decision.next_unit_after is not None and decision.next_unit_after > 0:
        seconds = max(1, ceil(decision.next_unit_after - 1e-9))
    else:
        seconds = None

    value = f'"{name}";r={remaining}'
    if seconds is not None:
        value += f";t={seconds}"
    headers["RateLimit"] = value
    return headers


def allowed_headers(decision: Decision) -> dict[str, str]:
    """Headers of an allowed response from a protected endpoint: the RateLimit fields when enforced.

    In shadow mode the counters describe a limit the actor is not yet held
    to. A client that paces itself by ``r`` and ``t`` would feel that limit
    before the rollout reaches it, so shadow and bypass responses carry none.
    """
    if decision.mode != "enforce":
        return {}
    return ratelimit_headers(decision)


def blocked_headers(decision: Decision) -> dict[str, str]:
    """Headers of a 429: the RateLimit fields plus ``Retry-After`` unless the request can never pass."""
    headers = ratelimit_headers(decision)
    retry = decision.retry_after_header
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return headers


def blocked_body(decision: Decision, language: str = "en") -> dict[str, Any]:
    """Build the JSON body of a 429; ``retryAfter`` is the integer in ``Retry-After``, null when it can never pass."""
    return {
        "error": "rate_limited",
        "action": decision.action,
        "tier": decision.tier,
        "retryAfter": decision.retry_after_header,
        "limit": decision.limit,
        "windowSeconds": decision.window_seconds,
        "message": decision.message(language),
    }
