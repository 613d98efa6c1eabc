"""Policies for a replay, read from a TOML file and laid over the shipped defaults.

Each ``[[policies]]`` table is one row of ``rate_limit_configs``, written with
the option names of ``rampgate limits set``::

    [[policies]]
    action = "media_view"
    tier = "B"                 # or actor = "ip:h0127.prodigy.com", or neither for a global policy
    limit = 20
    window = "60s"             # a duration, or whole seconds
    burst = 30                 # optional
    algorithm = "token_bucket" # optional: token_bucket, fixed_window, sliding_window, gcra
    fail_mode = "open"         # optional
    cost_per_action = 1        # optional
    enabled = true             # optional: false switches a shipped policy off

A table replaces the shipped policy with the same scope, tier or actor and
action, and adds a policy otherwise.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rampgate.core.durations import parse_duration
from rampgate.core.names import parse_actor
from rampgate.core.policies import Policy, check_policy
from rampgate.errors import ConfigurationError, InvalidInput

PolicyKey = tuple[str, str | None, str | None, str | None, str]

_KEYS = frozenset(
    {
        "action", "scope", "tier", "actor", "limit", "limit_value", "window", "window_seconds",
        "burst", "algorithm", "fail_mode", "cost_per_action", "enabled",
    }
)


def policy_key(policy: Policy) -> PolicyKey:
    """Return the identity of a policy row: scope, tier, actor type, actor id and action."""
    return (policy.scope, policy.tier, policy.actor_type, policy.actor_id, policy.action)


def merge_policies(base: Iterable[Policy], overrides: Iterable[Policy]) -> list[Policy]:
    """Return ``base`` with each override replacing the row of the same identity, new rows appended."""
    merged = {policy_key(policy): policy for policy in base}
    for policy in overrides:
        merged[policy_key(policy)] = policy
    return list(merged.values())


def load_policies(path: str | Path) -> list[Policy]:
    """Read a policies file; raise :class:`ConfigurationError` naming the first bad table and key."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError("--policies", str(path), f"a readable TOML file ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError("--policies", str(path), f"valid TOML ({error})") from error
    return policies_from_document(document)


def policies_from_document(document: dict[str, Any]) -> list[Policy]:
    """Build the policies of a parsed document with a ``policies`` array of tables."""
    unknown = sorted(set(document) - {"policies"})
    if unknown:
        raise ConfigurationError("policies file key", unknown[0], "[[policies]] tables")
    tables = document.get("policies", [])
    if not isinstance(tables, list):
        raise ConfigurationError("policies", tables, "an array of [[policies]] tables")

    policies = [_parse_policy(number, table) for number, table in enumerate(tables, 1)]
    keys = [policy_key(policy) for policy in policies]
    for number, key in enumerate(keys, 1):
        if keys.index(key) != number - 1:
            raise ConfigurationError(f"policies[{number}]", policies[number - 1].name, "one table per policy")
    return policies


def _parse_policy(number: int, table: object) -> Policy:
    field = f"policies[{number}]"
    if not isinstance(table, dict):
        raise ConfigurationError(field, table, "a table with action, limit and window")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigurationError(f"{field} key", unknown[0], "one of " + ", ".join(sorted(_KEYS)))

    scope, tier, actor_type, actor_id = _parse_scope(field, table)
    limit = table.get("limit", table.get("limit_value"))
    if limit is None:
        raise ConfigurationError(f"{field}.limit", None, "an integer of 1 or more")
    window_text = table.get("window", table.get("window_seconds"))
    if window_text is None:
        raise ConfigurationError(f"{field}.window", None, 'a duration such as "60s" or "1h"')
    window = parse_duration(window_text, f"{field}.window")
    if window != int(window):
        raise ConfigurationError(f"{field}.window", window_text, "whole seconds")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigurationError(f"{field}.enabled", enabled, "true or false")

    policy = Policy(
        scope=scope,
        action=table.get("action"),  # type: ignore[arg-type]
        limit_value=limit,
        window_seconds=int(window),
        algorithm=table.get("algorithm", "token_bucket"),
        tier=tier,
        actor_type=actor_type,
        actor_id=actor_id,
        burst=table.get("burst"),
        cost_per_action=table.get("cost_per_action", 1),
        fail_mode=table.get("fail_mode", "open"),
        enabled=enabled,
    )
    try:
        return check_policy(policy)
    except InvalidInput as error:
        raise ConfigurationError(f"{field}.{error.field}", error.value, error.allowed) from error


def _parse_scope(field: str, table: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    if "actor" in table and "tier" in table:
        raise ConfigurationError(field, table["actor"], "either actor or tier, not both")
    if "actor" in table:
        actor_type, actor_id = parse_actor(str(table["actor"]), f"{field}.actor")
        scope, tier = "actor", None
    elif "tier" in table:
        scope, tier, actor_type, actor_id = "tier", table["tier"], None, None
    else:
        scope, tier, actor_type, actor_id = "global", None, None, None

    declared = table.get("scope")
    if declared is not None and declared != scope:
        raise ConfigurationError(
            f"{field}.scope", declared, f"{scope!r}: a table with tier is a tier policy, with actor an actor policy, with neither a global one"
        )
    return scope, tier, actor_type, actor_id
