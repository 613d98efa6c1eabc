"""Feature flags that roll enforcement out to a cohort of actors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rampgate.core.bucketing import is_in_cohort
from rampgate.core.names import check_action, check_percentage
from rampgate.errors import InvalidInput

ENFORCEMENT_FLAG = "rate_limit_enforcement"


@dataclass(frozen=True, slots=True)
class Flag:
    """One row of ``feature_flags``.

    ``config`` keys that rampgate reads: ``actions`` (the actions the flag
    governs; absent means every action), ``action_percentages`` (per-action
    overrides of ``percentage``), ``group`` (the bucketing group, default the
    flag name) and ``shadow`` (evaluate actors outside the cohort without
    enforcing, default true).
    """

    name: str
    enabled: bool
    percentage: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def actions(self) -> tuple[str, ...] | None:
        actions = self.config.get("actions")
        return None if actions is None else tuple(actions)

    @property
    def action_percentages(self) -> dict[str, int]:
        return dict(self.config.get("action_percentages") or {})

    @property
    def group(self) -> str:
        return str(self.config.get("group") or self.name)

    @property
    def shadow(self) -> bool:
        return self.config.get("shadow", True) is not False

    def governs(self, action: str) -> bool:
        actions = self.actions
        return actions is None or action in actions

    def percentage_for(self, action: str) -> int:
        """Return the enforced percentage for ``action``: 0 while the flag is disabled."""
        if not self.enabled:
            return 0
        return int(self.action_percentages.get(action, self.percentage))

    def is_enforced(self, actor_id: str, action: str) -> bool:
        return is_in_cohort(self.group, actor_id, self.percentage_for(action))


def check_flag_config(config: object) -> dict[str, Any]:
    """Validate a flag's ``config`` document and return it as a plain dict."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InvalidInput("config", config, "a JSON object")

    actions = config.get("actions")
    if actions is not None:
        if not isinstance(actions, list):
            raise InvalidInput("config.actions", actions, "a list of action names")
        for action in actions:
            check_action(action, "config.actions")

    percentages = config.get("action_percentages")
    if percentages is not None:
        if not isinstance(percentages, dict):
            raise InvalidInput("config.action_percentages", percentages, "an object of action name to percentage")
        for action, percentage in percentages.items():
            check_action(action, "config.action_percentages")
            if actions is not None and action not in actions:
                raise InvalidInput("config.action_percentages", action, "an action listed in config.actions")
            check_percentage(percentage, f"config.action_percentages.{action}")

    group = config.get("group")
    if group is not None and (not isinstance(group, str) or not group):
        raise InvalidInput("config.group", group, "a non-empty string")

    shadow = config.get("shadow")
    if shadow is not None and not isinstance(shadow, bool):
        raise InvalidInput("config.shadow", shadow, "true or false")

    return dict(config)
