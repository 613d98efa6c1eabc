"""The action map: which action a logged HTTP request stands for.

A map is a TOML file of rules, tried in order. The first rule whose method
and path match gives the action. A request that no rule matches gets the
default action, ``api_call`` unless the file sets ``default``::

    default = "api_call"

    [[rules]]
    method = "GET"            # optional: any method when absent; a list is allowed
    path = "^/images/"        # optional: a Python regular expression, searched in the path
    action = "media_view"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rampgate.core.names import check_action
from rampgate.errors import ConfigurationError, InvalidInput

DEFAULT_ACTION = "api_call"
# Distinct request lines remembered before the cache starts over; a trace
# with query strings can have millions of them.
_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class ActionRule:
    """One rule: the methods it matches (None for any), the path pattern (None for any), the action."""

    methods: frozenset[str] | None
    path: re.Pattern[str] | None
    action: str

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.path is None or self.path.search(path) is not None


class ActionMap:
    """Rules from method and path to action, first match wins, with a cache per request line."""

    __slots__ = ("_cache", "default", "rules")

    def __init__(self, rules: tuple[ActionRule, ...] = (), default: str = DEFAULT_ACTION) -> None:
        self.rules = rules
        self.default = check_action(default, "default action")
        self._cache: dict[str, str] = {}

    @property
    def actions(self) -> tuple[str, ...]:
        """Every action the map can return, the default last."""
        seen = dict.fromkeys(rule.action for rule in self.rules)
        seen.pop(self.default, None)
        return (*seen, self.default)

    def action_for(self, method: str, path: str) -> str:
        """Return the action of the first rule matching ``method`` and ``path``, else the default."""
        for rule in self.rules:
            if rule.matches(method, path):
                return rule.action
        return self.default

    def action_for_request(self, request: str) -> str:
        """Return the action of a logged request line such as ``GET /images/a.gif HTTP/1.0``.

        The cache is keyed by the whole line, so a repeated request costs one
        dictionary lookup and no split. A line without a path (``-``, as
        servers log a connection that sent nothing) has the path "".
        """
        action = self._cache.get(request)
        if action is not None:
            return action

        parts = request.split(" ", 2)
        action = self.action_for(parts[0], parts[1] if len(parts) > 1 else "")
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[request] = action
        return action

    @classmethod
    def load(cls, path: str | Path) -> ActionMap:
        """Read an action map file; raise :class:`ConfigurationError` naming the first bad entry."""
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigurationError("--actions", str(path), f"a readable TOML file ({error.strerror or error})") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError("--actions", str(path), f"valid TOML ({error})") from error
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ActionMap:
        """Build a map from parsed TOML: a ``default`` action and a ``rules`` array of tables."""
        unknown = sorted(set(document) - {"default", "rules"})
        if unknown:
            raise ConfigurationError("action map key", unknown[0], "default or [[rules]]")
        default = document.get("default", DEFAULT_ACTION)
        _check_action(default, "action map default")

        raw_rules = document.get("rules", [])
        if not isinstance(raw_rules, list):
            raise ConfigurationError("action map rules", raw_rules, "an array of [[rules]] tables")
        rules = tuple(_parse_rule(number, item) for number, item in enumerate(raw_rules, 1))
        return cls(rules, default)


def _parse_rule(number: int, item: object) -> ActionRule:
    field = f"rules[{number}]"
    if not isinstance(item, dict):
        raise ConfigurationError(field, item, "a table with action and optional method and path")
    unknown = sorted(set(item) - {"method", "path", "action"})
    if unknown:
        raise ConfigurationError(f"{field} key", unknown[0], "method, path or action")

    action = _check_action(item.get("action"), f"{field}.action")

    method = item.get("method")
    methods: frozenset[str] | None
    if method is None:
        methods = None
    elif isinstance(method, str) and method:
        methods = frozenset({method.upper()})
    elif isinstance(method, list) and method and all(isinstance(m, str) and m for m in method):
        methods = frozenset(m.upper() for m in method)
    else:
        raise ConfigurationError(f"{field}.method", method, 'an HTTP method such as "GET", or a list of them')

    pattern = item.get("path")
    compiled: re.Pattern[str] | None
    if pattern is None:
        compiled = None
    elif isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ConfigurationError(f"{field}.path", pattern, f"a valid regular expression ({error})") from error
    else:
        raise ConfigurationError(f"{field}.path", pattern, 'a regular expression such as "^/images/"')

    return ActionRule(methods, compiled, action)


def _check_action(value: object, field: str) -> str:
    try:
        return check_action(value, field)
    except InvalidInput as error:
        raise ConfigurationError(error.field, error.value, error.allowed) from error
