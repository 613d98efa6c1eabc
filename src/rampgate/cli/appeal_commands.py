"""``rampgate appeal file|list|uphold|reject``: appeals against blocks, from the operator's side."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.table import Table

from rampgate.catalog.appeals import STATUSES, AppealRepository
from rampgate.cli.app import app
from rampgate.cli.catalog_commands import JSON_OPTION
from rampgate.cli.output import open_catalog, operator_name, print_json, stdout
from rampgate.core.names import check_action, parse_actor
from rampgate.errors import InvalidInput

appeal_app = typer.Typer(help="File appeals against blocks and give verdicts on them.", no_args_is_help=True)
app.add_typer(appeal_app, name="appeal")


def _appeals() -> AppealRepository:
    return AppealRepository(open_catalog().engine)


def _print_appeal(appeal: dict[str, Any]) -> None:
    stdout.print(
        f"appeal {appeal['appeal_id']}: {appeal['actor_type']}:{appeal['actor_id']} on {appeal['action']}, "
        f"{appeal['status']}",
        markup=False,
        highlight=False,
    )
    if appeal["resolved_by"]:
        note = f": {appeal['resolution_note']}" if appeal["resolution_note"] else ""
        stdout.print(f"  {appeal['status']} by {appeal['resolved_by']} at {appeal['resolved_at']}{note}", markup=False)


@appeal_app.command("file")
def appeal_file(
    actor: str = typer.Option(..., "--actor", help="The blocked actor, TYPE:ID, for example user:u-42."),
    action: str = typer.Option(..., "--action", help="The action that was blocked, for example media_upload."),
    text: str = typer.Option(..., "--text", help="The appeal text from the end user, 1 to 2000 characters."),
    request_id: Optional[str] = typer.Option(None, "--request-id", help="The request id of the blocked request."),
    as_json: bool = JSON_OPTION,
) -> None:
    """File an appeal on behalf of an end user (for example from a support ticket).

    Unlike POST /v1/appeals, no recent block is required. The appeal counts
    as a complaint for the rollout gates.
    """
    actor_type, actor_id = parse_actor(actor, "--actor")
    check_action(action, "--action")
    appeal = _appeals().file(actor_type, actor_id, action, text, request_id, require_recent_block=False)
    if as_json:
        print_json(appeal)
    else:
        _print_appeal(appeal)


@appeal_app.command("list")
def appeal_list(
    status: Optional[str] = typer.Option(None, "--status", help="Only appeals in this status: open, upheld or rejected."),
    limit: int = typer.Option(100, "--limit", help="At most this many, newest first (1 to 10000)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List appeals, newest first."""
    if status is not None and status not in STATUSES:
        raise InvalidInput("--status", status, "one of " + ", ".join(STATUSES))
    if not 1 <= limit <= 10_000:
        raise InvalidInput("--limit", limit, "an integer from 1 to 10000")
    appeals = _appeals().list(status=status, limit=limit)
    if as_json:
        print_json(appeals)
        return

    table = Table("id", "actor", "action", "status", "filed", "text")
    for appeal in appeals:
        table.add_row(
            str(appeal["appeal_id"]),
            f"{appeal['actor_type']}:{appeal['actor_id']}",
            appeal["action"],
            appeal["status"],
            appeal["created_at"],
            appeal["text"] if len(appeal["text"]) <= 60 else appeal["text"][:57] + "...",
        )
    stdout.print(table)


@appeal_app.command("uphold")
def appeal_uphold(
    appeal_id: int = typer.Argument(..., help="The appeal's id, from `rampgate appeal list`."),
    note: Optional[str] = typer.Option(None, "--note", help="Why, for the history."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Uphold an open appeal: the block was wrong, and the actor counts as known legitimate."""
    appeal = _appeals().uphold(appeal_id, resolved_by=operator_name(), note=note, via="cli")
    if as_json:
        print_json(appeal)
    else:
        _print_appeal(appeal)


@appeal_app.command("reject")
def appeal_reject(
    appeal_id: int = typer.Argument(..., help="The appeal's id, from `rampgate appeal list`."),
    note: Optional[str] = typer.Option(None, "--note", help="Why, for the history."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Reject an open appeal: the block was right."""
    appeal = _appeals().reject(appeal_id, resolved_by=operator_name(), note=note, via="cli")
    if as_json:
        print_json(appeal)
    else:
        _print_appeal(appeal)
