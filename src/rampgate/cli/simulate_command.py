"""``rampgate simulate``: replay a recorded trace through the real engine and rollout controller."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Self

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from rampgate.cli.app import app
from rampgate.cli.catalog_commands import JSON_OPTION
from rampgate.cli.output import print_json, stderr, stdout
from rampgate.errors import InvalidInput
from rampgate.simulate.bots import BotSpec
from rampgate.simulate.config import build_replay_settings
from rampgate.simulate.readers import FORMATS, TraceReader
from rampgate.simulate.replay import ReplaySettings, replay_trace
from rampgate.simulate.report import SimulationReport, format_report, report_to_document

TOP_OPTION = typer.Option(10, "--top", help="Rows of the top blocked actors table (0 hides it).")


@app.command("simulate")
def simulate_command(
    trace: str = typer.Option(..., "--trace", help="The trace file (plain or gzip), or - for standard input."),
    fmt: str | None = typer.Option(None, "--format", help="clf, combined, csv or jsonl; detected from the first line when omitted."),
    plan: Path | None = typer.Option(None, "--plan", help="Rollout plan file (TOML, or YAML/JSON by extension); the default plan when omitted."),
    percentage: int | None = typer.Option(None, "--percentage", help="Replay at this fixed percentage (0-100) without the rollout controller."),
    actions: Path | None = typer.Option(None, "--actions", help="Action map TOML: rules of method, path regular expression and action; unmatched requests are api_call."),
    trust: Path | None = typer.Option(None, "--trust", help="Trust CSV: actor_type,actor_id,tier[,enforcement_level]; other actors are tier B."),
    policies: Path | None = typer.Option(None, "--policies", help="Policies TOML laid over the shipped defaults."),
    inject_bots: int | None = typer.Option(None, "--inject-bots", help="Add N bots, the known abusers of the replay."),
    bot_rate: float | None = typer.Option(None, "--bot-rate", help="Requests per second of each bot (default 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bots' ids and timing."),
    top: int = TOP_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Rehearse a rollout on a recorded trace: stage by stage, with the outcome and recommended limits.

    Every client of the log is a known-legitimate actor ip:<host>; injected
    bots are the known abusers. Exit status 0 for any outcome, a rollback
    included; 2 for an invalid option or file.
    """
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput("--format", fmt, "one of " + ", ".join(FORMATS))
    check_top(top)
    settings = build_replay_settings(
        plan=plan,
        percentage=percentage,
        actions=actions,
        trust=trust,
        policies=policies,
        bots=bot_spec(inject_bots, bot_rate, seed),
        top_blocked=max(top, 20),
    )
    report = run_replay(trace, fmt, settings)

    if as_json:
        print_json(report_to_document(report))
        return
    print_report(report, top)


def report_console() -> Console:
    """Return the stdout console, or one 120 columns wide when stdout is not a terminal, so tables do not truncate."""
    if stdout.is_terminal:
        return stdout
    return Console(file=sys.stdout, width=max(stdout.width, 120), soft_wrap=True, emoji=False)


def print_report(report: SimulationReport, top: int) -> None:
    """Print the human-readable report on stdout."""
    report_console().print(format_report(report, top))


def check_top(top: int) -> None:
    if not 0 <= top <= 1000:
        raise InvalidInput("--top", top, "an integer from 0 to 1000")


def bot_spec(count: int | None, rate: float | None, seed: int) -> BotSpec | None:
    """Check the bot options together; raise :class:`InvalidInput` naming the option at fault."""
    if count is None:
        if rate is not None:
            raise InvalidInput("--bot-rate", rate, "a rate given together with --inject-bots N")
        return None
    return BotSpec(count, 1.0 if rate is None else rate, seed)


def run_replay(source: str | Path, fmt: str | None, settings: ReplaySettings) -> SimulationReport:
    """Open the trace and replay it, with a progress bar on stderr when stderr is a terminal."""
    with TraceReader.open(source, fmt) as reader:
        if not sys.stderr.isatty():
            return replay_trace(reader, settings)
        with _progress_bar(reader) as update:
            return replay_trace(reader, settings, update)


class _progress_bar:
    """A Rich progress bar on stderr over the bytes of the trace file read so far."""

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader
        self.progress = Progress(
            TextColumn("replaying"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self.task = self.progress.add_task("replay", total=reader.total_bytes)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.progress.stop()

    def __call__(self, reader: TraceReader) -> None:
        self.progress.update(self.task, completed=reader.bytes_read())
