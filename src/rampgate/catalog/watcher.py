"""Keeps an in-memory catalog snapshot current in every process.

PostgreSQL triggers call ``pg_notify('rampgate_catalog', …)`` on every insert,
update and delete of the cached tables, whichever path made the change, and
the watcher reloads on each notification. SQLite has no notifications, so the
watcher polls ``PRAGMA data_version``, which changes when any other
connection commits, and then reads ``rampgate_catalog_version``, which
triggers on the cached tables increase: audit rows, written every few
milliseconds by a serving process, cause no reload. Either way a change
reaches the snapshot well within a second. A full reload every ``resync_seconds`` covers notifications lost while
the listening connection was down.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

from rampgate.catalog.repository import Catalog
from rampgate.core.snapshot import CatalogSnapshot

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "rampgate_catalog"
Listener = Callable[[CatalogSnapshot, CatalogSnapshot], None]


class CatalogWatcher:
    """The current :class:`CatalogSnapshot`, reloaded when the catalog changes."""

    def __init__(
        self,
        catalog: Catalog,
        poll_interval: float = 0.1,
        resync_seconds: float = 30.0,
    ) -> None:
        self.catalog = catalog
        self.poll_interval = poll_interval
        self.resync_seconds = resync_seconds
        self._version = 0
        # Read before the snapshot, so a change made while it loads is seen as a change.
        self._loaded_catalog_version = self._read_sqlite_catalog_version()
        self.snapshot: CatalogSnapshot = catalog.load_snapshot(self._version)
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` after every reload."""
        self._listeners.append(listener)

    def refresh(self) -> CatalogSnapshot:
        """Reload the snapshot now and return it."""
        with self._lock:
            self._version += 1
            new = self.catalog.load_snapshot(self._version)
            old = self.snapshot
            self.snapshot = new
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                logger.exception("catalog.listener_failed")
        return new

    def start(self) -> None:
        if self._thread is not None:
            return
        target = self._listen_postgres if self.catalog.is_postgres else self._poll_sqlite
        self._thread = threading.Thread(target=target, name="rampgate-catalog-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
            self.last_error = None
        except Exception as error:  # the database may be down; keep the last snapshot
            if self.last_error is None:
                logger.warning("catalog.reload_failed", extra={"error": str(error)})
            self.last_error = str(error)

    def _sqlite_file(self) -> str | None:
        """Return the path of a SQLite file catalog, None for PostgreSQL or an in-memory catalog.

        An in-memory catalog lives in one process, whose writes refresh it directly.
        """
        database = self.catalog.engine.url.database
        if self.catalog.is_postgres or not database or database == ":memory:":
            return None
        return database

    def _poll_sqlite(self) -> None:
        database = self._sqlite_file()
        if database is None:
            return
        last_resync = time.monotonic()
        connection = sqlite3.connect(database, timeout=5, check_same_thread=False)
        try:
            data_version = connection.execute("pragma data_version").fetchone()[0]
            catalog_version = _catalog_version(connection)
            if catalog_version is None or catalog_version != self._loaded_catalog_version:
                self._safe_refresh()
            while not self._stop.wait(self.poll_interval):
                # data_version moves on every commit of another connection, audit rows included.
                current = connection.execute("pragma data_version").fetchone()[0]
                changed = False
                if current != data_version:
                    data_version = current
                    version = _catalog_version(connection)
                    changed = version is None or version != catalog_version
                    catalog_version = version
                if changed or time.monotonic() - last_resync > self.resync_seconds:
                    last_resync = time.monotonic()
                    self._safe_refresh()
        finally:
            connection.close()

    def _read_sqlite_catalog_version(self) -> int | None:
        """Return the change count of a SQLite file catalog, None for other catalogs or when unreadable."""
        database = self._sqlite_file()
        if database is None:
            return None
        connection = sqlite3.connect(database, timeout=5)
        try:
            return _catalog_version(connection)
        finally:
            connection.close()

    def _listen_postgres(self) -> None:
        url = self.catalog.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"listen {NOTIFY_CHANNEL}")
                    if self.last_error is not None:
                        logger.info("catalog.listen_restored", extra={"target": _describe(url)})
                    # Changes made while the connection was down were not notified.
                    self._safe_refresh()
                    backoff = 0.1
                    last_resync = time.monotonic()
                    while not self._stop.is_set():
                        pending = False
                        for _ in connection.notifies(timeout=self.poll_interval * 5, stop_after=1):
                            pending = True
                        if pending:
                            # Coalesce a burst of notifications into one reload.
                            for _ in connection.notifies(timeout=0.01):
                                pass
                            self._safe_refresh()
                            last_resync = time.monotonic()
                        elif time.monotonic() - last_resync > self.resync_seconds:
                            self._safe_refresh()
                            last_resync = time.monotonic()
            except psycopg.Error as error:
                if self.last_error is None:
                    logger.warning(
                        "catalog.listen_failed",
                        extra={"error": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                               "target": _describe(url), "retry_in_seconds": backoff,
                               "hint": "catalog changes reach this process only after the connection is back"},
                    )
                self.last_error = str(error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


def _describe(url: sa.engine.URL) -> str:
    """Return ``host:port/database`` of the catalog, never its credentials."""
    return f"{url.host}:{url.port or 5432}/{url.database}"


def _catalog_version(connection: sqlite3.Connection) -> int | None:
    """Return the count of changes to the cached tables, None when it cannot be read now.

    The watcher reloads when the count is None (the file locked for longer
    than the timeout, say), because it cannot tell what changed.
    """
    try:
        row = connection.execute("select version from rampgate_catalog_version where id = 1").fetchone()
    except sqlite3.Error as error:
        logger.debug("catalog.version_unreadable", extra={"error": str(error)})
        return None
    return None if row is None else int(row[0])
