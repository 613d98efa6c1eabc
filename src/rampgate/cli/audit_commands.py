"""The ``rampgate audits`` commands: housekeeping of the audit trail."""

from __future__ import annotations

import typer

from rampgate.catalog.audit import prune_audits
from rampgate.cli.app import app
from rampgate.cli.output import open_catalog, print_json, stdout
from rampgate.core.durations import parse_duration
from rampgate.errors import InvalidInput

audits_app = typer.Typer(help="Maintain the audit trail.", no_args_is_help=True)
app.add_typer(audits_app, name="audits")


@audits_app.command("prune")
def audits_prune(
    older_than: str = typer.Option(
        ..., "--older-than", help="Delete rows older than this duration, for example 30d, 12h or 90m."
    ),
    batch_size: int = typer.Option(
        10_000, "--batch-size", help="Rows deleted per transaction, 1 or more; smaller batches hold locks shorter."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Delete old audit rows and per-minute decision counts in short batches."""
    seconds = parse_duration(older_than, "--older-than")
    if seconds <= 0:
        raise InvalidInput("--older-than", older_than, "a duration longer than 0, such as 30d")
    if batch_size < 1:
        raise InvalidInput("--batch-size", batch_size, "a whole number of rows, 1 or more")

    catalog = open_catalog()
    try:
        deleted = prune_audits(catalog.engine, seconds, batch_size)
    finally:
        catalog.engine.dispose()

    if as_json:
        print_json({"older_than_seconds": seconds, "deleted": deleted})
        return
    stdout.print(
        f"deleted {deleted['audits']} audit rows and {deleted['decision_stats']} decision-count rows "
        f"older than {older_than}"
    )
