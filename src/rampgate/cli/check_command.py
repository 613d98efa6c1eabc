"""``rampgate check``: decide requests from the command line, as a service caller would."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from rampgate.cli.app import app
from rampgate.cli.catalog_commands import JSON_OPTION
from rampgate.cli.output import cell, parse_int, print_json, stdout
from rampgate.core.messages import SUPPORTED_LANGUAGES
from rampgate.core.names import check_action, check_cost, parse_actor
from rampgate.errors import InvalidInput
from rampgate.gate import Gate


@app.command("check")
def check_command(
    actor: str = typer.Option(..., "--actor", help="The actor, TYPE:ID, for example user:u-42."),
    action: str = typer.Option(..., "--action", help="The action, for example media_upload."),
    cost: str = typer.Option("1", "--cost", help="Units of this request, 1 or more."),
    count: str | None = typer.Option(None, "--count", help="Send the same request N times in quick succession."),
    language: str = typer.Option("en", "--lang", help="Language of the end-user message: en or ru."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Decide a request (or N of them) and print the decisions.

    Counters live where RAMPGATE_COUNTER_STORE says; the default memory store
    starts empty in every command, so use --count to see a limit bite.
    Under --json, one decision prints as an object and --count N as a list.
    """
    actor_type, actor_id = parse_actor(actor, "--actor")
    check_action(action, "--action")
    units = check_cost(parse_int(cost, "--cost", "an integer from 1 to 1000000"), "--cost")
    repeat = None if count is None else parse_int(count, "--count", "an integer from 1 to 100000")
    if repeat is not None and not 1 <= repeat <= 100_000:
        raise InvalidInput("--count", count, "an integer from 1 to 100000")
    if language not in SUPPORTED_LANGUAGES:
        raise InvalidInput("--lang", language, "one of " + ", ".join(SUPPORTED_LANGUAGES))

    with Gate(watch=False) as gate:
        decisions = [gate.decide(actor_type, actor_id, action, units) for _ in range(repeat or 1)]

    if as_json:
        documents = [d.to_dict(language) for d in decisions]
        print_json(documents if repeat is not None else documents[0])
        return

    table = Table("#", "allowed", "mode", "reason", "policy", "remaining", "retry after s", "message")
    for number, decision in enumerate(decisions, 1):
        table.add_row(
            cell(number),
            Text("yes", style="green") if decision.allowed else Text("no", style="red"),
            cell(decision.mode),
            cell(decision.reason),
            cell(decision.policy),
            cell(decision.remaining),
            cell(None if decision.retry_after is None else f"{decision.retry_after:g}"),
            cell(decision.message(language) or ""),
        )
    stdout.print(table)
