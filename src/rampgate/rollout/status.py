"""The status document: the flag, its newest rollout with live gate values, and the runbook checklist.

``rampgate status --json`` and ``GET /v1/status`` return :func:`build_status`
as it is. Every ``at`` is ISO 8601 UTC ending in ``Z``.
"""

from __future__ import annotations

import time
from typing import Any

from rampgate.catalog.repository import Catalog, isoformat
from rampgate.core.flags import ENFORCEMENT_FLAG, Flag
from rampgate.core.gates import judge_stage
from rampgate.core.plans import Plan, default_plan
from rampgate.core.rollout import NONE, Transition
from rampgate.rollout.lease import ControllerLease
from rampgate.rollout.operations import stage_metrics
from rampgate.rollout.store import RolloutRecord, RolloutStore, to_datetime

VALUE_DIGITS = 6


def flag_summary(flag: Flag) -> dict[str, Any]:
    return {
        "name": flag.name,
        "enabled": flag.enabled,
        "percentage": flag.percentage,
        "action_percentages": flag.action_percentages,
    }


def transition_summary(transition: Transition) -> dict[str, Any]:
    return {
        "at": isoformat(to_datetime(transition.at)),
        "event": transition.event,
        "percentage": transition.percentage,
        "reason": transition.reason,
    }


def checklist(plan: Plan, transitions: list[Transition]) -> list[dict[str, Any]]:
    """Return the runbook's steps for the plan, each with the time it happened or None.

    The first stage is "enabled at P %" (the ``started`` transition); each
    later one is "ramped to P %" (the first ``promoted`` transition to it).
    """
    steps: list[dict[str, Any]] = []
    for number, stage in enumerate(plan.stages, 1):
        if number == 1:
            step = f"enabled at {stage.percentage} %"
            reached = next((t for t in transitions if t.event == "started"), None)
        else:
            step = f"ramped to {stage.percentage} %"
            reached = next(
                (t for t in transitions if t.event == "promoted" and t.stage == number), None
            )
        steps.append({"step": step, "at": None if reached is None else isoformat(to_datetime(reached.at))})
    return steps


def empty_rollout() -> dict[str, Any]:
    """Return the rollout document of a flag that never had a rollout."""
    return {
        "state": NONE,
        "stage": None,
        "percentage": None,
        "bake_left_seconds": None,
        "gates": [],
        "failed_gate": None,
        "transitions": [],
    }


def _rounded(value: Any) -> Any:
    return round(value, VALUE_DIGITS) if isinstance(value, float) else value


def _is_watched(catalog: Catalog, flag_name: str, now: float) -> bool:
    """True while a controller holds an unexpired lease on the flag, so its bake time runs."""
    lease = ControllerLease(catalog.engine, flag_name, "status", clock=lambda: now)
    return lease.current_holder() is not None


def rollout_document(catalog: Catalog, record: RolloutRecord | None, now: float) -> dict[str, Any]:
    """Return ``status.rollout``: state, stage, bake left, live gates, failed gate and transitions."""
    if record is None:
        return empty_rollout()

    rollout = record.rollout
    verdict = judge_stage(rollout.plan, stage_metrics(catalog.engine, catalog, record, now))
    gates = []
    for result in verdict.results:
        gate = result.to_dict()
        gate["value"] = _rounded(gate["value"])
        gates.append(gate)
    failed_gate = None
    if rollout.failed_gate is not None:
        failed_gate = {key: _rounded(value) for key, value in rollout.failed_gate.items()}

    return {
        "state": rollout.state,
        "stage": rollout.stage,
        "percentage": rollout.percentage,
        "bake_left_seconds": round(rollout.bake_left(now, watched=_is_watched(catalog, rollout.flag_name, now))),
        "gates": gates,
        "failed_gate": failed_gate,
        "transitions": [transition_summary(t) for t in rollout.transitions],
    }


def build_status(catalog: Catalog, flag_name: str = ENFORCEMENT_FLAG, now: float | None = None) -> dict[str, Any]:
    """Return the status document of ``flag_name``; raise :class:`NotFound` for an unknown flag."""
    now = time.time() if now is None else now
    # The rollout is read before the flag: the controller commits a transition
    # and its flag change together, so a flag read afterwards is at least as new.
    record = RolloutStore(catalog.engine).latest(flag_name)
    flag = catalog.get_flag(flag_name)
    plan = default_plan() if record is None else record.rollout.plan
    transitions = [] if record is None else record.rollout.transitions
    return {
        "flag": flag_summary(flag),
        "rollout": rollout_document(catalog, record, now),
        "checklist": checklist(plan, transitions),
    }


def list_rollouts(catalog: Catalog, now: float | None = None) -> list[dict[str, Any]]:
    """Return the newest rollout of every flag that had one, each with its ``flag`` name."""
    now = time.time() if now is None else now
    documents = []
    for record in RolloutStore(catalog.engine).latest_per_flag():
        document = {"flag": record.flag_name}
        document.update(rollout_document(catalog, record, now))
        documents.append(document)
    return documents


def rollout_of_flag(catalog: Catalog, flag_name: str, now: float | None = None) -> dict[str, Any]:
    """Return the newest rollout of one flag with its ``flag`` name (state ``none`` when there is none)."""
    now = time.time() if now is None else now
    catalog.get_flag(flag_name)
    document: dict[str, Any] = {"flag": flag_name}
    document.update(rollout_document(catalog, RolloutStore(catalog.engine).latest(flag_name), now))
    return document
