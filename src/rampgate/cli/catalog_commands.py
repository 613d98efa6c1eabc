"""Commands that read and change the catalog: migrate, flag, limits, trust."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.catalog.repository import flag_to_dict, policy_to_dict, trust_to_dict
from rampgate.cli.app import app
from rampgate.cli.output import (
    cell,
    masked_url,
    open_catalog,
    operator_name,
    parse_int,
    print_json,
    stderr,
    stdout,
)
from rampgate.core.durations import parse_duration
from rampgate.core.flags import Flag
from rampgate.core.names import check_action, check_level, check_percentage, check_tier, parse_actor
from rampgate.core.policies import ALGORITHMS, Policy, check_policy
from rampgate.errors import InvalidInput
from rampgate.settings import load_settings

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")

flag_app = typer.Typer(help="Show and change feature flags.", no_args_is_help=True)
limits_app = typer.Typer(help="List and change rate-limit policies.", no_args_is_help=True)
trust_app = typer.Typer(help="Set actors' trust tiers and enforcement levels.", no_args_is_help=True)
app.add_typer(flag_app, name="flag")
app.add_typer(limits_app, name="limits")
app.add_typer(trust_app, name="trust")


@app.command("migrate")
def migrate_command(as_json: bool = JSON_OPTION) -> None:
    """Create or upgrade the catalog schema and seed the default flag and policies."""
    settings = load_settings()
    engine = create_catalog_engine(settings.database_url)
    before, after = migrate(engine)
    engine.dispose()

    if as_json:
        print_json({"database": masked_url(settings.database_url), "from_revision": before, "to_revision": after})
    elif before == after:
        stdout.print(f"{masked_url(settings.database_url)}: schema already at revision {after}")
    else:
        stdout.print(f"{masked_url(settings.database_url)}: schema upgraded from {before or 'empty'} to revision {after}")


# -- flag -------------------------------------------------------------------


def _print_flag(flag: Flag) -> None:
    state = Text("enabled", style="green") if flag.enabled else Text("disabled", style="red")
    stdout.print(Text.assemble((flag.name, "bold"), ": ", state, f", {flag.percentage} %"))
    if flag.actions is not None:
        stdout.print("  actions: " + ", ".join(flag.actions), markup=False)
    for action, percentage in sorted(flag.action_percentages.items()):
        stdout.print(f"  {action}: {percentage} %", markup=False)
    if flag.config.get("group"):
        stdout.print(f"  bucketing group: {flag.config['group']}", markup=False)
    if not flag.shadow:
        stdout.print("  shadow evaluation: off")


@flag_app.command("show")
def flag_show(name: str | None = typer.Argument(None, help="Flag name; all flags when omitted."), as_json: bool = JSON_OPTION) -> None:
    """Show one flag, or every flag."""
    catalog = open_catalog()
    flags = [catalog.get_flag(name)] if name else catalog.list_flags()
    if as_json:
        print_json(flag_to_dict(flags[0]) if name else [flag_to_dict(f) for f in flags])
        return
    for flag in flags:
        _print_flag(flag)


def _parse_action_percentages(items: list[str]) -> dict[str, int | None]:
    """Parse ``ACTION=P`` items; ``ACTION=`` (no percentage) removes the action's override."""
    result: dict[str, int | None] = {}
    for item in items:
        action, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput("--action-percentage", item, "ACTION=PERCENT, for example media_upload=50")
        check_action(action, "--action-percentage action")
        if not value.strip():
            result[action] = None
            continue
        try:
            percentage = int(value)
        except ValueError:
            raise InvalidInput(f"--action-percentage {action}", value, "an integer from 0 to 100") from None
        result[action] = check_percentage(percentage, f"--action-percentage {action}")
    return result


