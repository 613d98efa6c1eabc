"""Gate and AsyncGate: the decision pipeline wired to a counter store, the catalog and the audit trail."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from rampgate.catalog.audit import AuditWriter, DecisionRecorder, NullRecorder
from rampgate.catalog.database import MEMORY_URL, check_schema, create_catalog_engine, current_revision, migrate
from rampgate.catalog.repository import Catalog
from rampgate.catalog.watcher import CatalogWatcher
from rampgate.core.decision import Decision
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.engine import CounterRequest, DecisionEngine
from rampgate.errors import StoreError
from rampgate.settings import Settings, load_settings
from rampgate.stores.factory import open_counter_store

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class _GateBase:
    def __init__(
        self,
        *,
        database_url: str | None = None,
        counter_store: str | None = None,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        store_timeout_ms: int | None = None,
        clock: Clock | None = None,
        settings: Settings | None = None,
        store: Any = None,
        recorder: DecisionRecorder | None = None,
        watch: bool = True,
        audit: bool = True,
    ) -> None:
        self.settings = settings or load_settings(
            database_url=database_url,
            counter_store=counter_store,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            store_timeout_ms=store_timeout_ms,
        )
        self.clock: Clock = clock or time.time

        # Catalog: the embedded SQLite database is created on first use.
        self.engine = create_catalog_engine(self.settings.database_url)
        if self.engine.dialect.name == "sqlite" and current_revision(self.engine) is None:
            migrate(self.engine)
        check_schema(self.engine)
        self.catalog = Catalog(self.engine)
        self.watcher = CatalogWatcher(self.catalog)
        if watch:
            self.watcher.start()

        self.store = store if store is not None else open_counter_store(self.settings, clock=self.clock)
        if recorder is not None:
            self.recorder: DecisionRecorder = recorder
        elif audit:
            writer = AuditWriter(self.engine, max_buffer=self.settings.audit_buffer_rows)
            writer.start()
            self.recorder = writer
        else:
            self.recorder = NullRecorder()
        self._engine = DecisionEngine()

    @property
    def snapshot(self) -> CatalogSnapshot:
        """The catalog as the request path currently sees it."""
        return self.watcher.snapshot

    def refresh(self) -> CatalogSnapshot:
        """Reload flags, policies and trust profiles now instead of waiting for the watcher."""
        return self.watcher.refresh()

    def _close_catalog(self) -> None:
        self.watcher.stop()
        self.recorder.close()
        self.engine.dispose()


class Gate(_GateBase):
    """Decides requests in the calling thread.

    With no arguments it uses the settings (``RAMPGATE_*`` or ``rampgate.toml``),
    which default to the SQLite catalog ``rampgate.db`` and in-memory counters.
    ``clock`` (a callable returning seconds) drives the memory store and the
    audit timestamps, for tests and simulation.
    """

    def decide(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        *,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide one request and record it; raise :class:`InvalidInput` on a bad argument."""
        prepared = self._engine.prepare(self.watcher.snapshot, actor_type, actor_id, action, cost)
        if prepared.__class__ is CounterRequest:
            request: CounterRequest = prepared  # type: ignore[assignment]
            policy = request.policy
            try:
                outcome = self.store.consume(
                    request.key, policy.algorithm, policy.limit_value, policy.window_seconds,
                    policy.capacity, request.units,
                )
                decision = DecisionEngine.finish(request, outcome)
            except StoreError:
                decision = DecisionEngine.fail(request)
            units = request.units
        else:
            decision = prepared  # type: ignore[assignment]
            units = cost
        self.recorder.record(decision, units, self.clock(), request_id, context)
        return decision

    def close(self) -> None:
        """Flush the audit trail and release the stores."""
        self._close_catalog()
        self.store.close()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncGate(_GateBase):
    """The asyncio twin of :class:`Gate`; use it as ``async with AsyncGate(...) as gate``."""

    async def decide(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        *,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide one request and record it; raise :class:`InvalidInput` on a bad argument."""
        prepared = self._engine.prepare(self.watcher.snapshot, actor_type, actor_id, action, cost)
        if prepared.__class__ is CounterRequest:
            request: CounterRequest = prepared  # type: ignore[assignment]
            policy = request.policy
            try:
                outcome = await self.store.aconsume(
                    request.key, policy.algorithm, policy.limit_value, policy.window_seconds,
                    policy.capacity, request.units,
                )
                decision = DecisionEngine.finish(request, outcome)
            except StoreError:
                decision = DecisionEngine.fail(request)
            units = request.units
        else:
            decision = prepared  # type: ignore[assignment]
            units = cost
        self.recorder.record(decision, units, self.clock(), request_id, context)
        return decision

    async def aclose(self) -> None:
        """Flush the audit trail and release the stores."""
        self._close_catalog()
        await self.store.aclose()

    async def __aenter__(self) -> "AsyncGate":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def memory_gate(clock: Clock | None = None, **kwargs: Any) -> Gate:
    """A gate on an in-memory catalog seeded with the defaults, for demos, tests and simulation."""
    return Gate(database_url=MEMORY_URL, counter_store="memory", clock=clock, **kwargs)
