"""Build the settings of a replay from the files and options the command line names."""

from __future__ import annotations

from pathlib import Path

from rampgate.core.defaults import default_policies
from rampgate.core.names import check_percentage
from rampgate.core.plans import Plan, default_plan, parse_plan
from rampgate.errors import ConfigurationError
from rampgate.simulate.actions import ActionMap
from rampgate.simulate.bots import BotSpec
from rampgate.simulate.policies import load_policies, merge_policies
from rampgate.simulate.replay import ReplaySettings
from rampgate.simulate.trust import load_trust


def load_plan(path: str | Path) -> Plan:
    """Read a plan file: TOML, or YAML or JSON by extension."""
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = suffix if suffix in ("yaml", "yml", "json") else "toml"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError("--plan", str(path), f"a readable plan file ({error.strerror or error})") from error
    return parse_plan(text, fmt)


def build_replay_settings(
    *,
    plan: str | Path | None = None,
    percentage: int | None = None,
    actions: str | Path | None = None,
    trust: str | Path | None = None,
    policies: str | Path | None = None,
    bots: BotSpec | None = None,
    top_blocked: int = 20,
) -> ReplaySettings:
    """Read every file named and return the settings; raise :class:`ConfigurationError` naming the bad one.

    The catalog is the shipped defaults with the policies file laid over them.
    """
    if percentage is not None:
        check_percentage(percentage, "--percentage")
    return ReplaySettings(
        plan=load_plan(plan) if plan is not None else default_plan(),
        percentage=percentage,
        action_map=ActionMap.load(actions) if actions is not None else ActionMap(),
        policies=tuple(merge_policies(default_policies(), load_policies(policies) if policies is not None else [])),
        trust=tuple(load_trust(trust)) if trust is not None else (),
        bots=bots,
        top_blocked=top_blocked,
    )
