"""The rollout controller: the loop that judges each stage on the audit trail and moves the flag.

Every tick (at most a second apart) the controller, for each flag it serves:

1. takes or renews the flag's lease, and waits on standby while another controller has it;
2. loads the flag's running or paused rollout; on taking a rollout over it
   restarts the bake stopwatch (:meth:`Rollout.reattach`), so the time no
   controller watched is not counted;
3. aborts the rollout when the flag was disabled by any other path;
4. once per ``check_interval`` of the plan, computes the stage's gate
   metrics, steps the machine and saves the bake time, the transitions and
   the flag change together.

A catalog watcher wakes the loop as soon as a flag changes, so a disable made
with plain SQL is recorded within a second whatever the check interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, NamedTuple

import sqlalchemy as sa

from rampgate.catalog.database import check_schema, create_catalog_engine
from rampgate.catalog.repository import Catalog
from rampgate.catalog.watcher import CatalogWatcher
from rampgate.core.rollout import RUNNING
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.errors import Conflict, NotFound, StoreError
from rampgate.rollout.lease import DEFAULT_LEASE_SECONDS, ControllerLease, new_holder_name
from rampgate.rollout.operations import RolloutOperations, stage_metrics
from rampgate.rollout.store import RolloutRecord
from rampgate.rollout.webhook import WebhookSender
from rampgate.settings import Settings

logger = logging.getLogger(__name__)

CONTROLLER = "controller"
DEFAULT_TICK_SECONDS = 1.0


class RolloutController:
    """Drives the rollouts of one flag, or of every flag with a running or paused rollout.

    ``tick_seconds`` is the maximum time between two looks at the flags, and
    the plan's ``check_interval`` sets how often gates are judged.
    ``lease_seconds`` is how long a lease lasts without renewal, so a
    replacement for a killed controller takes over after at most that long.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        flag_name: str | None = None,
        webhook: WebhookSender | None = None,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        tick_seconds: float = DEFAULT_TICK_SECONDS,
    ) -> None:
        if tick_seconds <= 0 or tick_seconds > 1:
            raise ValueError(f"tick_seconds must be more than 0 and at most 1, not {tick_seconds}")
        if lease_seconds <= tick_seconds:
            raise ValueError(f"lease_seconds ({lease_seconds}) must be longer than tick_seconds ({tick_seconds})")
        self.catalog = catalog
        self.flag_name = flag_name
        self.clock = clock
        self.holder = holder or new_holder_name()
        self.lease_seconds = lease_seconds
        self.tick_seconds = tick_seconds
        self.operations = RolloutOperations(catalog, webhook=webhook, clock=clock)
        self.store = self.operations.store
        self._leases: dict[str, ControllerLease] = {}
        self._attached: dict[str, int] = {}
        self._next_check: dict[str, float] = {}
        self._standby_logged: set[str] = set()
        self._wake = threading.Event()
        self.last_error: str | None = None

    # -- the loop -----------------------------------------------------------

    def run(self, stop_event: threading.Event, *, watch: bool = True) -> None:
        """Tick until ``stop_event`` is set, then give up every lease."""
        watcher = None
        if watch:
            watcher = CatalogWatcher(self.catalog)
            watcher.add_listener(self._on_catalog_change)
            watcher.start()
        logger.info("rollout.controller_started", extra={"flag": self.flag_name or "*", "holder": self.holder})
        try:
            while not stop_event.is_set():
                self.tick()
                self._wake.wait(self._seconds_to_next_tick())
                self._wake.clear()
        finally:
            if watcher is not None:
                watcher.stop()
            self.release()
            logger.info("rollout.controller_stopped", extra={"flag": self.flag_name or "*", "holder": self.holder})

    def _seconds_to_next_tick(self) -> float:
        """Wait until the next gate check is due, but never longer than ``tick_seconds``."""
        if not self._next_check:
            return self.tick_seconds
        due = min(self._next_check.values()) - self.clock()
        return min(self.tick_seconds, max(0.01, due))

    def wake(self) -> None:
        """Make the loop tick now instead of at the end of its wait."""
        self._wake.set()

    def _on_catalog_change(self, old: CatalogSnapshot, new: CatalogSnapshot) -> None:
        for name, flag in new.flags.items():
            before = old.flags.get(name)
            if before is None or (before.enabled, before.percentage) != (flag.enabled, flag.percentage):
                self._wake.set()
                return

    def tick(self) -> None:
        """Look at every served flag once; database failures are logged and retried next tick."""
        try:
            flags = [self.flag_name] if self.flag_name else self._served_flags()
        except sa.exc.SQLAlchemyError as error:
            self._report_error("*", error)
            return

        for flag_name in flags:
            try:
                self.tick_flag(flag_name)
                self.last_error = None
            except (sa.exc.SQLAlchemyError, StoreError) as error:
                self._report_error(flag_name, error)

    def _served_flags(self) -> list[str]:
        active = self.store.active_flags()
        for flag_name in list(self._leases):
            if flag_name not in active:
                self._leases.pop(flag_name).release()
                self._attached.pop(flag_name, None)
                self._next_check.pop(flag_name, None)
        return active

    def release(self) -> None:
        """Give up every lease this controller holds."""
        for lease in self._leases.values():
            try:
                lease.release()
            except sa.exc.SQLAlchemyError as error:
                logger.warning("rollout.lease_release_failed", extra={"flag": lease.flag_name, "error": str(error)})
        self._attached.clear()

    def _report_error(self, flag_name: str, error: Exception) -> None:
        message = str(error).splitlines()[0]
        if message != self.last_error:
            logger.warning(
                "rollout.controller_error",
                extra={"flag": flag_name, "error": message, "hint": "check that the catalog database is reachable"},
            )
        self.last_error = message

    # -- one flag -----------------------------------------------------------

    def tick_flag(self, flag_name: str) -> RolloutRecord | None:
        """Do one tick's work for one flag; return its active rollout afterwards, if any."""
        lease = self._leases.get(flag_name)
        if lease is None:
            lease = ControllerLease(self.catalog.engine, flag_name, self.holder, self.lease_seconds, self.clock)
            self._leases[flag_name] = lease
        was_held = lease.held
        if not lease.acquire():
            self._attached.pop(flag_name, None)
            self._next_check.pop(flag_name, None)
            if flag_name not in self._standby_logged:
                self._standby_logged.add(flag_name)
                logger.info("rollout.standby", extra={"flag": flag_name, "holder": self.holder})
            return None
        self._standby_logged.discard(flag_name)

        record = self.store.active(flag_name)
        if record is None:
            self._attached.pop(flag_name, None)
            self._next_check.pop(flag_name, None)
            return None

        try:
            if not was_held or self._attached.get(flag_name) != record.rollout_id:
                record = self._attach(record)
            record = self._check_flag(record)
            if record.rollout.state == RUNNING and self.clock() >= self._next_check.get(flag_name, 0.0):
                record = self._judge(record)
            if record.rollout.state != RUNNING:
                self._next_check.pop(flag_name, None)
        except Conflict:
            # An operator's command saved the rollout first; the next tick reads it again.
            logger.info("rollout.save_conflict", extra={"flag": flag_name})
            self._next_check.pop(flag_name, None)
            return None
        return record

    def _attach(self, record: RolloutRecord) -> RolloutRecord:
        now = self.clock()
        record.rollout.reattach(now)
        record = self.store.save(record, now)
        self._attached[record.flag_name] = record.rollout_id
        self._next_check[record.flag_name] = now
        self.operations.show(record)
        logger.info(
            "rollout.attached",
            extra={
                "flag": record.flag_name,
                "rollout_id": record.rollout_id,
                "state": record.rollout.state,
                "stage": record.rollout.stage,
                "bake_left_seconds": round(record.rollout.bake_left(now), 1),
            },
        )
        return record

    def _check_flag(self, record: RolloutRecord) -> RolloutRecord:
        try:
            flag = self.catalog.get_flag(record.flag_name)
        except NotFound:
            flag = None
        if flag is not None and flag.enabled:
            return record

        reason = "flag deleted outside the rollout" if flag is None else "flag disabled outside the rollout"
        record.rollout.flag_disabled_elsewhere(self.clock(), reason)
        return self.operations.save(record, None, changed_by=CONTROLLER, via=CONTROLLER)

    def _judge(self, record: RolloutRecord) -> RolloutRecord:
        rollout = record.rollout
        now = self.clock()
        metrics = stage_metrics(self.catalog.engine, self.catalog, record, now)
        transitions, change = rollout.step(now, metrics)
        logger.debug(
            "rollout.judged",
            extra={
                "flag": record.flag_name,
                "stage": rollout.stage,
                "decisions": metrics.decisions,
                "blocked": metrics.blocked,
                "verdict": None if rollout.last_verdict is None else rollout.last_verdict.status,
                "bake_left_seconds": round(rollout.bake_left(now), 1),
            },
        )
        record = self.operations.save(record, change, changed_by=CONTROLLER, via=CONTROLLER)
        self._next_check[record.flag_name] = now + rollout.plan.check_interval_seconds
        if transitions and rollout.state == RUNNING:
            # A new stage is judged at once rather than a whole interval later.
            self._next_check[record.flag_name] = now
        return record