@flag_app.command("set")
def flag_set(
    name: str = typer.Argument(..., help="Flag name, for example rate_limit_enforcement."),
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", help="Turn the flag on or off."),
    percentage: str | None = typer.Option(None, "--percentage", help="Share of actors enforced, 0 to 100."),
    action_percentage: Annotated[
        list[str] | None,
        typer.Option("--action-percentage", help="Per-action percentage as ACTION=P (ACTION= removes the override); repeat for several actions."),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Change a flag's state, percentage or per-action percentages."""
    percentage_value = None
    if percentage is not None:
        percentage_value = check_percentage(
            parse_int(percentage, "--percentage", "an integer from 0 to 100"), "--percentage"
        )
    overrides = _parse_action_percentages(action_percentage or [])
    if enabled is None and percentage_value is None and not overrides:
        raise InvalidInput("options", "none", "at least one of --enabled/--disabled, --percentage, --action-percentage")

    catalog = open_catalog()
    flag = catalog.set_flag(
        name, enabled=enabled, percentage=percentage_value, action_percentages=overrides or None,
        changed_by=operator_name(), via="cli",
    )
    if as_json:
        print_json(flag_to_dict(flag))
    else:
        _print_flag(flag)


@flag_app.command("rollback")
def flag_rollback(name: str = typer.Argument(..., help="Flag name."), as_json: bool = JSON_OPTION) -> None:
    """Disable a flag at 0 % and clear its per-action percentages: every actor is allowed again."""
    catalog = open_catalog()
    current = catalog.get_flag(name)
    config = dict(current.config)
    config.pop("action_percentages", None)
    flag = catalog.set_flag(
        name, enabled=False, percentage=0, config=config, changed_by=operator_name(), via="cli"
    )
    if as_json:
        print_json(flag_to_dict(flag))
    else:
        _print_flag(flag)
        stderr.print("running servers pick the change up within a second")


# -- limits -----------------------------------------------------------------


@limits_app.command("list")
def limits_list(
    action: str | None = typer.Option(None, "--action", help="Only this action."),
    tier: str | None = typer.Option(None, "--tier", help="Only this tier, A to D."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the policies, most specific scope last."""
    if action is not None:
        check_action(action, "--action")
    if tier is not None:
        check_tier(tier, "--tier")
    policies = open_catalog().list_policies(action=action, tier=tier)
    if as_json:
        print_json([policy_to_dict(p) for p in policies])
        return

    table = Table("policy", "algorithm", "limit", "window s", "burst", "cost", "fail mode", "enabled")
    for policy in policies:
        table.add_row(
            cell(policy.name),
            cell(policy.algorithm),
            cell(policy.limit_value),
            cell(policy.window_seconds),
            cell(policy.burst),
            cell(policy.cost_per_action),
            cell(policy.fail_mode),
            cell("yes" if policy.enabled else "no"),
        )
    stdout.print(table)


@limits_app.command("set")
def limits_set(
    action: str = typer.Option(..., "--action", help="Action name, for example media_upload."),
    limit: str = typer.Option(..., "--limit", help="Units allowed per window, 1 or more."),
    window: str = typer.Option(..., "--window", help="Window in seconds, or a duration such as 60s, 1m, 1h."),
    tier: str | None = typer.Option(None, "--tier", help="Set the policy of this tier, A to D."),
    actor: str | None = typer.Option(None, "--actor", help="Set an override for one actor, TYPE:ID."),
    is_global: bool = typer.Option(False, "--global", help="Set the global policy of the action."),
    burst: str | None = typer.Option(None, "--burst", help="Bucket size of token_bucket and gcra, 1 or more."),
    algorithm: str = typer.Option("token_bucket", "--algorithm", help="One of " + ", ".join(ALGORITHMS) + "."),
    fail_mode: str = typer.Option("open", "--fail-mode", help="open: allow when the store fails; closed: block."),
    cost_per_action: str = typer.Option("1", "--cost-per-action", help="Units one request of cost 1 uses."),
    disabled: bool = typer.Option(False, "--disabled", help="Store the policy but skip it when deciding."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create or change the policy of a tier, an actor or the whole action."""
    scopes = [name for name, given in (("--tier", tier is not None), ("--actor", actor is not None), ("--global", is_global)) if given]
    if len(scopes) != 1:
        raise InvalidInput("scope", " ".join(scopes) or "none", "exactly one of --tier T, --actor TYPE:ID, --global")

    check_action(action, "--action")
    limit_value = parse_int(limit, "--limit", "an integer of 1 or more")
    seconds = parse_duration(window if not window.isdigit() else int(window), "--window")
    if seconds != int(seconds) or seconds < 1:
        raise InvalidInput("--window", window, "whole seconds, 1 or more")
    burst_value = None if burst is None else parse_int(burst, "--burst", "an integer of 1 or more")

    actor_type = actor_id = None
    scope = "global"
    if tier is not None:
        check_tier(tier, "--tier")
        scope = "tier"
    elif actor is not None:
        actor_type, actor_id = parse_actor(actor, "--actor")
        scope = "actor"

    policy = Policy(
        scope=scope, tier=tier, actor_type=actor_type, actor_id=actor_id, action=action,
        limit_value=limit_value, window_seconds=int(seconds), burst=burst_value, algorithm=algorithm,
        fail_mode=fail_mode, enabled=not disabled,
        cost_per_action=parse_int(cost_per_action, "--cost-per-action", "an integer from 1 to 1000000"),
    )
    _check_policy_options(policy)
    stored = open_catalog().set_policy(policy, changed_by=operator_name(), via="cli")
    if as_json:
        print_json(policy_to_dict(stored))
    else:
        stdout.print(
            f"{stored.name}: {stored.limit_value} per {stored.window_seconds} s ({stored.algorithm})", markup=False
        )


# The options of `limits set` that carry each field of a policy.
POLICY_OPTIONS = {
    "action": "--action",
    "tier": "--tier",
    "actor_type": "--actor type",
    "actor_id": "--actor id",
    "algorithm": "--algorithm",
    "limit": "--limit",
    "window": "--window",
    "burst": "--burst",
    "cost_per_action": "--cost-per-action",
    "fail_mode": "--fail-mode",
}


def _check_policy_options(policy: Policy) -> None:
    """Validate ``policy`` before the catalog is opened; errors name the command's options."""
    try:
        check_policy(policy)
    except InvalidInput as error:
        option = POLICY_OPTIONS.get(error.field)
        if option is None:
            raise
        raise InvalidInput(option, error.value, error.allowed) from None


# -- trust ------------------------------------------------------------------


@trust_app.command("set")
def trust_set(
    actor: str = typer.Option(..., "--actor", help="The actor, TYPE:ID, for example user:u-42."),
    tier: str = typer.Option(..., "--tier", help="Trust tier: A (trusted) to D (restricted)."),
    level: str | None = typer.Option(None, "--level", help="Enforcement level E0 to E5; E5 blocks every governed action."),
    score: str | None = typer.Option(None, "--score", help="Trust score, 0 to 100."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Set an actor's trust tier and, optionally, enforcement level."""
    actor_type, actor_id = parse_actor(actor, "--actor")
    check_tier(tier, "--tier")
    if level is not None:
        check_level(level, "--level")
    score_value = None
    if score is not None:
        try:
            score_value = float(score)
        except ValueError:
            score_value = None
        if score_value is None or not 0 <= score_value <= 100:
            raise InvalidInput("--score", score, "a number from 0 to 100")
    profile = open_catalog().set_trust(
        actor_type, actor_id, tier=tier, level=level, trust_score=score_value, changed_by=operator_name(), via="cli"
    )
    if as_json:
        print_json(trust_to_dict(profile))
    else:
        stdout.print(
            f"{actor_type}:{actor_id}: tier {profile.risk_tier}, level {profile.enforcement_level}", markup=False
        )
