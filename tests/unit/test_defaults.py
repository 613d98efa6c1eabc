"""The shipped defaults: what ``rampgate migrate`` seeds into SQLite, and the same values in core."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from rampgate.catalog.database import create_catalog_engine, head_revision, migrate
from rampgate.core.defaults import GOVERNED_ACTIONS, default_flag, default_policies

# The product contract's table, written out again here: (limit, window seconds) for tiers A, B, C, D.
SHIPPED_LIMITS = {
    "create_post": ((50, 60), (20, 60), (5, 60), (1, 3600)),
    "send_message": ((100, 60), (60, 60), (15, 60), (1, 3600)),
    "follow": ((40, 60), (15, 60), (3, 60), (1, 3600)),
    "media_upload": ((20, 60), (5, 60), (1, 60), (1, 3600)),
    "search": ((300, 60), (100, 60), (30, 60), (1, 3600)),
    "api_call": ((500, 60), (200, 60), (50, 60), (2, 3600)),
}
SHIPPED_ACTIONS = ["create_post", "send_message", "follow", "media_upload", "search", "api_call"]
EXPECTED_POLICY_ROWS = sorted(
    ("tier", tier, None, None, action, "token_bucket", limit, window, None, 1, "open", 1)
    for action, limits in SHIPPED_LIMITS.items()
    for tier, (limit, window) in zip("ABCD", limits)
)


def dump(path: Path) -> list[str]:
    """Every row of every table, as SQL text, for before/after comparisons."""
    with sqlite3.connect(path) as connection:
        return list(connection.iterdump())


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "rampgate.db"
    engine = create_catalog_engine(f"sqlite:///{path}")
    before, after = migrate(engine)
    engine.dispose()
    assert (before, after) == (None, head_revision())
    return path


def test_migrate_seeds_one_flag(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "select flag_name, enabled, rollout_percentage, config from feature_flags"
        ).fetchall()

    assert len(rows) == 1
    name, enabled, percentage, config = rows[0]
    assert (name, enabled, percentage) == ("rate_limit_enforcement", 0, 0)
    assert json.loads(config) == {"actions": SHIPPED_ACTIONS}


def test_migrate_seeds_24_tier_policies(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "select scope, tier, actor_type, actor_id, action, algorithm, limit_value, window_seconds, burst,"
            " cost_per_action, fail_mode, enabled from rate_limit_configs"
        ).fetchall()

    assert len(rows) == 24
    assert sorted(rows) == EXPECTED_POLICY_ROWS


def test_migrate_seeds_nothing_else(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        for table in ("trust_profiles", "rate_limit_audits", "rate_limit_decision_stats", "appeals", "rollouts",
                      "config_changes"):
            assert connection.execute(f"select count(*) from {table}").fetchone() == (0,), table


def test_migrate_twice_is_noop(database: Path) -> None:
    before = dump(database)

    engine = create_catalog_engine(f"sqlite:///{database}")
    revisions = migrate(engine)
    engine.dispose()

    assert revisions == (head_revision(), head_revision())
    assert dump(database) == before


def test_sqlite_wal_and_busy_timeout(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        assert connection.execute("pragma journal_mode").fetchone() == ("wal",)

    engine = create_catalog_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("pragma busy_timeout").scalar() == 5000
    engine.dispose()


def test_core_defaults_match_contract() -> None:
    flag = default_flag()
    assert (flag.name, flag.enabled, flag.percentage) == ("rate_limit_enforcement", False, 0)
    assert flag.config == {"actions": SHIPPED_ACTIONS}
    assert list(GOVERNED_ACTIONS) == SHIPPED_ACTIONS

    rows = sorted(
        (p.scope, p.tier, p.actor_type, p.actor_id, p.action, p.algorithm, p.limit_value, p.window_seconds,
         p.burst, p.cost_per_action, p.fail_mode, int(p.enabled))
        for p in default_policies()
    )
    assert rows == EXPECTED_POLICY_ROWS
