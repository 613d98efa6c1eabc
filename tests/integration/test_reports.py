"""Reports against the same questions asked in hand-written SQL on PostgreSQL, and their CLI output."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from rollout_traffic import open_migrated_catalog

from rampgate.catalog import schema
from rampgate.catalog.repository import Catalog
from rampgate.rollout import reports

pytestmark = pytest.mark.integration

ACTIONS = ("send_message", "media_upload", "api_call")
BOUNDARIES = (1800, 3600, 7200, 10800)


@pytest.fixture
def catalog(postgres_url: str) -> Iterator[Catalog]:
    catalog = open_migrated_catalog(postgres_url)
    _seed(catalog, datetime.now(timezone.utc))
    yield catalog
    catalog.engine.dispose()


def _ago(**delta: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


def _seed(catalog: Catalog, now: datetime) -> None:
    """Write about 3,000 audit rows over the last three hours, with a fixed seed."""
    chooser = random.Random(7)
    rows = []
    for number in range(3000):
        actor = f"u-{chooser.randrange(40):02d}"
        action = chooser.choice(ACTIONS)
        allowed = chooser.random() > (0.4 if actor < "u-10" else 0.05)
        age = chooser.uniform(1, 3 * 3600)
        if any(abs(age - edge) < 120 for edge in BOUNDARIES):
            # No row within two minutes of a report's window edge, so that the
            # few seconds between the report and the SQL never change a count.
            continue
        at = now - timedelta(seconds=age)
        tier = "C" if actor < "u-10" else "B"
        rows.append(
            {
                "actor_type": "user",
                "actor_id": actor,
                "action": action,
                "allowed": allowed,
                "tokens_available": 0,
                "tokens_consumed": int(allowed),
                "request_id": f"r-{number}",
                "context": {"tier": tier, "policy": f"tier:{tier}:{action}", "reason": "ok" if allowed else "limited"},
                "created_at": at,
            }
        )
    with catalog.engine.begin() as connection:
        connection.execute(sa.insert(schema.rate_limit_audits), rows)


def _sql(catalog: Catalog, query: str) -> list[Any]:
    with catalog.engine.connect() as connection:
        return list(connection.execute(sa.text(query)))


def test_reports_top_blocked_matches_sql(catalog: Catalog) -> None:
    expected = _sql(
        catalog,
        """
        select actor_type, actor_id, action,
               count(*) filter (where allowed = false) as blocked_count,
               count(*) filter (where allowed = true)  as allowed_count
          from public.rate_limit_audits where created_at > now() - interval '1 hour'
         group by actor_type, actor_id, action
        having count(*) filter (where allowed = false) > 0
         order by blocked_count desc, actor_type, actor_id, action limit 10
        """,
    )

    rows = reports.top_blocked(catalog.engine, _ago(hours=1), 10)

    assert len(rows) == 10
    assert [(r["actor_type"], r["actor_id"], r["action"], r["blocked"], r["allowed"]) for r in rows] == [
        tuple(row) for row in expected
    ]
    first = rows[0]
    assert first["block_rate"] == pytest.approx(first["blocked"] / (first["blocked"] + first["allowed"]), abs=1e-6)


def test_reports_by_action_matches_sql(catalog: Catalog) -> None:
    expected = _sql(
        catalog,
        """
        select action, count(*), count(*) filter (where not allowed)
          from rate_limit_audits where created_at > now() - interval '2 hours'
         group by action order by 3 desc, 2 desc, action
        """,
    )

    rows = reports.by_action(catalog.engine, _ago(hours=2), 10)

    assert [(r["action"], r["decisions"], r["blocked"]) for r in rows] == [tuple(row) for row in expected]
    assert sum(r["decisions"] for r in rows) > 1500


def test_reports_by_hour_matches_sql(catalog: Catalog) -> None:
    expected = _sql(
        catalog,
        """
        select date_trunc('hour', created_at at time zone 'UTC') as hour, count(*),
               count(*) filter (where not allowed)
          from rate_limit_audits where created_at > now() - interval '3 hours'
         group by 1 order by 1
        """,
    )

    rows = reports.by_hour(catalog.engine, _ago(hours=3), 10)

    assert [(r["hour"], r["decisions"], r["blocked"]) for r in rows] == [
        (row.hour.strftime("%Y-%m-%dT%H:%M:%SZ"), row[1], row[2]) for row in expected
    ]
    assert len(rows) in (3, 4)


def test_reports_by_hour_keeps_latest_hours(catalog: Catalog) -> None:
    rows = reports.by_hour(catalog.engine, _ago(hours=3), 2)

    everything = reports.by_hour(catalog.engine, _ago(hours=3), 10)
    assert rows == everything[-2:]


def test_reports_recent_matches_sql(catalog: Catalog) -> None:
    expected = _sql(
        catalog,
        """
        select actor_id, action, request_id, context->>'tier', context->>'policy'
          from rate_limit_audits where not allowed and created_at > now() - interval '1 hour'
         order by created_at desc, audit_id desc limit 5
        """,
    )

    rows = reports.recent_blocks(catalog.engine, _ago(hours=1), 5)

    assert [(r["actor_id"], r["action"], r["request_id"], r["tier"], r["policy"]) for r in rows] == [
        tuple(row) for row in expected
    ]
    assert all(r["reason"] == "limited" and r["at"].endswith("Z") for r in rows)


def test_reports_timeseries_matches_sql(catalog: Catalog) -> None:
    expected = _sql(
        catalog,
        """
        select date_trunc('minute', created_at at time zone 'UTC'), action, count(*),
               count(*) filter (where not allowed)
          from rate_limit_audits where created_at > now() - interval '30 minutes'
         group by 1, 2 order by 1, 2
        """,
    )

    rows = reports.timeseries(catalog.engine, _ago(minutes=30))

    assert sum(r["decisions"] for r in rows) == sum(row[2] for row in expected)
    assert [(r["action"], r["decisions"], r["blocked"]) for r in rows] == [
        (row[1], row[2], row[3]) for row in expected
    ]


def _rampgate(postgres_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = str(Path(sys.executable).with_name("rampgate"))
    return subprocess.run(
        [executable, *args],
        env={**os.environ, "RAMPGATE_DATABASE_URL": postgres_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_reports_cli_json(catalog: Catalog, postgres_url: str) -> None:
    result = _rampgate(postgres_url, "report", "top-blocked", "--since", "2h", "--limit", "3", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document == reports.top_blocked(catalog.engine, _ago(hours=2), 3)
    assert len(document) == 3


def test_reports_cli_csv(catalog: Catalog, postgres_url: str) -> None:
    result = _rampgate(postgres_url, "report", "by-action", "--csv")

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.stdout.splitlines()[0] == "action,decisions,blocked,block_rate"
    assert {row["action"] for row in rows} == set(ACTIONS)
    assert sum(int(row["decisions"]) for row in rows) > 500


def test_reports_cli_table(catalog: Catalog, postgres_url: str) -> None:
    result = _rampgate(postgres_url, "report", "recent", "--limit", "2")

    assert result.returncode == 0, result.stderr
    assert "recent blocks" in result.stdout
    assert "limited" in result.stdout


def test_reports_cli_rejects_bad_since(catalog: Catalog, postgres_url: str) -> None:
    result = _rampgate(postgres_url, "report", "by-hour", "--since", "yesterday")

    assert result.returncode == 2
    assert "--since" in result.stderr
    assert result.stdout == ""