def _open_catalog(settings: Settings) -> Catalog:
    engine = create_catalog_engine(settings.database_url)
    check_schema(engine)
    return Catalog(engine)


def run_controller(
    settings: Settings,
    flag: str | None = None,
    stop_event: threading.Event | None = None,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    tick_seconds: float = DEFAULT_TICK_SECONDS,
    holder: str | None = None,
) -> None:
    """Run the controller for ``flag`` (or every rollout) until ``stop_event`` is set.

    Opens the configured catalog, posts transitions to ``settings.webhook_url``
    when it is set, and closes both on the way out.
    """
    stop_event = stop_event or threading.Event()
    catalog = _open_catalog(settings)
    webhook = WebhookSender(settings.webhook_url) if settings.webhook_url else None
    controller = RolloutController(
        catalog, flag_name=flag, webhook=webhook, holder=holder, lease_seconds=lease_seconds, tick_seconds=tick_seconds
    )
    try:
        controller.run(stop_event)
    finally:
        if webhook is not None:
            webhook.close()
        catalog.engine.dispose()


class ControllerHandle(NamedTuple):
    """The thread of :func:`run_controller_thread` and the event that stops it; unpacks as ``(thread, stop_event)``."""

    thread: threading.Thread
    stop_event: threading.Event

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the controller, which gives up its leases, and wait up to ``timeout`` seconds for it."""
        self.stop_event.set()
        self.thread.join(timeout)


def run_controller_thread(
    settings: Settings, flag: str | None = None, **options: float | str | None
) -> ControllerHandle:
    """Start :func:`run_controller` in a daemon thread; set the returned event (or call ``stop()``) to stop it."""
    stop_event = threading.Event()
    thread = threading.Thread(
        target=run_controller,
        args=(settings, flag, stop_event),
        kwargs=options,
        name="rampgate-rollout-controller",
        daemon=True,
    )
    thread.start()
    return ControllerHandle(thread, stop_event)
