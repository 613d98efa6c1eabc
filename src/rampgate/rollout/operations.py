"""Rollout operations shared by operators and the controller: start, judge, advance, pause, resume, abort.

Each operation loads the flag's rollout, runs the pure machine, and saves the
result together with the flag change it calls for (see
:mod:`rampgate.rollout.store`). A save that loses a race with another writer
is retried on the fresh row, so an operator's command and the controller
never record the same transition twice. Every recorded transition is then
published: logged as ``rollout.<event>`` at INFO, counted in
``rampgate_rollout_transitions_total``, and posted to the webhook.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from sqlalchemy.engine import Engine

from rampgate.catalog.repository import Catalog, isoformat
from rampgate.core.gates import PASS, StageMetrics, judge_stage
from rampgate.core.plans import Plan
from rampgate.core.rollout import PAUSED, RUNNING, FlagChange, Rollout, Transition
from rampgate.errors import Conflict, NotFound
from rampgate.rollout import telemetry
from rampgate.rollout.metrics import compute_stage_metrics
from rampgate.rollout.store import RolloutRecord, RolloutStore, to_datetime
from rampgate.rollout.webhook import WebhookSender

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
# A change of a loaded rollout: (transitions recorded, flag change called for).
Mutation = Callable[[Rollout, float], tuple[list[Transition], FlagChange | None]]

SAVE_ATTEMPTS = 5


def stage_metrics(engine: Engine, catalog: Catalog, record: RolloutRecord, now: float) -> StageMetrics:
    """Compute the gate metrics of the record's current stage.

    The window runs from the stage's evidence start to ``now``, or to the
    last transition for a rollout that has ended.
    """
    rollout = record.rollout
    since = to_datetime(rollout.evidence_since if rollout.evidence_since is not None else rollout.stage_entered_at)
    until = None
    if rollout.is_final and rollout.transitions:
        until = to_datetime(rollout.transitions[-1].at)
    flag = catalog.get_flag(rollout.flag_name)
    return compute_stage_metrics(engine, flag, rollout.plan, since, until)


def transition_document(record: RolloutRecord, seq: int, transition: Transition) -> dict[str, Any]:
    """Return the JSON document posted to the webhook for one transition."""
    return {
        "flag": record.flag_name,
        "rollout_id": record.rollout_id,
        "seq": seq,
        "event": transition.event,
        "at": isoformat(to_datetime(transition.at)),
        "stage": transition.stage,
        "percentage": transition.percentage,
        "reason": transition.reason,
        "details": transition.details,
        "state": record.rollout.state,
    }


class RolloutOperations:
    """Rollout commands over one catalog, shared by the CLI, the admin API and the controller.

    ``changed_by`` and ``via`` of each command go into the config-change
    history of the flag changes it makes.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        webhook: WebhookSender | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.catalog = catalog
        self.engine = catalog.engine
        self.store = RolloutStore(catalog.engine)
        self.webhook = webhook
        self.clock = clock

    # -- operator commands -------------------------------------------------

    def start(self, flag_name: str, plan: Plan, *, changed_by: str, via: str) -> RolloutRecord:
        """Start a rollout of ``flag_name`` at the plan's first stage and enable the flag there.

        Raises :class:`Conflict` when the flag already has a running or
        paused rollout, and :class:`NotFound` when the flag does not exist.
        """
        self.catalog.get_flag(flag_name)
        now = self.clock()
        rollout, _, change = Rollout.start(flag_name, plan, now)
        record = self.store.create(rollout, now, change, changed_by=changed_by, via=via)
        self.publish(record, rollout.transitions)
        return record

    def advance(
        self, flag_name: str, *, force: bool = False, reason: str | None = None, changed_by: str, via: str
    ) -> RolloutRecord:
        """Promote the running or paused rollout to its next stage (or complete it on the last).

        Without ``force`` the stage must have baked and passed its gates,
        which is what a plan with ``approval = "manual"`` waits for. With
        ``force`` it is promoted regardless of both. Raises :class:`Conflict`
        naming what is missing otherwise.
        """
        if not force:
            self._check_ready(flag_name)
        text = reason or ("forced by an operator" if force else "approved by an operator")
        return self._mutate(flag_name, lambda rollout, now: rollout.advance(now, text), changed_by, via, "advance")

    def pause(self, flag_name: str, *, reason: str | None = None, changed_by: str, via: str) -> RolloutRecord:
        """Pause the running rollout: the flag keeps its percentage and the bake time stops."""
        text = reason or "paused by an operator"
        return self._mutate(flag_name, lambda rollout, now: (rollout.pause(now, text), None), changed_by, via, "pause")

    def resume(self, flag_name: str, *, reason: str | None = None, changed_by: str, via: str) -> RolloutRecord:
        """Resume the paused rollout with its bake time kept and a fresh evidence window."""
        return self._mutate(
            flag_name, lambda rollout, now: (rollout.resume(now, reason), None), changed_by, via, "resume"
        )

    def abort(self, flag_name: str, *, reason: str | None = None, changed_by: str, via: str) -> RolloutRecord:
        """End the running or paused rollout and disable the flag at 0 % (the emergency rollback)."""
        text = reason or "aborted by an operator"
        try:
            return self._mutate(flag_name, lambda rollout, now: rollout.abort(now, text), changed_by, via, "abort")
        except NotFound as error:
            raise NotFound(f"{error}; to disable the flag anyway run `rampgate flag rollback {flag_name}`") from None

    # -- shared steps -------------------------------------------------------

    def save(
        self,
        record: RolloutRecord,
        change: FlagChange | None,
        *,
        changed_by: str = "controller",
        via: str = "controller",
    ) -> RolloutRecord:
        """Save the record with its new transitions and flag change, then publish the transitions."""
        new = list(record.new_transitions)
        saved = self.store.save(record, self.clock(), change, changed_by=changed_by, via=via)
        self.publish(saved, new)
        return saved

    def publish(self, record: RolloutRecord, transitions: list[Transition]) -> None:
        """Log, count and post each transition; then show the rollout's stage in the gauges."""
        first_seq = record.stored_transitions - len(transitions) + 1
        for seq, transition in enumerate(transitions, first_seq):
            logger.info(
                f"rollout.{transition.event}",
                extra={
                    "flag": record.flag_name,
                    "rollout_id": record.rollout_id,
                    "stage": transition.stage,
                    "percentage": transition.percentage,
                    "reason": transition.reason,
                    "state": record.rollout.state,
                },
            )
            telemetry.count_transition(record.flag_name, transition.event)
            if self.webhook is not None:
                self.webhook.post(transition_document(record, seq, transition))
        self.show(record)

    @staticmethod
    def show(record: RolloutRecord) -> None:
        """Set the stage and percentage gauges from the record."""
        rollout = record.rollout
        if rollout.state in (RUNNING, PAUSED, "completed"):
            telemetry.show_stage(record.flag_name, rollout.stage, rollout.percentage)
        else:
            telemetry.show_stage(record.flag_name, 0, 0)

    def _active(self, flag_name: str) -> RolloutRecord:
        record = self.store.active(flag_name)
        if record is None:
            latest = self.store.latest(flag_name)
            state = "never started" if latest is None else latest.rollout.state
            raise NotFound(
                f"flag {flag_name!r} has no running or paused rollout (latest: {state}); "
                f"start one with `rampgate rollout start {flag_name}`"
            )
        return record

    def _check_ready(self, flag_name: str) -> None:
        record = self._active(flag_name)
        rollout = record.rollout
        now = self.clock()
        if rollout.state != RUNNING:
            raise Conflict(f"the rollout of {flag_name!r} is {rollout.state}; resume it, or force the promotion")
        bake_left = rollout.bake_left(now)
        if bake_left > 0:
            raise Conflict(
                f"stage {rollout.stage} ({rollout.percentage} %) has {bake_left:.0f} s of bake left; "
                "wait, or force the promotion"
            )
        verdict = judge_stage(rollout.plan, stage_metrics(self.engine, self.catalog, record, now))
        if verdict.status != PASS:
            waiting = ", ".join(f"{r.metric} {r.status}" for r in verdict.results if r.status != PASS)
            raise Conflict(
                f"stage {rollout.stage} ({rollout.percentage} %) has not passed its gates "
                f"({waiting or 'too few decisions'}); wait, or force the promotion"
            )

    def _mutate(self, flag_name: str, mutation: Mutation, changed_by: str, via: str, command: str) -> RolloutRecord:
        for _ in range(SAVE_ATTEMPTS):
            record = self._active(flag_name)
            state_before = record.rollout.state
            transitions, change = mutation(record.rollout, self.clock())
            if not transitions:
                raise Conflict(f"cannot {command} the rollout of {flag_name!r}: it is {state_before}")
            try:
                return self.save(record, change, changed_by=changed_by, via=via)
            except Conflict:
                logger.info("rollout.save_retried", extra={"flag": flag_name, "command": command})
        raise Conflict(f"the rollout of {flag_name!r} kept changing; try `rollout {command}` again")
