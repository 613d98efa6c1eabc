"""An immutable view of the catalog that the request path reads without I/O."""

from __future__ import annotations

from typing import Iterable, NamedTuple

from rampgate.core.flags import ENFORCEMENT_FLAG, Flag
from rampgate.core.names import DEFAULT_LEVEL, DEFAULT_TIER
from rampgate.core.policies import Policy, PolicyTable
from rampgate.core.trust import TrustProfile

_DEFAULT_TRUST = (DEFAULT_TIER, DEFAULT_LEVEL)


class Route(NamedTuple):
    """How one action is rolled out: the governing flag and its numbers for that action."""

    flag: Flag
    percentage: int
    group: str
    shadow: bool


class CatalogSnapshot:
    """Flags, policies and trust profiles at one moment, indexed for the request path.

    The governing flag of an action is a flag whose ``config.actions`` lists it;
    failing that, a flag without that list (``rate_limit_enforcement`` first,
    then by name). An action that no flag governs is enforced.
    """

    __slots__ = ("_routes", "flags", "policies", "trust", "version")

    def __init__(
        self,
        flags: Iterable[Flag] = (),
        policies: Iterable[Policy] = (),
        trust: Iterable[TrustProfile] = (),
        version: int = 0,
    ) -> None:
        self.flags: dict[str, Flag] = {flag.name: flag for flag in flags}
        self.policies = PolicyTable(policies)
        self.trust: dict[tuple[str, str], tuple[str, str]] = {
            (profile.actor_type, profile.actor_id): (profile.risk_tier, profile.enforcement_level)
            for profile in trust
        }
        self.version = version
        self._routes: dict[str, Route | None] = {}

    def route(self, action: str) -> Route | None:
        """Return the rollout route of ``action``, None when no flag governs it."""
        try:
            return self._routes[action]
        except KeyError:
            pass

        route = None
        flag = self._governing_flag(action)
        if flag is not None:
            route = Route(flag, flag.percentage_for(action), flag.group, flag.shadow)
        if len(self._routes) < 100_000:
            self._routes[action] = route
        return route

    def _governing_flag(self, action: str) -> Flag | None:
        listed = [f for f in self.flags.values() if f.actions is not None and action in f.actions]
        if listed:
            return min(listed, key=lambda f: f.name)
        unlisted = [f for f in self.flags.values() if f.actions is None]
        if not unlisted:
            return None
        return min(unlisted, key=lambda f: (f.name != ENFORCEMENT_FLAG, f.name))

    def trust_of(self, actor_type: str, actor_id: str) -> tuple[str, str]:
        """Return ``(tier, enforcement level)``: B and E0 for an actor without a profile."""
        return self.trust.get((actor_type, actor_id), _DEFAULT_TRUST)
