"""Simultaneous appeals: one actor gets one open appeal per action, whatever the timing."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from alembic import command

from rampgate.catalog.appeals import AppealRepository
from rampgate.catalog.database import _alembic_config, create_catalog_engine, migrate
from rampgate.errors import Conflict

pytestmark = pytest.mark.integration

FILINGS = 8
# The first round opens the pool's connections one by one; later rounds race.
ROUNDS = 6


def file_at_once(repository: AppealRepository) -> tuple[list[int], int]:
    """File FILINGS appeals for one actor and action from as many threads released together."""
    barrier = threading.Barrier(FILINGS)
    filed: list[int] = []
    conflicts: list[Conflict] = []

    def file_one(number: int) -> None:
        barrier.wait()
        try:
            appeal = repository.file("user", "u-racing", "dm_send", f"appeal {number}", require_recent_block=False)
        except Conflict as conflict:
            conflicts.append(conflict)
        else:
            filed.append(appeal["appeal_id"])

    threads = [threading.Thread(target=file_one, args=(number,)) for number in range(FILINGS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return filed, len(conflicts)


def test_postgres_keeps_one_open_appeal(postgres_url: str) -> None:
    engine = create_catalog_engine(postgres_url)
    migrate(engine)
    repository = AppealRepository(engine)

    for _ in range(ROUNDS):
        filed, conflicts = file_at_once(repository)

        assert len(filed) == 1
        assert conflicts == FILINGS - 1
        repository.reject(filed[0], resolved_by="test", note=None, via="test")
    engine.dispose()

    with psycopg.connect(postgres_url) as connection:
        open_appeals = connection.execute("select count(*) from appeals where status = 'open'").fetchone()
    assert open_appeals == (0,)


def test_sqlite_keeps_one_open_appeal(tmp_path: Path) -> None:
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine)
    repository = AppealRepository(engine)

    filed, conflicts = file_at_once(repository)

    assert len(filed) == 1
    assert conflicts == FILINGS - 1
    engine.dispose()


def test_migration_names_existing_duplicates(postgres_url: str) -> None:
    engine = create_catalog_engine(postgres_url)
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "0004")
        for _ in range(2):
            connection.exec_driver_sql(
                "insert into appeals (actor_type, actor_id, action, text, status, created_at) "
                "values ('user', 'u-twice', 'dm_send', 'again', 'open', now())"
            )

    with pytest.raises(Exception, match="user:u-twice on dm_send"):
        migrate(engine)
    engine.dispose()
