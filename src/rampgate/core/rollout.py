"""The rollout state machine: stages, bake time, promotion, rollback and pause, with no I/O.

The controller in :mod:`rampgate.rollout` persists a :class:`Rollout`, feeds
it the time and the stage's metrics, applies the flag changes that the
returned transitions call for, and stores the transitions. The simulator runs
the same machine on a virtual clock.

Bake time is counted only while the rollout is running and a controller is
watching it: :meth:`Rollout.checkpoint` folds the elapsed time into
``baked_seconds``, and :meth:`Rollout.reattach` (a controller taking over
after a crash) restarts the stopwatch without counting the time nobody judged.

Gates are judged on the evidence gathered since :attr:`Rollout.evidence_since`:
the moment the stage was entered, or the last resume. A resume starts the
evidence afresh, so a gate that paused the rollout does not pause it again on
the same rows after the operator fixed the cause; the bake time is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rampgate.core.gates import FAIL, PASS, GateResult, StageMetrics, Verdict, judge_stage
from rampgate.core.plans import Plan

# Rollout states.
NONE = "none"  # no rollout was ever started for the flag
RUNNING = "running"  # a stage is baking or waiting for evidence or approval
PAUSED = "paused"  # an operator or a failed gate paused it; the flag keeps its percentage
COMPLETED = "completed"  # the last stage passed; the flag stays at its percentage
ROLLED_BACK = "rolled_back"  # a gate failed; the flag was disabled at 0 %
ABORTED = "aborted"  # an operator or another path disabled the flag
STATES: tuple[str, ...] = (NONE, RUNNING, PAUSED, COMPLETED, ROLLED_BACK, ABORTED)
FINAL_STATES = frozenset({COMPLETED, ROLLED_BACK, ABORTED})

EVENTS: tuple[str, ...] = (
    "started",
    "promoted",
    "extended",
    "paused",
    "resumed",
    "rolled_back",
    "aborted",
    "completed",
)


@dataclass(frozen=True, slots=True)
class Transition:
    """One recorded change of a rollout. ``at`` is in Unix seconds."""

    at: float
    event: str
    stage: int
    percentage: int
    reason: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FlagChange:
    """The flag state a transition calls for."""

    enabled: bool
    percentage: int


@dataclass
class Rollout:
    """A rollout of one flag through a plan. ``stage`` counts from 1.

    Times are Unix seconds. ``stage_entered_at`` is when the current stage
    began, ``evidence_since`` when its gate evidence began (the stage entry
    or the last resume), and ``stage_started_at`` when the bake stopwatch was
    last started (None while it is stopped). ``extended`` is set once the
    stage has been recorded as extended, so the extension is recorded once.
    """

    flag_name: str
    plan: Plan
    state: str = RUNNING
    stage: int = 1
    stage_entered_at: float = 0.0
    stage_started_at: float | None = None
    baked_seconds: float = 0.0
    extended: bool = False
    awaiting_approval: bool = False
    failed_gate: dict[str, Any] | None = None
    last_verdict: Verdict | None = None
    transitions: list[Transition] = field(default_factory=list)
    evidence_since: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.stage <= len(self.plan.stages):
            raise ValueError(f"stage {self.stage} is outside the plan's stages 1 to {len(self.plan.stages)}")
        if self.state not in STATES or self.state == NONE:
            raise ValueError(f"state {self.state!r} is not one of " + ", ".join(STATES[1:]))
        if self.evidence_since is None:
            self.evidence_since = self.stage_entered_at

    # -- derived values --------------------------------------------------

    @property
    def percentage(self) -> int:
        """The percentage of the current stage."""
        return self.plan.stages[self.stage - 1].percentage

    @property
    def is_last_stage(self) -> bool:
        return self.stage == len(self.plan.stages)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def baked(self, now: float) -> float:
        """Seconds of bake the current stage has had."""
        if self.state == RUNNING and self.stage_started_at is not None:
            return self.baked_seconds + max(0.0, now - self.stage_started_at)
        return self.baked_seconds

    def bake_left(self, now: float, *, watched: bool = True) -> float:
        """Seconds of bake the current stage still needs; 0 once the rollout has ended.

        With ``watched`` False (no controller holds the flag's lease) the
        clock is stopped: only the bake already checkpointed counts.
        """
        if self.is_final:
            return 0.0
        baked = self.baked(now) if watched else self.baked_seconds
        return max(0.0, self.plan.stages[self.stage - 1].bake_seconds - baked)

    # -- commands --------------------------------------------------------

    @classmethod
    def start(cls, flag_name: str, plan: Plan, now: float) -> tuple["Rollout", list[Transition], FlagChange]:
        """Begin at the first stage; the flag is enabled at its percentage."""
        rollout = cls(flag_name, plan, RUNNING, 1, now, now)
        started = rollout._record(now, "started")
        return rollout, [started], FlagChange(True, rollout.percentage)

    def checkpoint(self, now: float) -> None:
        """Fold the bake time elapsed so far into ``baked_seconds``."""
        if self.state == RUNNING and self.stage_started_at is not None:
            self.baked_seconds += max(0.0, now - self.stage_started_at)
            self.stage_started_at = now

    def reattach(self, now: float) -> None:
        """Resume the stopwatch after a controller restart, without counting the gap."""
        if self.state == RUNNING:
            self.stage_started_at = now

    def step(self, now: float, metrics: StageMetrics) -> tuple[list[Transition], FlagChange | None]:
        """Judge the current stage at ``now`` and move the rollout on when the plan calls for it."""
        if self.state != RUNNING:
            return [], None
        self.checkpoint(now)

        verdict = judge_stage(self.plan, metrics)
        self.last_verdict = verdict
        if verdict.status == FAIL:
            assert verdict.failed is not None
            return self._fail(now, verdict.failed)

        if self.bake_left(now) > 0:
            return [], None
        if verdict.status != PASS:
            if self.extended:
                return [], None
            self.extended = True
            pending = [r.metric for r in verdict.results if r.status != PASS]
            reason = (
                f"{metrics.decisions} of {self.plan.min_decisions} enforced decisions"
                if metrics.decisions < self.plan.min_decisions
                else "waiting for evidence on " + ", ".join(pending)
            )
            return [self._record(now, "extended", reason)], None

        if self.plan.approval == "manual" and not self.is_last_stage:
            self.awaiting_approval = True
            return [], None
        return self._promote(now, None)

    def advance(self, now: float, reason: str = "advanced by an operator") -> tuple[list[Transition], FlagChange | None]:
        """Promote to the next stage now, regardless of the bake time and the gates."""
        if self.state not in (RUNNING, PAUSED):
            return [], None
        if self.state == PAUSED:
            self.state = RUNNING
        self.checkpoint(now)
        return self._promote(now, reason)

    def pause(self, now: float, reason: str = "paused by an operator") -> list[Transition]:
        """Stop the bake stopwatch and judging; the flag keeps its percentage."""
        if self.state != RUNNING:
            return []
        self.checkpoint(now)
        self.stage_started_at = None
        self.state = PAUSED
        return [self._record(now, "paused", reason)]

    def resume(self, now: float, reason: str | None = None) -> list[Transition]:
        """Run again with the bake time kept; the evidence window starts at ``now``."""
        if self.state != PAUSED:
            return []
        self.state = RUNNING
        self.stage_started_at = now
        self.evidence_since = now
        self.extended = False
        self.awaiting_approval = False
        self.failed_gate = None
        self.last_verdict = None
        return [self._record(now, "resumed", reason)]

    def abort(self, now: float, reason: str = "aborted by an operator") -> tuple[list[Transition], FlagChange | None]:
        """End the rollout and disable the flag (the emergency rollback)."""
        if self.is_final:
            return [], None
        self.checkpoint(now)
        self.state = ABORTED
        self.stage_started_at = None
        return [self._record(now, "aborted", reason)], FlagChange(False, 0)

    def flag_disabled_elsewhere(self, now: float, reason: str = "flag disabled outside the rollout") -> list[Transition]:
        """Record that another path disabled the flag: the rollout is aborted, the flag stays off."""
        transitions, _ = self.abort(now, reason)
        return transitions

    # -- internals -------------------------------------------------------

    def _promote(self, now: float, reason: str | None) -> tuple[list[Transition], FlagChange | None]:
        self.awaiting_approval = False
        self.extended = False
        if self.is_last_stage:
            self.state = COMPLETED
            self.stage_started_at = None
            return [self._record(now, "completed", reason)], None

        self.stage += 1
        self.stage_entered_at = now
        self.evidence_since = now
        self.stage_started_at = now
        self.baked_seconds = 0.0
        self.last_verdict = None
        transitions = [self._record(now, "promoted", reason)]
        change = FlagChange(True, self.percentage)
        if self.is_last_stage and self.plan.stages[-1].bake_seconds <= 0:
            # A last stage without bake time has nothing to wait for.
            self.state = COMPLETED
            self.stage_started_at = None
            transitions.append(self._record(now, "completed", None))
        return transitions, change

    def _fail(self, now: float, failed: GateResult) -> tuple[list[Transition], FlagChange | None]:
        self.failed_gate = failed.failure()
        reason = failure_reason(failed)
        details = {"failed_gate": self.failed_gate}
        if self.plan.on_failure == "pause":
            self.stage_started_at = None
            self.state = PAUSED
            return [self._record(now, "paused", reason, details)], None
        self.state = ROLLED_BACK
        self.stage_started_at = None
        return [self._record(now, "rolled_back", reason, details)], FlagChange(False, 0)

    def _record(self, now: float, event: str, reason: str | None = None, details: dict[str, Any] | None = None) -> Transition:
        transition = Transition(now, event, self.stage, self.percentage, reason, details)
        self.transitions.append(transition)
        return transition


def failure_reason(failed: GateResult) -> str:
    """Return the transition reason of a failed gate, such as ``gate block_rate = 0.2 > max 0.05``."""
    value = failed.value
    reason = f"gate {failed.metric}" if value is None else f"gate {failed.metric} = {value:g}"
    if value is not None and failed.max is not None and value > failed.max:
        return reason + f" > max {failed.max:g}"
    if value is not None and failed.min is not None and value < failed.min:
        return reason + f" < min {failed.min:g}"
    return reason
