"""The report of a replay: per-stage rows, the outcome, recommendations, top blocked actors.

``report_to_document`` builds the ``--json`` object (its keys are part of the
command-line contract: lines, decisions, bot_decisions, malformed,
malformed_examples, stages, outcome, recommendations, lines_per_second).
The ``format_*`` functions build Rich renderables and print nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rampgate.core.durations import format_duration
from rampgate.simulate.readers import MalformedLine

# Outcome states.
COMPLETED = "completed"  # the last stage passed its gates
ROLLED_BACK = "rolled_back"  # a gate failed and the plan rolled the flag back to 0 %
TRACE_ENDED = "trace_ended"  # the log ran out before the rollout finished (or while it was paused)
OUTCOME_STATES: tuple[str, ...] = (COMPLETED, ROLLED_BACK, TRACE_ENDED)

# Verdicts of a stage row under the rollout controller.
PROMOTED = "promoted"  # gates passed after the bake time; the next stage began
PAUSED = "paused"  # a gate failed under on_failure = "pause": the flag kept its percentage
# Verdicts of the single row of a fixed-percentage replay (--percentage), judged at the end.
PASSED = "passed"
FAILED = "failed"
PENDING = "pending"  # fewer decisions than the plan's min_decisions, or a Wilson bound not yet decisive

RATE_DIGITS = 6  # rates in the JSON report; the table shows 4 digits


@dataclass(slots=True)
class StageRow:
    """The totals of the enforced cohort during one stage, and the stage's verdict."""

    stage: int
    percentage: int
    started_at: float
    actors_enforced: int = 0
    decisions: int = 0
    blocked: int = 0
    legitimate_actors: int = 0
    legitimate_blocked_actors: int = 0
    complaints: int = 0
    verdict: str = TRACE_ENDED
    ended_at: float | None = None
    extended: bool = False

    @property
    def block_rate(self) -> float:
        return self.blocked / self.decisions if self.decisions else 0.0

    @property
    def false_positive_rate(self) -> float:
        return self.legitimate_blocked_actors / self.legitimate_actors if self.legitimate_actors else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "percentage": self.percentage,
            "actors_enforced": self.actors_enforced,
            "decisions": self.decisions,
            "blocked": self.blocked,
            "block_rate": round(self.block_rate, RATE_DIGITS),
            "false_positive_rate": round(self.false_positive_rate, RATE_DIGITS),
            "complaints": self.complaints,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of the rollout: state, stage (from 1, or 0 for a trace without requests) and the failed gate."""

    state: str
    stage: int
    percentage: int
    failed_gate: dict[str, Any] | None = None
    at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        failed = None
        if self.failed_gate is not None:
            failed = {
                key: round(value, RATE_DIGITS) if isinstance(value, float) else value
                for key, value in self.failed_gate.items()
            }
        return {"state": self.state, "stage": self.stage, "percentage": self.percentage, "failed_gate": failed}


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The smallest limit per window for one tier and action that passes the failed gate on this trace."""

    tier: str
    action: str
    limit: int
    window_seconds: int
    current_limit: int
    policy: str
    algorithm: str = "token_bucket"
    burst: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "action": self.action, "limit": self.limit, "window_seconds": self.window_seconds}

    @property
    def command(self) -> str:
        """The ``rampgate limits set`` command that applies it, keeping the policy's algorithm and burst."""
        command = (
            f"rampgate limits set --tier {self.tier} --action {self.action} "
            f"--limit {self.limit} --window {self.window_seconds}"
        )
        if self.algorithm != "token_bucket":
            command += f" --algorithm {self.algorithm}"
        if self.burst is not None:
            command += f" --burst {self.burst}"
        return command


@dataclass(frozen=True, slots=True)
class BlockedActor:
    """One actor the limits hit: would-be blocks in every mode, blocks while enforced, its requests."""

    actor_type: str
    actor_id: str
    tier: str
    requests: int
    would_block: int
    blocked: int
    actions: tuple[str, ...]
    is_bot: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "actor": f"{self.actor_type}:{self.actor_id}",
            "tier": self.tier,
            "requests": self.requests,
            "would_block": self.would_block,
            "blocked": self.blocked,
            "actions": list(self.actions),
            "bot": self.is_bot,
        }


