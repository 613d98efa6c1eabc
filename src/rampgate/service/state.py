"""Accessors of the objects that routes share through ``app.state``: the gate, the metrics, the appeal repository."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request

from rampgate.catalog.appeals import AppealRepository
from rampgate.core.decision import Decision
from rampgate.core.messages import negotiate_language
from rampgate.gate import AsyncGate
from rampgate.service.metrics import ServiceMetrics


def gate_of(request: Request) -> AsyncGate:
    return request.app.state.gate


def metrics_of(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def appeals_of(request: Request) -> AppealRepository:
    return request.app.state.appeals


def language_of(request: Request) -> str:
    """Return ``en`` or ``ru`` from the request's ``Accept-Language``."""
    return negotiate_language(request.headers.get("accept-language"))


async def decide(
    request: Request,
    actor_type: str,
    actor_id: str,
    action: str,
    cost: int = 1,
    *,
    request_id: str | None = None,
    context: dict[str, Any] | None = None,
) -> Decision:
    """Decide one request with the application's gate and count it in the metrics."""
    gate = gate_of(request)
    started = time.perf_counter()
    decision = await gate.decide(actor_type, actor_id, action, cost, request_id=request_id, context=context)
    elapsed = time.perf_counter() - started
    metrics_of(request).observe_decision(decision, elapsed, gate.settings.counter_store)
    return decision
