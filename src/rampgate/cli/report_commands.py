"""``rampgate report``: top-blocked actors, blocks by action and by hour, and recent blocks."""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import typer
from rich.table import Table

from rampgate.cli.app import app
from rampgate.cli.output import open_catalog, print_json, stdout
from rampgate.core.durations import parse_duration
from rampgate.errors import InvalidInput
from rampgate.rollout.reports import run_report

report_app = typer.Typer(help="Reports over the audit trail of enforced decisions.", no_args_is_help=True)
app.add_typer(report_app, name="report")

COLUMNS: dict[str, tuple[str, ...]] = {
    "top-blocked": ("actor_type", "actor_id", "action", "blocked", "allowed", "block_rate"),
    "by-action": ("action", "decisions", "blocked", "block_rate"),
    "by-hour": ("hour", "decisions", "blocked", "block_rate"),
    "recent": ("at", "actor_type", "actor_id", "action", "tier", "policy", "reason", "request_id"),
}
TITLES = {
    "top-blocked": "most blocked actors and actions",
    "by-action": "enforced decisions by action",
    "by-hour": "enforced decisions by hour (UTC)",
    "recent": "recent blocks",
}


# The max rows one report prints. SQLite and PostgreSQL reject a LIMIT above 2**63 - 1 with an error.
MAX_ROWS = 100_000


def since_moment(text: str, field: str = "--since") -> datetime:
    """Return the moment ``text`` (a duration such as ``1h``) before now, in UTC."""
    seconds = parse_duration(text, field)
    if seconds <= 0:
        raise InvalidInput(field, text, 'a duration longer than 0, such as "15m", "1h" or "7d"')
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def format_csv(name: str, rows: list[dict[str, Any]]) -> str:
    """Return the rows as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS[name], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS[name]})
    return buffer.getvalue()


def format_table(name: str, rows: list[dict[str, Any]], since_text: str) -> Table:
    table = Table(*COLUMNS[name], title=f"{TITLES[name]}, last {since_text}", title_justify="left")
    for row in rows:
        cells = []
        for key in COLUMNS[name]:
            value = row[key]
            if key == "block_rate":
                cells.append(f"{value:.2%}")
            else:
                cells.append("-" if value is None else str(value))
        table.add_row(*cells)
    return table


def _report(name: str, since: str, limit: int, as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise InvalidInput("--json/--csv", "both", "at most one of --json and --csv")
    if not 1 <= limit <= MAX_ROWS:
        raise InvalidInput("--limit", limit, f"an integer from 1 to {MAX_ROWS}")
    moment = since_moment(since)

    rows = run_report(open_catalog().engine, name, moment, limit)
    if as_json:
        print_json(rows)
    elif as_csv:
        sys.stdout.write(format_csv(name, rows))
    elif rows:
        stdout.print(format_table(name, rows, since))
    else:
        stdout.print(f"{TITLES[name]}: no enforced decisions in the last {since}")


SINCE_OPTION = typer.Option("1h", "--since", help="How far back to look: a duration such as 15m, 1h, 7d.")
LIMIT_OPTION = typer.Option(10, "--limit", help=f"Rows to show at most, 1 to {MAX_ROWS}.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document on stdout.")
CSV_OPTION = typer.Option(False, "--csv", help="Print CSV with a header line on stdout.")


@report_app.command("top-blocked")
def report_top_blocked(
    since: str = SINCE_OPTION, limit: int = LIMIT_OPTION, as_json: bool = JSON_OPTION, as_csv: bool = CSV_OPTION
) -> None:
    """Show the actors and actions blocked most often."""
    _report("top-blocked", since, limit, as_json, as_csv)


@report_app.command("by-action")
def report_by_action(
    since: str = SINCE_OPTION, limit: int = LIMIT_OPTION, as_json: bool = JSON_OPTION, as_csv: bool = CSV_OPTION
) -> None:
    """Show enforced decisions, blocks and block rate per action, most blocked first."""
    _report("by-action", since, limit, as_json, as_csv)


@report_app.command("by-hour")
def report_by_hour(
    since: str = SINCE_OPTION, limit: int = LIMIT_OPTION, as_json: bool = JSON_OPTION, as_csv: bool = CSV_OPTION
) -> None:
    """Show enforced decisions, blocks and block rate per UTC hour, for the --limit most recent hours."""
    _report("by-hour", since, limit, as_json, as_csv)


@report_app.command("recent")
def report_recent(
    since: str = SINCE_OPTION, limit: int = LIMIT_OPTION, as_json: bool = JSON_OPTION, as_csv: bool = CSV_OPTION
) -> None:
    """Show the newest blocked decisions, with tier, policy and reason."""
    _report("recent", since, limit, as_json, as_csv)
