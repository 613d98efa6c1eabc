"""Commands that run and watch rollouts: ``rollout start|status|advance|pause|resume|abort|run`` and ``status``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Optional

import typer
from rich.table import Table

from rampgate.cli.app import app
from rampgate.cli.output import open_catalog, operator_name, print_json, stderr, stdout
from rampgate.core.durations import format_duration
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import default_plan
from rampgate.rollout.controller import DEFAULT_TICK_SECONDS, run_controller
from rampgate.rollout.lease import DEFAULT_LEASE_SECONDS
from rampgate.rollout.operations import RolloutOperations
from rampgate.rollout.plan_files import load_plan
from rampgate.rollout.status import build_status, rollout_of_flag
from rampgate.rollout.webhook import WebhookSender
from rampgate.settings import load_settings

rollout_app = typer.Typer(help="Ramp a flag through a plan, watch its gates, and roll it back.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")
FLAG_ARGUMENT = typer.Argument(ENFORCEMENT_FLAG, help="Flag name.", show_default=True)
REASON_OPTION = typer.Option(None, "--reason", help="Why; recorded with the transition.")

STATE_STYLES = {
    "running": "green",
    "paused": "yellow",
    "completed": "green",
    "rolled_back": "red",
    "aborted": "red",
    "none": "dim",
}
STATUS_STYLES = {"pass": "green", "fail": "red", "pending": "yellow"}


# -- formatting (pure) --------------------------------------------------------


def format_threshold(gate: dict[str, Any]) -> str:
    parts = []
    if gate.get("max") is not None:
        parts.append(f"<= {gate['max']:g}")
    if gate.get("min") is not None:
        parts.append(f">= {gate['min']:g}")
    return ", ".join(parts) or "-"


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_rollout_line(document: dict[str, Any]) -> str:
    """Return one line: state, stage, percentage and bake left of a rollout document."""
    state = document["state"]
    style = STATE_STYLES.get(state, "white")
    if state == "none":
        return f"rollout: [{style}]none[/] (start one with `rampgate rollout start`)"
    line = f"rollout: [{style}]{state}[/], stage {document['stage']} ({document['percentage']} %)"
    if state in ("running", "paused"):
        line += f", bake left {format_duration(document['bake_left_seconds'] or 0)}"
    failed = document.get("failed_gate")
    if failed:
        line += f", failed gate {failed['metric']} = {format_value(failed.get('value'))}"
        if failed.get("max") is not None:
            line += f" (max {failed['max']:g})"
    return line


def format_gates_table(gates: list[dict[str, Any]]) -> Table:
    table = Table("gate", "value", "threshold", "status", title="gates of the current stage", title_justify="left")
    for gate in gates:
        style = STATUS_STYLES.get(gate["status"], "white")
        table.add_row(gate["metric"], format_value(gate["value"]), format_threshold(gate), f"[{style}]{gate['status']}[/]")
    return table


def format_checklist_table(steps: list[dict[str, Any]]) -> Table:
    table = Table("", "step", "at (UTC)", title="runbook checklist", title_justify="left")
    for step in steps:
        done = step["at"] is not None
        table.add_row("[green]x[/]" if done else " ", step["step"], step["at"] or "-")
    return table


def format_transitions_table(transitions: list[dict[str, Any]]) -> Table:
    table = Table("at (UTC)", "event", "percentage", "reason", title="transitions", title_justify="left")
    for transition in transitions:
        table.add_row(transition["at"], transition["event"], f"{transition['percentage']} %", transition["reason"] or "")
    return table


def print_status_board(document: dict[str, Any]) -> None:
    flag = document["flag"]
    state = "[green]enabled[/]" if flag["enabled"] else "[red]disabled[/]"
    stdout.print(f"[bold]{flag['name']}[/]: {state}, {flag['percentage']} %")
    for action, percentage in sorted(flag["action_percentages"].items()):
        stdout.print(f"  {action}: {percentage} %")
    rollout = document["rollout"]
    stdout.print(format_rollout_line(rollout))
    if rollout["gates"]:
        stdout.print(format_gates_table(rollout["gates"]))
    stdout.print(format_checklist_table(document["checklist"]))
    if rollout["transitions"]:
        stdout.print(format_transitions_table(rollout["transitions"]))


def _print_rollout(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(document)
        return
    stdout.print(f"[bold]{document['flag']}[/]: " + format_rollout_line(document).removeprefix("rollout: "))
    if document["transitions"]:
        last = document["transitions"][-1]
        reason = f" ({last['reason']})" if last["reason"] else ""
        stdout.print(f"  last: {last['event']} at {last['at']}{reason}")


def _operations() -> RolloutOperations:
    settings = load_settings()
    webhook = WebhookSender(settings.webhook_url) if settings.webhook_url else None
    return RolloutOperations(open_catalog(settings), webhook=webhook)


def _finish(operations: RolloutOperations, flag: str, as_json: bool) -> None:
    document = rollout_of_flag(operations.catalog, flag)
    if operations.webhook is not None:
        operations.webhook.close()
    _print_rollout(document, as_json)


# -- commands -----------------------------------------------------------------


@rollout_app.command("start")
def rollout_start(
    flag: str = typer.Argument(..., help="Flag to roll out, for example rate_limit_enforcement."),
    plan_file: Optional[str] = typer.Option(
        None, "--plan", help="Plan file (.toml, .yaml, .yml or .json); the default plan when omitted."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a rollout: the flag is enabled at the first stage's percentage."""
    plan = default_plan() if plan_file is None else load_plan(plan_file, "--plan")
    operations = _operations()
    current = operations.catalog.get_flag(flag)
    if current.action_percentages:
        stderr.print(
            f"warning: {flag} has per-action percentages {current.action_percentages}, which override the "
            "rollout's percentage for those actions; clear them with `rampgate flag rollback` first if unintended"
        )
    operations.start(flag, plan, changed_by=operator_name(), via="cli")
    _finish(operations, flag, as_json)
    if not as_json:
        stderr.print("the controller promotes it: run `rampgate rollout run` (or `rampgate serve --controller`)")


