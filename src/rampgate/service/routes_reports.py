"""Admin API of reports over the audit trail, and the per-minute series the console charts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from rampgate.core.durations import parse_duration
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import default_plan
from rampgate.errors import InvalidInput
from rampgate.rollout import reports
from rampgate.rollout.store import RolloutStore
from rampgate.service.auth import Principal, require_admin_read
from rampgate.service.schemas import ERROR_RESPONSES
from rampgate.service.state import gate_of

router = APIRouter(tags=["reports"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require_admin_read)]
Since = Annotated[str, Query(max_length=32, description="how far back: a duration such as 15m, 1h, 7d")]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows at most")]


def since_moment(text: str) -> datetime:
    """Return the moment ``text`` before now; raise :class:`InvalidInput` naming ``since``."""
    seconds = parse_duration(text, "since")
    if seconds <= 0:
        raise InvalidInput("since", text, 'a duration longer than 0, such as "15m", "1h" or "7d"')
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def _engine(request: Request) -> Any:
    return gate_of(request).engine


@router.get("/v1/reports/top-blocked")
def top_blocked(request: Request, _: Reader, since: Since = "1h", limit: Limit = 10) -> list[dict[str, Any]]:
    """Return the actor and action pairs blocked most often, most blocked first."""
    return reports.top_blocked(_engine(request), since_moment(since), limit)


@router.get("/v1/reports/by-action")
def by_action(request: Request, _: Reader, since: Since = "1h", limit: Limit = 10) -> list[dict[str, Any]]:
    """Return enforced decisions, blocks and block rate per action, most blocked first."""
    return reports.by_action(_engine(request), since_moment(since), limit)


@router.get("/v1/reports/by-hour")
def by_hour(request: Request, _: Reader, since: Since = "1h", limit: Limit = 10) -> list[dict[str, Any]]:
    """Return enforced decisions, blocks and block rate per UTC hour: the ``limit`` most recent hours, oldest first."""
    return reports.by_hour(_engine(request), since_moment(since), limit)


@router.get("/v1/reports/recent")
def recent(request: Request, _: Reader, since: Since = "1h", limit: Limit = 10) -> list[dict[str, Any]]:
    """Return the newest blocked decisions, newest first."""
    return reports.recent_blocks(_engine(request), since_moment(since), limit)


@router.get("/v1/reports/timeseries")
def timeseries(request: Request, _: Reader, since: Since = "1h") -> dict[str, Any]:
    """Return enforced decisions and blocks per minute and action, with the block-rate gate's max to draw."""
    engine = _engine(request)
    record = RolloutStore(engine).latest(ENFORCEMENT_FLAG)
    plan = default_plan() if record is None else record.rollout.plan
    block_rate_max = next((gate.max for gate in plan.gates if gate.metric == "block_rate"), None)
    return {"minutes": reports.timeseries(engine, since_moment(since)), "block_rate_max": block_rate_max}
