"""Engines for the catalog database and the migrations that shape it."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from rampgate.errors import ConfigurationError, StoreError
from rampgate.settings import redact_url_password

logger = logging.getLogger(__name__)

MEMORY_URL = "sqlite://"
SQLITE_BUSY_TIMEOUT_MS = 5000


def normalise_url(url: str) -> str:
    """Map the URLs operators write to the SQLAlchemy dialects rampgate uses."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:") or url.startswith("postgresql+psycopg://"):
        return url
    raise ConfigurationError(
        "RAMPGATE_DATABASE_URL",
        redact_url_password(url),
        "sqlite:///PATH, sqlite:// (in memory) or postgresql://USER@HOST/DB",
    )


def create_catalog_engine(url: str) -> Engine:
    """Open an engine: SQLite in WAL mode with a busy timeout, or PostgreSQL through psycopg 3."""
    url = normalise_url(url)
    if url.startswith("postgresql"):
        return sa.create_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True)

    if url in ("sqlite://", "sqlite:///:memory:"):
        engine = sa.create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        path = url.split("sqlite:///", 1)[-1]
        if path and not path.startswith(":"):
            Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )

    @sa.event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute(f"pragma busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if url != "sqlite://":
            cursor.execute("pragma journal_mode = wal")
            cursor.execute("pragma synchronous = normal")
        cursor.close()

    return engine


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "rampgate.catalog:migrations")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", "rampgate.catalog:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def catalog_location(engine: Engine) -> str:
    """Return ``host:port`` of a PostgreSQL catalog or the SQLite file, for messages; never the credentials."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return url.database or "memory"
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def unreachable_catalog(engine: Engine, error: sa.exc.DBAPIError, doing: str = "") -> StoreError:
    """Return a one-line :class:`StoreError` for a failed connection, naming the catalog and the setting."""
    reason = " ".join(str(error.orig).split())
    return StoreError(
        f"{doing}cannot reach the catalog database at {catalog_location(engine)} ({reason}); "
        "check RAMPGATE_DATABASE_URL"
    )


def current_revision(engine: Engine) -> str | None:
    """Return the schema revision; the first connection of a command, so a failure to connect raises StoreError."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        raise unreachable_catalog(engine, error) from error


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Upgrade the schema to the newest revision; return ``(before, after)`` revisions."""
    try:
        with engine.begin() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(_alembic_config(connection), "head")
            after = MigrationContext.configure(connection).get_current_revision()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
        raise unreachable_catalog(engine, error, "migration failed: ") from error
    if before != after:
        logger.info("catalog.migrated", extra={"from_revision": before, "to_revision": after})
    return before, str(after)


def check_schema(engine: Engine) -> None:
    """Raise :class:`ConfigurationError` unless the schema is at the newest revision."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        raise ConfigurationError(
            "catalog schema revision", current, f"revision {head}: run `rampgate migrate` first"
        )