@rollout_app.command("status")
def rollout_status(flag: str = FLAG_ARGUMENT, as_json: bool = JSON_OPTION) -> None:
    """Show the flag's newest rollout: state, stage, bake left, gates and transitions."""
    document = rollout_of_flag(open_catalog(), flag)
    if as_json:
        print_json(document)
        return
    _print_rollout(document, False)
    if document["gates"]:
        stdout.print(format_gates_table(document["gates"]))


@rollout_app.command("advance")
def rollout_advance(
    flag: str = FLAG_ARGUMENT,
    force: bool = typer.Option(
        False, "--force", help="Promote even if the stage has bake time left or has not passed its gates."
    ),
    reason: Optional[str] = REASON_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve the next stage (plans with approval = "manual"), or force it with --force."""
    operations = _operations()
    operations.advance(flag, force=force, reason=reason, changed_by=operator_name(), via="cli")
    _finish(operations, flag, as_json)


@rollout_app.command("pause")
def rollout_pause(flag: str = FLAG_ARGUMENT, reason: Optional[str] = REASON_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Pause the rollout: the flag keeps its percentage, bake time and judging stop."""
    operations = _operations()
    operations.pause(flag, reason=reason, changed_by=operator_name(), via="cli")
    _finish(operations, flag, as_json)


@rollout_app.command("resume")
def rollout_resume(flag: str = FLAG_ARGUMENT, reason: Optional[str] = REASON_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Resume a paused rollout; the bake time is kept and gate evidence starts afresh."""
    operations = _operations()
    operations.resume(flag, reason=reason, changed_by=operator_name(), via="cli")
    _finish(operations, flag, as_json)


@rollout_app.command("abort")
def rollout_abort(flag: str = FLAG_ARGUMENT, reason: Optional[str] = REASON_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Emergency rollback: end the rollout and disable the flag at 0 %; servers allow again within a second."""
    operations = _operations()
    operations.abort(flag, reason=reason, changed_by=operator_name(), via="cli")
    _finish(operations, flag, as_json)


@rollout_app.command("run")
def rollout_run(
    flag: Optional[str] = typer.Argument(None, help="Flag to drive; every flag with a running or paused rollout when omitted."),
    lease_seconds: float = typer.Option(
        DEFAULT_LEASE_SECONDS, "--lease-seconds", help="Seconds a controller's lease lasts without renewal; a standby takes over after it expires."
    ),
    tick_seconds: float = typer.Option(
        DEFAULT_TICK_SECONDS, "--tick-seconds", help="Maximum wait in seconds between two looks at the flags, at most 1."
    ),
) -> None:
    """Run the rollout controller until SIGINT or SIGTERM. It waits on standby while another controller has the lease."""
    if "RAMPGATE_LOG_LEVEL" not in os.environ and not any(arg.startswith("--log-level") for arg in sys.argv):
        # Transitions are logged at INFO, which a controller's operator wants to see.
        logging.getLogger("rampgate").setLevel(logging.INFO)

    settings = load_settings()
    stop_event = threading.Event()

    def stop(signal_number: int, _frame: FrameType | None) -> None:
        stderr.print(f"stopping the controller ({signal.Signals(signal_number).name})")
        stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stderr.print(f"rollout controller running for {flag or 'every rollout'}; stop it with Ctrl-C")
    run_controller(settings, flag, stop_event, lease_seconds=lease_seconds, tick_seconds=tick_seconds)


@app.command("status")
def status_command(
    flag: str = typer.Option(ENFORCEMENT_FLAG, "--flag", help="Flag to show."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the flag, its rollout stage and bake time, the gates and the runbook checklist."""
    document = build_status(open_catalog(), flag, time.time())
    if as_json:
        print_json(document)
    else:
        print_status_board(document)
