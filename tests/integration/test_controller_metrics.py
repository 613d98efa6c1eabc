"""Gate metrics computed with SQL from hand-written audit rows, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from rollout_traffic import open_migrated_catalog

from rampgate.catalog import schema
from rampgate.catalog.repository import Catalog
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import GateSpec, default_plan
from rampgate.rollout.metrics import compute_stage_metrics

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 3, 1, 12, 0, 30, tzinfo=timezone.utc)
INSIDE = SINCE + timedelta(minutes=5)
BEFORE = SINCE - timedelta(minutes=5)


@pytest.fixture(params=["postgresql", "sqlite"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/metrics.db"
    catalog = open_migrated_catalog(url)
    yield catalog
    catalog.engine.dispose()


def _audit(actor_id: str, allowed: bool, *, tier: str = "B", action: str = "send_message",
           at: datetime = INSIDE, reason: str | None = None) -> dict[str, Any]:
    return {
        "actor_type": "user",
        "actor_id": actor_id,
        "action": action,
        "allowed": allowed,
        "tokens_available": 0,
        "tokens_consumed": 1 if allowed else 0,
        "request_id": None,
        "context": {"tier": tier, "policy": f"tier:{tier}:{action}", "reason": reason or ("ok" if allowed else "limited")},
        "created_at": at,
    }


def _appeal(actor_id: str, status: str, at: datetime, action: str = "send_message") -> dict[str, Any]:
    return {"actor_type": "user", "actor_id": actor_id, "action": action, "text": "please", "status": status, "created_at": at}


def _stat(minute: datetime, mode: str, in_cohort: bool, decisions: int, action: str = "send_message") -> dict[str, Any]:
    return {
        "minute": minute,
        "action": action,
        "tier": "B",
        "mode": mode,
        "in_cohort": in_cohort,
        "reason": "store_error" if mode == "fail_open" else "ok",
        "decisions": decisions,
        "would_block": 0,
    }


def _seed(catalog: Catalog) -> None:
    audits = [
        _audit("a1", True, tier="A"),
        _audit("a1", False, tier="A"),  # tier A in the audit row: known legitimate, blocked
        _audit("a2", True),  # tier A in trust_profiles, never blocked
        _audit("a3", False),  # upheld appeal: known legitimate, blocked
        _audit("a4", False),  # level E5: known abuser
        _audit("a5", False, tier="D"),  # tier D: known abuser
        _audit("a6", False),  # neither
        _audit("a9", False, reason="store_error"),  # a closed-fail store error
        _audit("a7", False, at=BEFORE),  # before the stage
        _audit("a8", False, action="not_governed"),  # an action the flag does not govern
    ]
    profiles = [
        {"actor_type": "user", "actor_id": "a2", "risk_tier": "A", "enforcement_level": "E0", "signals": {},
         "updated_at": BEFORE},
        {"actor_type": "user", "actor_id": "a4", "risk_tier": "B", "enforcement_level": "E5", "signals": {},
         "updated_at": BEFORE},
    ]
    appeals = [
        _appeal("a3", "upheld", BEFORE),
        _appeal("a6", "open", INSIDE),  # the one complaint of the stage
        _appeal("a7", "open", BEFORE),
        _appeal("a8", "open", INSIDE, action="not_governed"),
    ]
    minute = SINCE.replace(second=0)
    stats = [
        _stat(minute + timedelta(minutes=1), "fail_open", True, 3),
        _stat(minute, "fail_open", True, 17),  # the minute the stage began in, before it began
        _stat(minute + timedelta(minutes=1), "fail_open", False, 5),
        _stat(minute + timedelta(minutes=1), "shadow", True, 7),
        _stat(minute - timedelta(minutes=10), "fail_open", True, 11),
        _stat(minute, "fail_open", True, 13, action="not_governed"),
    ]
    with catalog.engine.begin() as connection:
        connection.execute(sa.insert(schema.rate_limit_audits), audits)
        connection.execute(sa.insert(schema.trust_profiles), profiles)
        connection.execute(sa.insert(schema.appeals), appeals)
        connection.execute(sa.insert(schema.rate_limit_decision_stats), stats)


def test_metrics_cohort_counts(catalog: Catalog) -> None:
    _seed(catalog)

    metrics = compute_stage_metrics(catalog.engine, catalog.get_flag(ENFORCEMENT_FLAG), default_plan(), SINCE)

    assert metrics.decisions == 8
    assert metrics.blocked == 6
    assert metrics.actors == 7
    assert metrics.blocked_actors == 6
    assert metrics.legitimate_actors == 5
    assert metrics.legitimate_blocked_actors == 2
    assert metrics.false_positive_rate == pytest.approx(0.4)
    assert metrics.block_rate == pytest.approx(0.75)


def test_metrics_complaints_and_errors(catalog: Catalog) -> None:
    _seed(catalog)

    metrics = compute_stage_metrics(catalog.engine, catalog.get_flag(ENFORCEMENT_FLAG), default_plan(), SINCE)

    assert metrics.complaints == 1
    assert metrics.errors == 3 + 1


def test_metrics_window_end(catalog: Catalog) -> None:
    _seed(catalog)

    metrics = compute_stage_metrics(
        catalog.engine, catalog.get_flag(ENFORCEMENT_FLAG), default_plan(), SINCE, INSIDE - timedelta(seconds=1)
    )

    assert metrics.decisions == 0
    assert metrics.complaints == 0


def test_metrics_empty_stage(catalog: Catalog) -> None:
    metrics = compute_stage_metrics(catalog.engine, catalog.get_flag(ENFORCEMENT_FLAG), default_plan(), SINCE)

    assert metrics.decisions == 0
    assert metrics.actors == 0
    assert metrics.complaints == 0
    assert metrics.errors == 0


def test_metrics_sql_gate_value(catalog: Catalog) -> None:
    _seed(catalog)
    query = "select count(*) from rate_limit_audits where allowed = false and created_at >= :since"
    plan = default_plan()
    plan = type(plan)(plan.stages, (GateSpec("sql", max=1, query=query),))

    metrics = compute_stage_metrics(catalog.engine, catalog.get_flag(ENFORCEMENT_FLAG), plan, SINCE)

    assert metrics.custom == {query: 7.0}


def test_metrics_sql_gate_rejects_writes(catalog: Catalog) -> None:
    query = "update feature_flags set rollout_percentage = 100"
    plan = default_plan()
    plan = type(plan)(plan.stages, (GateSpec("sql", max=1, query=query),))

    metrics = compute_stage_metrics(catalog.engine, catalog.get_flag(ENFORCEMENT_FLAG), plan, SINCE)

    assert metrics.custom == {}
    assert catalog.get_flag(ENFORCEMENT_FLAG).percentage == 0