@dataclass(slots=True)
class SimulationReport:
    """Everything a replay found. ``lines_per_second`` is the only wall-clock figure in the JSON object."""

    source: str
    format: str
    lines: int
    decisions: int
    bot_decisions: int
    malformed: int
    malformed_examples: list[MalformedLine]
    stages: list[StageRow]
    outcome: Outcome
    recommendations: list[Recommendation]
    lines_per_second: float
    elapsed_seconds: float
    trace_start: float | None = None
    trace_end: float | None = None
    fixed_percentage: int | None = None
    top_blocked: list[BlockedActor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def report_to_document(report: SimulationReport, include_top_blocked: bool = False) -> dict[str, Any]:
    """Return the ``--json`` object; ``include_top_blocked`` adds ``top_blocked_actors`` (the demo's extra key)."""
    document: dict[str, Any] = {
        "lines": report.lines,
        "decisions": report.decisions,
        "bot_decisions": report.bot_decisions,
        "malformed": report.malformed,
        "malformed_examples": [example.to_dict() for example in report.malformed_examples],
        "stages": [row.to_dict() for row in report.stages],
        "outcome": report.outcome.to_dict(),
        "recommendations": [item.to_dict() for item in report.recommendations],
        "lines_per_second": round(report.lines_per_second, 1),
    }
    if include_top_blocked:
        document["top_blocked_actors"] = [actor.to_dict() for actor in report.top_blocked]
    return document


# -- Rich renderables -------------------------------------------------------------


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def format_summary(report: SimulationReport) -> Text:
    """Build the summary paragraph: the trace, its span, lines, malformed lines, bots and speed."""
    span = "-"
    if report.trace_start is not None and report.trace_end is not None:
        span = f"{_iso(report.trace_start)} to {_iso(report.trace_end)} ({format_duration(report.trace_end - report.trace_start)})"
    text = Text()
    text.append(f"{report.source}", style="bold")
    text.append(f" ({report.format}): {span}\n")
    text.append(
        f"{report.lines} lines, {report.decisions} decisions, {report.malformed} malformed, "
        f"{report.bot_decisions} bot decisions; replayed at {report.lines_per_second:,.0f} lines/s"
    )
    for example in report.malformed_examples:
        text.append(f"\n  malformed line {example.line}: {example.text}", style="dim")
    return text


def format_stages(report: SimulationReport) -> Table:
    """Build the stage table, one row per stage the rollout entered."""
    title = "Stages" if report.fixed_percentage is None else f"Fixed percentage {report.fixed_percentage} %"
    table = Table(title=title, title_justify="left")
    for header in ("stage", "percentage", "actors\nenforced", "decisions", "blocked", "block\nrate", "false-positive\nrate", "complaints"):
        table.add_column(header, justify="right")
    table.add_column("verdict")
    for row in report.stages:
        verdict = row.verdict + (" (extended)" if row.extended else "")
        style = {"promoted": "green", "completed": "green", "passed": "green", "rolled_back": "red", "failed": "red", "paused": "yellow"}.get(row.verdict, "")
        table.add_row(
            str(row.stage),
            f"{row.percentage} %",
            str(row.actors_enforced),
            str(row.decisions),
            str(row.blocked),
            f"{row.block_rate:.4f}",
            f"{row.false_positive_rate:.4f}",
            str(row.complaints),
            Text(verdict, style=style),
        )
    return table


def format_outcome(report: SimulationReport) -> Text:
    """Build the outcome sentence: completed, rolled back at stage k because of gate g, or trace ended at stage k."""
    outcome = report.outcome
    text = Text("Outcome: ", style="bold")
    at = f" at {_iso(outcome.at)}" if outcome.at is not None else ""
    if outcome.state == COMPLETED:
        text.append(f"completed at stage {outcome.stage} ({outcome.percentage} %){at}", style="green")
    elif outcome.state == ROLLED_BACK:
        text.append(f"rolled_back at stage {outcome.stage} ({outcome.percentage} %){at}", style="red")
    else:
        text.append(f"trace_ended at stage {outcome.stage} ({outcome.percentage} %)", style="yellow")
    gate = outcome.failed_gate
    if gate is not None:
        value = gate.get("value")
        value_text = f"{value:.4f}" if isinstance(value, float) else str(value)
        bound = f" > max {gate['max']:g}" if gate.get("max") is not None else ""
        if gate.get("min") is not None:
            bound = f" < min {gate['min']:g}"
        text.append(f" because gate {gate['metric']} = {value_text}{bound}")
    return text


def format_recommendations(report: SimulationReport) -> RenderableType:
    """Build the table of recommended limits, or a sentence that explains why there are none."""
    if report.outcome.failed_gate is None:
        return Text("No gate failed, so no limit needs to change.")
    if not report.recommendations:
        metric = report.outcome.failed_gate.get("metric")
        return Text(
            f"No limit change passes gate {metric} on this trace: the blocks come from suspensions, "
            "actor overrides or a gate that limits cannot move."
        )
    table = Table("tier", "action", "current", "recommended", "command", title="Recommended limits", title_justify="left")
    for item in report.recommendations:
        table.add_row(
            item.tier,
            item.action,
            f"{item.current_limit}/{item.window_seconds}s",
            f"{item.limit}/{item.window_seconds}s",
            item.command,
        )
    return table


def format_top_blocked(report: SimulationReport, limit: int = 10) -> RenderableType:
    """Build the table of the actors the limits hit most, by would-be blocks over the whole trace in every mode."""
    if not report.top_blocked:
        return Text("No request would have been blocked.")
    table = Table(title="Top blocked actors (shadow and enforced)", title_justify="left")
    table.add_column("actor")
    table.add_column("tier")
    for header in ("requests", "would\nblock", "blocked\nenforced"):
        table.add_column(header, justify="right")
    table.add_column("actions")
    for actor in report.top_blocked[:limit]:
        name = f"{actor.actor_type}:{actor.actor_id}" + (" (bot)" if actor.is_bot else "")
        table.add_row(
            name, actor.tier, str(actor.requests), str(actor.would_block), str(actor.blocked), ", ".join(actor.actions)
        )
    return table


def format_report(report: SimulationReport, top: int = 10) -> Group:
    """Build every section of the human-readable report, in reading order."""
    parts: list[RenderableType] = [format_summary(report), Text(""), format_stages(report), format_outcome(report)]
    parts.append(format_recommendations(report))
    if top > 0:
        parts.append(format_top_blocked(report, top))
    for note in report.notes:
        parts.append(Text(f"NOTE: {note}", style="dim"))
    return Group(*parts)
