"""The replay loop: a trace through the real decision engine and rollout state machine on a virtual clock.

One :class:`~rampgate.engine.DecisionEngine` and one
:class:`~rampgate.stores.memory.MemoryCounterStore` decide every request at
the request's own timestamp (or at the latest time seen, for a request logged
out of order). The flag's percentage is driven by
:class:`~rampgate.core.rollout.Rollout`, which judges the stage's metrics
every ``check_interval`` of virtual time, exactly as the controller does in
production. With a fixed percentage there is no controller: the plan's gates
are judged once, over the whole trace, at its end.

Simulation differs from production in three stated ways:

- The flag under rehearsal governs every action of the trace, so an action
  the action map invents is rolled out with the others instead of being
  enforced from the start.
- Complaints are 0: a log records no appeals, so the ``complaints`` gate
  never fails here. Errors are 0 as well, because the memory store does not fail.
- A plan with ``approval = "manual"`` is approved as soon as a stage passes,
  and an ``sql`` gate stays pending, because there is no database to query.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from math import ceil, floor
from operator import itemgetter

from rampgate.core.decision import ENFORCE
from rampgate.core.flags import ENFORCEMENT_FLAG, Flag
from rampgate.core.gates import FAIL, PASS, StageMetrics, judge_stage
from rampgate.core.plans import Plan, default_plan
from rampgate.core.policies import Policy
from rampgate.core.rollout import COMPLETED, PAUSED, ROLLED_BACK, RUNNING, Rollout, Transition
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.core.trust import TrustProfile
from rampgate.engine import CounterRequest, DecisionEngine
from rampgate.simulate import report as report_module
from rampgate.simulate.actions import ActionMap
from rampgate.simulate.bots import BOT_METHOD, BOT_PATH, BotSchedule, BotSpec
from rampgate.simulate.clock import VirtualClock
from rampgate.simulate.readers import TraceReader, TraceRecord
from rampgate.simulate.recommend import CounterRecord, StageEvidence, recommend_limits
from rampgate.simulate.report import (
    BlockedActor,
    Outcome,
    Recommendation,
    SimulationReport,
    StageRow,
)
from rampgate.stores.memory import MemoryCounterStore

logger = logging.getLogger(__name__)

PROGRESS_EVERY_LINES = 16_384
TOP_BLOCKED_ACTORS = 20
# Counter requests kept for the recommendation search. Past this many in one
# stage the search is skipped, so a huge trace cannot exhaust memory.
MAX_RECORDED_REQUESTS = 5_000_000

ProgressCallback = Callable[[TraceReader], None]

# The request field of an injected bot's record; compared by identity, so no
# logged request line can be mistaken for a bot.
BOT_REQUEST = "<bot>"


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """The plan, catalog and inputs that a trace is replayed against.

    ``policies`` is the complete catalog (shipped defaults already merged
    with any overrides). ``percentage`` set means a fixed percentage without
    the controller; the plan's gates are still judged at the end.
    """

    plan: Plan = field(default_factory=default_plan)
    percentage: int | None = None
    action_map: ActionMap = field(default_factory=ActionMap)
    policies: tuple[Policy, ...] = ()
    trust: tuple[TrustProfile, ...] = ()
    bots: BotSpec | None = None
    top_blocked: int = TOP_BLOCKED_ACTORS


class _Stage:
    """The running totals of the current stage's enforced cohort (the rollout gates' inputs)."""

    __slots__ = (
        "abusers", "actors", "blocked", "blocked_actors", "decisions", "fixed_blocked",
        "fixed_blocked_actors", "records_from", "row",
    )

    def __init__(self, row: StageRow, records_from: int) -> None:
        self.row = row
        self.decisions = 0
        self.blocked = 0
        self.actors: set[str] = set()
        self.blocked_actors: set[str] = set()
        self.abusers: set[str] = set()
        self.fixed_blocked = 0
        self.fixed_blocked_actors: set[str] = set()
        self.records_from = records_from

    def metrics(self) -> StageMetrics:
        blocked_abusers = len(self.blocked_actors & self.abusers) if self.abusers else 0
        return StageMetrics(
            decisions=self.decisions,
            blocked=self.blocked,
            actors=len(self.actors),
            blocked_actors=len(self.blocked_actors),
            legitimate_actors=len(self.actors) - len(self.abusers),
            legitimate_blocked_actors=len(self.blocked_actors) - blocked_abusers,
            complaints=0,
            errors=0,
        )

    def close(self, verdict: str, at: float) -> None:
        """Copy the totals into the row, once, as the stage ends."""
        metrics = self.metrics()
        row = self.row
        row.actors_enforced = metrics.actors
        row.decisions = metrics.decisions
        row.blocked = metrics.blocked
        row.legitimate_actors = metrics.legitimate_actors
        row.legitimate_blocked_actors = metrics.legitimate_blocked_actors
        row.complaints = metrics.complaints
        row.verdict = verdict
        row.ended_at = at


class Replay:
    """One replay of one trace. Call :meth:`run` once."""

    def __init__(self, reader: TraceReader, settings: ReplaySettings, progress: ProgressCallback | None = None) -> None:
        self.reader = reader
        self.settings = settings
        self.progress = progress
        self.plan = settings.plan
        self.clock = VirtualClock()
        self.store = MemoryCounterStore(clock=self.clock)
        self.engine = DecisionEngine()
        self.policies_by_name = {policy.name: policy for policy in settings.policies}
        # The maximum time a counter remembers a request. The recommendation
        # search starts this long before a stage, so counters enter it warm.
        self.warmup_seconds = max(
            (policy.capacity * policy.window_seconds / policy.limit_value for policy in settings.policies),
            default=0.0,
        )

        self.rollout: Rollout | None = None
        self.snapshot = self._snapshot(False, 0)
        self.rows: list[StageRow] = []
        self.stage: _Stage | None = None  # None once the rollout is final and metrics stop
        self.records: list[CounterRecord] = []
        self.recording = True
        self.records_overflowed = False
        self.failure: tuple[dict[str, object], StageEvidence] | None = None
        self.outcome_at: float | None = None
        self.trace_start: float | None = None
        self.check_start = 0.0
        self.check_index = 0
        self.next_check = float("inf")

        self.decisions = 0
        self.bot_decisions = 0
        self.bot_ids: frozenset[str] = frozenset()
        self.requests_by_actor: dict[str, int] = {}
        self.would_block_by_actor: dict[str, int] = {}
        self.blocked_by_actor: dict[str, int] = {}
        self.blocked_actions: dict[str, dict[str, int]] = {}
        self.tier_by_actor: dict[str, str] = {}

    # -- set-up ------------------------------------------------------------

    def _snapshot(self, enabled: bool, percentage: int) -> CatalogSnapshot:
        # No ``config.actions``: the rehearsed flag governs every action of the trace.
        flag = Flag(ENFORCEMENT_FLAG, enabled, percentage, {})
        return CatalogSnapshot([flag], self.settings.policies, self.settings.trust)

    def _begin(self, now: float) -> None:
        """Start the rollout (or the fixed percentage) at the trace's first request."""
        self.trace_start = now
        self.clock.now = now
        percentage = self.settings.percentage
        if percentage is not None:
            self.snapshot = self._snapshot(percentage > 0, percentage)
            self._open_stage(1, percentage, now)
            return

        rollout, _, change = Rollout.start(ENFORCEMENT_FLAG, self.plan, now)
        self.rollout = rollout
        self.snapshot = self._snapshot(change.enabled, change.percentage)
        self._open_stage(rollout.stage, rollout.percentage, now)
        self.check_start = now
        self.check_index = 1
        self.next_check = now + self.plan.check_interval_seconds
        logger.info("simulate.rollout_started", extra={"percentage": change.percentage, "stages": len(self.plan.stages)})

    def _open_stage(self, number: int, percentage: int, now: float) -> None:
        row = StageRow(number, percentage, now)
        self.rows.append(row)
        # Keep the counter requests of the warm-up before the new stage, drop older ones.
        keep_from = bisect_left(self.records, now - self.warmup_seconds, key=itemgetter(0))
        if keep_from:
            del self.records[:keep_from]
        self.stage = _Stage(row, len(self.records))

    # -- the controller ------------------------------------------------------

    def _run_checks(self, now: float) -> None:
        """Step the rollout at every check time up to ``now``; the requests at ``now`` come after."""
        rollout = self.rollout
        assert rollout is not None
        while self.next_check <= now:
            at = self.next_check
            if rollout.state != RUNNING:
                self.next_check = float("inf")
                return
            stage = self.stage
            assert stage is not None
            transitions, change = rollout.step(at, stage.metrics())
            if rollout.awaiting_approval:
                # No operator approves in a rehearsal, so a passing stage is promoted at once.
                approved, approved_change = rollout.advance(at, "approved by the simulator")
                transitions = transitions + approved
                change = approved_change or change
            self._apply(transitions, change, at)

            if transitions or change is not None:
                self.check_index += 1
            else:
                self.check_index = self._next_useful_check(rollout, at, now)
            self.next_check = self.check_start + self.check_index * self.plan.check_interval_seconds

    def _next_useful_check(self, rollout: Rollout, at: float, now: float) -> int:
        """Index of the next check that can change anything, after a check at ``at`` that changed nothing.

        The stage's metrics change only when a request arrives, and the next
        one arrives at ``now``. Until then every check repeats the last one,
        unless the bake time runs out in between, so those checks are skipped:
        a trace with a gap of days is not stepped once a minute through it.
        """
        interval = self.plan.check_interval_seconds
        after_now = floor((now - self.check_start) / interval) + 1
        bake_left = rollout.bake_left(at)
        if bake_left > 0:
            bake_over = ceil((at + bake_left - self.check_start) / interval)
            return max(self.check_index + 1, min(bake_over, after_now))
        return max(self.check_index + 1, after_now)

    def _apply(self, transitions: list[Transition], change: object, at: float) -> None:
        rollout = self.rollout
        assert rollout is not None
        for transition in transitions:
            event = transition.event
            stage = self.stage
            if event == "extended" and stage is not None:
                stage.row.extended = True
            elif event == "promoted" and stage is not None:
                stage.close(report_module.PROMOTED, at)
                self._open_stage(transition.stage, transition.percentage, at)
            elif event == "completed":
                # The flag stays at the last stage's percentage, so its row
                # keeps counting to the end of the trace; nothing is judged any more.
                self.recording = False
                self.outcome_at = at
            elif event in ("rolled_back", "paused") and stage is not None:
                stage.close(report_module.ROLLED_BACK if event == "rolled_back" else report_module.PAUSED, at)
                if rollout.failed_gate is not None:
                    self.failure = (dict(rollout.failed_gate), self._evidence(stage, at))
                self.stage = None
                self.recording = False
                self.outcome_at = at
            logger.info(
                "simulate.transition",
                extra={"event": event, "stage": transition.stage, "percentage": transition.percentage, "reason": transition.reason},
            )
        if change is not None:
            self.snapshot = self._snapshot(change.enabled, change.percentage)  # type: ignore[attr-defined]

    def _evidence(self, stage: _Stage, judged_at: float) -> StageEvidence:
        return StageEvidence(
            percentage=stage.row.percentage,
            group=ENFORCEMENT_FLAG,
            started_at=stage.row.started_at,
            judged_at=judged_at,
            decisions=stage.decisions,
            actors=len(stage.actors),
            abusers=frozenset(stage.abusers),
            records=self.records,
            fixed_blocked=stage.fixed_blocked,
            fixed_blocked_actors=set(stage.fixed_blocked_actors),
        )

    # -- the loop --------------------------------------------------------------

    def run(self) -> SimulationReport:
        """Replay the whole trace and return the report."""
        started = time.perf_counter()
        reader = self.reader
        records = iter(reader)
        if self.settings.bots is not None:
            records = self._with_bots(records, self.settings.bots)
        self._replay(records)
        return self._finish(started)

    def _with_bots(self, records: Iterator[TraceRecord], spec: BotSpec) -> Iterator[TraceRecord]:
        """Interleave the bots' requests, in time order, before each logged request."""
        bot_action = self.settings.action_map.action_for(BOT_METHOD, BOT_PATH)
        bots: BotSchedule | None = None
        for record in records:
            timestamp = record[0]
            if bots is None:
                bots = BotSchedule(spec, timestamp)
                self.bot_ids = frozenset("ip:" + bot_id for bot_id in bots.actor_ids)
            while bots.next_time() <= timestamp:
                at, bot_id = bots.pop()
                yield (at, "ip", bot_id, bot_action, BOT_REQUEST)
            yield record

    def _replay(self, records: Iterator[TraceRecord]) -> None:
        """Decide every request and feed the stage's totals to the rollout.

        NOTE: this loop is the hot path, written for speed over style and
        measured with bench/bench_simulate.py. The decision and the stage's
        totals are inlined and attributes are read into locals. The locals are
        read again only after the controller ran, the only code that changes
        them. Each Python call saved is about 2 % of a request.
        """
        action_for_request = self.settings.action_map.action_for_request
        prepare = self.engine.prepare
        finish = self.engine.finish
        consume = self.store.consume
        clock = self.clock
        progress = self.progress
        requests_by_actor = self.requests_by_actor
        recorded = self.records
        counter_request = CounterRequest

        snapshot = self.snapshot
        stage = self.stage
        recording = self.recording
        next_check = self.next_check
        next_housekeeping = PROGRESS_EVERY_LINES
        started = False
        decisions = 0
        bot_decisions = 0

        for timestamp, actor_type, actor_id, action, request in records:
            # The clock moves forward only; the controller runs first at each check time passed.
            if timestamp > clock.now or not started:
                if not started:
                    started = True
                    self._begin(timestamp)
                elif timestamp >= next_check:
                    self._run_checks(timestamp)
                clock.now = timestamp
                snapshot = self.snapshot
                stage = self.stage
                recording = self.recording
                next_check = self.next_check

            if request is BOT_REQUEST:
                is_bot = True
                bot_decisions += 1
            else:
                is_bot = False
                decisions += 1
            if action is None:
                # A web server log gives the request line; CSV, JSON lines and bots give the action.
                action = action_for_request(request)  # type: ignore[arg-type]

            # Decide with the production engine, as Gate.decide's general path does on a memory store.
            prepared = prepare(snapshot, actor_type, actor_id, action, 1)
            if prepared.__class__ is counter_request:
                policy = prepared.policy
                outcome = consume(
                    prepared.key, policy.algorithm, policy.limit_value, policy.window_seconds,
                    policy.capacity, prepared.units,
                )
                decision = finish(prepared, outcome)
                counted = True
            else:
                decision = prepared  # type: ignore[assignment]
                counted = False

            actor = actor_type + ":" + actor_id
            requests_by_actor[actor] = requests_by_actor.get(actor, 0) + 1
            if counted and recording:
                recorded.append((clock.now, decision.tier, policy.name, actor, outcome[0], is_bot))

            # The stage's totals count the enforced cohort only.
            if stage is not None and decision.mode == ENFORCE:
                stage.decisions += 1
                stage.actors.add(actor)
                if is_bot:
                    stage.abusers.add(actor)
                if not decision.allowed:
                    stage.blocked += 1
                    stage.blocked_actors.add(actor)
                    if not counted:
                        stage.fixed_blocked += 1
                        stage.fixed_blocked_actors.add(actor)
            if decision.would_block:
                self._count_block(actor, action, decision.tier, decision.mode == ENFORCE)

            if decisions >= next_housekeeping:
                next_housekeeping += PROGRESS_EVERY_LINES
                if recording and len(recorded) > MAX_RECORDED_REQUESTS:
                    self._stop_recording()
                    recording = False
                if progress is not None:
                    progress(self.reader)

        self.decisions = decisions
        self.bot_decisions = bot_decisions

    def _stop_recording(self) -> None:
        self.records.clear()
        self.recording = False
        self.records_overflowed = True
        logger.warning("simulate.recording_stopped", extra={"max_requests": MAX_RECORDED_REQUESTS})

    def _count_block(self, actor: str, action: str, tier: str, enforced: bool) -> None:
        self.would_block_by_actor[actor] = self.would_block_by_actor.get(actor, 0) + 1
        if enforced:
            self.blocked_by_actor[actor] = self.blocked_by_actor.get(actor, 0) + 1
        actions = self.blocked_actions.setdefault(actor, {})
        actions[action] = actions.get(action, 0) + 1
        self.tier_by_actor[actor] = tier

    # -- the end -----------------------------------------------------------------

    def _finish(self, started: float) -> SimulationReport:
        first = self.trace_start
        end = self.clock.now if first is not None else None
        outcome = self._outcome(end)
        recommendations = self._recommendations()
        notes = []
        if self.records_overflowed:
            notes.append(
                f"a stage had more than {MAX_RECORDED_REQUESTS} counter requests, more than the recommendation "
                "search keeps in memory, so no limits are recommended"
            )

        elapsed = time.perf_counter() - started
        lines = self.reader.lines
        return SimulationReport(
            source=self.reader.source,
            format=self.reader.format,
            lines=lines,
            decisions=self.decisions,
            bot_decisions=self.bot_decisions,
            malformed=self.reader.malformed,
            malformed_examples=list(self.reader.malformed_examples),
            stages=self.rows,
            outcome=outcome,
            recommendations=recommendations,
            lines_per_second=lines / elapsed if elapsed > 0 else 0.0,
            elapsed_seconds=elapsed,
            trace_start=first,
            trace_end=end,
            fixed_percentage=self.settings.percentage,
            top_blocked=self._top_blocked(),
            notes=notes,
        )

    def _outcome(self, end: float | None) -> Outcome:
        if end is None:
            return Outcome(report_module.TRACE_ENDED, 0, 0, None)

        if self.settings.percentage is not None:
            stage = self.stage
            assert stage is not None
            verdict = judge_stage(self.plan, stage.metrics())
            label = {PASS: report_module.PASSED, FAIL: report_module.FAILED}.get(verdict.status, report_module.PENDING)
            stage.close(label, end)
            failed = verdict.failed.failure() if verdict.failed is not None else None
            if failed is not None:
                self.failure = (failed, self._evidence(stage, end + 1e-9))
            return Outcome(report_module.TRACE_ENDED, 1, self.settings.percentage, failed, end)

        rollout = self.rollout
        assert rollout is not None
        if self.stage is not None:
            self.stage.close(report_module.COMPLETED if rollout.state == COMPLETED else report_module.TRACE_ENDED, end)
        if rollout.state == COMPLETED:
            return Outcome(report_module.COMPLETED, rollout.stage, rollout.percentage, None, self.outcome_at)
        if rollout.state == ROLLED_BACK:
            return Outcome(report_module.ROLLED_BACK, rollout.stage, rollout.percentage, rollout.failed_gate, self.outcome_at)
        # Running, or paused by a failed gate: the log ran out before anyone resumed it.
        failed_gate = rollout.failed_gate if rollout.state == PAUSED else None
        return Outcome(report_module.TRACE_ENDED, rollout.stage, rollout.percentage, failed_gate, self.outcome_at if failed_gate else None)

    def _recommendations(self) -> list[Recommendation]:
        if self.failure is None:
            return []
        failed_gate, evidence = self.failure
        if self.records_overflowed:
            return []
        return recommend_limits(self.plan, failed_gate, evidence, self.policies_by_name)

    def _top_blocked(self) -> list[BlockedActor]:
        ranked = sorted(self.would_block_by_actor.items(), key=lambda item: (-item[1], item[0]))
        actors = []
        for actor, would_block in ranked[: self.settings.top_blocked]:
            actions = self.blocked_actions.get(actor, {})
            actor_type, _, actor_id = actor.partition(":")
            actors.append(
                BlockedActor(
                    actor_type=actor_type,
                    actor_id=actor_id,
                    tier=self.tier_by_actor.get(actor, "B"),
                    requests=self.requests_by_actor.get(actor, 0),
                    would_block=would_block,
                    blocked=self.blocked_by_actor.get(actor, 0),
                    actions=tuple(name for name, _ in sorted(actions.items(), key=lambda item: (-item[1], item[0]))),
                    is_bot=actor in self.bot_ids,
                )
            )
        return actors


def replay_trace(reader: TraceReader, settings: ReplaySettings, progress: ProgressCallback | None = None) -> SimulationReport:
    """Replay every request of ``reader`` under ``settings`` and return the report."""
    return Replay(reader, settings, progress).run()
