"""Helpers of the controller tests: a migrated PostgreSQL catalog, scaled-down plans and generated traffic."""

from __future__ import annotations

import threading
import time
from typing import Callable

import sqlalchemy as sa

from rampgate.catalog import schema
from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.catalog.repository import Catalog
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import Plan, Stage, default_plan
from rampgate.core.policies import Policy
from rampgate.gate import Gate
from rampgate.rollout.store import RolloutRecord, RolloutStore

ACTIONS = ("create_post", "send_message", "follow", "media_upload", "search", "api_call")
ACTORS = 2000


def open_migrated_catalog(url: str) -> Catalog:
    engine = create_catalog_engine(url)
    migrate(engine)
    return Catalog(engine)


def scaled_default_plan(
    bake_seconds: float = 1.5,
    min_decisions: int = 20,
    check_interval_seconds: float = 0.3,
    **changes: object,
) -> Plan:
    """The default plan's stages and gates with bake times of seconds."""
    plan = default_plan()
    stages = tuple(Stage(stage.percentage, bake_seconds if stage.bake_seconds else 0.0) for stage in plan.stages)
    fields = {
        "stages": stages,
        "gates": plan.gates,
        "on_failure": plan.on_failure,
        "approval": plan.approval,
        "min_decisions": min_decisions,
        "check_interval_seconds": check_interval_seconds,
    }
    fields.update(changes)
    return Plan(**fields)  # type: ignore[arg-type]


def set_generous_limits(catalog: Catalog) -> None:
    """Raise every seeded tier policy to 10,000 per minute, so the traffic below is never blocked."""
    for action in ACTIONS:
        for tier in "ABCD":
            catalog.set_policy(
                Policy(scope="tier", tier=tier, action=action, limit_value=10_000, window_seconds=60),
                changed_by="test",
            )


class Traffic:
    """Decisions for ``actors`` users through a real :class:`Gate`, in a background thread.

    Each sweep asks once for every actor, on an action that rotates per
    actor and sweep, then sleeps ``pause_seconds``. ``actions`` narrows the
    rotation.
    """

    def __init__(
        self,
        database_url: str,
        *,
        actors: int = ACTORS,
        actions: tuple[str, ...] = ACTIONS,
        pause_seconds: float = 0.3,
        counter_store: str = "memory",
        redis_url: str | None = None,
        redis_prefix: str | None = None,
    ) -> None:
        self.gate = Gate(
            database_url=database_url, counter_store=counter_store, redis_url=redis_url, redis_prefix=redis_prefix
        )
        self.actors = actors
        self.actions = actions
        self.pause_seconds = pause_seconds
        self.decisions = 0
        self.blocked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-traffic", daemon=True)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.gate.close()

    def _run(self) -> None:
        sweep = 0
        while not self._stop.is_set():
            for number in range(self.actors):
                action = self.actions[(number + sweep) % len(self.actions)]
                decision = self.gate.decide("user", f"u-{number:04d}", action)
                self.decisions += 1
                self.blocked += not decision.allowed
            sweep += 1
            self._stop.wait(self.pause_seconds)


def wait_for(condition: Callable[[], object], timeout: float, message: str, interval: float = 0.1) -> object:
    """Poll ``condition`` until it returns something true; fail the test with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def latest(catalog: Catalog, flag_name: str = ENFORCEMENT_FLAG) -> RolloutRecord:
    record = RolloutStore(catalog.engine).latest(flag_name)
    assert record is not None
    return record


def wait_for_state(catalog: Catalog, states: set[str], timeout: float) -> RolloutRecord:
    def reached() -> RolloutRecord | None:
        record = latest(catalog)
        return record if record.rollout.state in states else None

    return wait_for(reached, timeout, f"a rollout in state {sorted(states)}")  # type: ignore[return-value]


def transition_rows(catalog: Catalog) -> list[sa.Row]:
    table = schema.rollout_transitions
    with catalog.engine.connect() as connection:
        return list(connection.execute(sa.select(table).order_by(table.c.rollout_id, table.c.seq)))
