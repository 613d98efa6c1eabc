"""Rollout plans: the stages a flag ramps through and the gates each stage must pass."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from typing import Any

import yaml  # type: ignore[import-untyped]

from rampgate.core.durations import parse_duration
from rampgate.errors import ConfigurationError

METRICS: tuple[str, ...] = (
    "false_positive_rate",
    "block_rate",
    "blocked_actor_rate",
    "complaints",
    "errors",
    "sql",
)
# Gates on counts act as soon as they cross; ratio gates wait for min_decisions.
IMMEDIATE_METRICS = frozenset({"complaints", "errors"})
BOUNDS: tuple[str, ...] = ("wilson95",)
ON_FAILURE: tuple[str, ...] = ("rollback", "pause")
APPROVALS: tuple[str, ...] = ("auto", "manual")


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of the ramp: enforce ``percentage`` for at least ``bake_seconds``."""

    percentage: int
    bake_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class GateSpec:
    """A threshold on one metric; ``max`` and ``min`` are inclusive."""

    metric: str
    max: float | None = None
    min: float | None = None
    bound: str | None = None
    query: str | None = None

    @property
    def label(self) -> str:
        return self.metric if self.metric != "sql" else f"sql:{(self.query or '')[:40]}"


@dataclass(frozen=True, slots=True)
class Plan:
    """Stages, gates and the rules that connect them."""

    stages: tuple[Stage, ...]
    gates: tuple[GateSpec, ...]
    on_failure: str = "rollback"
    approval: str = "auto"
    min_decisions: int = 100
    check_interval_seconds: float = 60.0


def default_plan() -> Plan:
    """1 % for 1 h, 10 % for 1 h, 25 % for 2 h, 50 % for 4 h, then 100 %."""
    return Plan(
        stages=(
            Stage(1, 3600.0),
            Stage(10, 3600.0),
            Stage(25, 7200.0),
            Stage(50, 14400.0),
            Stage(100, 0.0),
        ),
        gates=(
            GateSpec("false_positive_rate", max=0.01),
            GateSpec("block_rate", max=0.05),
            GateSpec("complaints", max=0),
            GateSpec("errors", max=0),
        ),
    )


def _number(value: object, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(field_name, value, "a number")
    return float(value)


def plan_from_dict(document: dict[str, Any]) -> Plan:
    """Validate a plan document (TOML or YAML keys) and build the :class:`Plan`."""
    if not isinstance(document, dict):
        raise ConfigurationError("plan", document, "a table of plan keys")
    known = {"stages", "gates", "on_failure", "approval", "min_decisions", "check_interval", "check_interval_seconds"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise ConfigurationError("plan key", unknown[0], "one of " + ", ".join(sorted(known)))

    defaults = default_plan()

    on_failure = document.get("on_failure", defaults.on_failure)
    if on_failure not in ON_FAILURE:
        raise ConfigurationError("on_failure", on_failure, "rollback or pause")
    approval = document.get("approval", defaults.approval)
    if approval not in APPROVALS:
        raise ConfigurationError("approval", approval, "auto or manual")

    min_decisions = document.get("min_decisions", defaults.min_decisions)
    if isinstance(min_decisions, bool) or not isinstance(min_decisions, int) or min_decisions < 0:
        raise ConfigurationError("min_decisions", min_decisions, "a whole number of 0 or more")

    interval_text = document.get("check_interval", document.get("check_interval_seconds", "1m"))
    check_interval = parse_duration(interval_text, "check_interval")
    if check_interval <= 0:
        raise ConfigurationError("check_interval", interval_text, "a duration longer than 0, such as 1m")

    stages = _parse_stages(document.get("stages"), defaults)
    gates = _parse_gates(document.get("gates"), defaults)
    return Plan(stages, gates, on_failure, approval, min_decisions, check_interval)


def _parse_stages(raw: object, defaults: Plan) -> tuple[Stage, ...]:
    if raw is None:
        return defaults.stages
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError("stages", raw, "a non-empty list of [[stages]] tables")

    stages: list[Stage] = []
    for number, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise ConfigurationError(f"stages[{number}]", item, "a table with percentage and bake")
        extra = sorted(set(item) - {"percentage", "bake", "bake_seconds"})
        if extra:
            raise ConfigurationError(f"stages[{number}] key", extra[0], "percentage, bake")
        percentage = item.get("percentage")
        if isinstance(percentage, bool) or not isinstance(percentage, int) or not 1 <= percentage <= 100:
            raise ConfigurationError(f"stages[{number}].percentage", percentage, "an integer from 1 to 100")
        if stages and percentage <= stages[-1].percentage:
            raise ConfigurationError(
                f"stages[{number}].percentage",
                percentage,
                f"more than the previous stage's {stages[-1].percentage}: stages must go up",
            )
        bake = parse_duration(item.get("bake", item.get("bake_seconds", 0)), f"stages[{number}].bake")
        stages.append(Stage(percentage, bake))
    return tuple(stages)


def _parse_gates(raw: object, defaults: Plan) -> tuple[GateSpec, ...]:
    if raw is None:
        return defaults.gates
    if not isinstance(raw, list):
        raise ConfigurationError("gates", raw, "a list of [[gates]] tables")

    gates: list[GateSpec] = []
    for number, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise ConfigurationError(f"gates[{number}]", item, "a table with metric and max or min")
        extra = sorted(set(item) - {"metric", "max", "min", "bound", "query"})
        if extra:
            raise ConfigurationError(f"gates[{number}] key", extra[0], "metric, max, min, bound, query")
        metric = item.get("metric")
        if metric not in METRICS:
            raise ConfigurationError(f"gates[{number}].metric", metric, "one of " + ", ".join(METRICS))
        maximum = None if item.get("max") is None else _number(item["max"], f"gates[{number}].max")
        minimum = None if item.get("min") is None else _number(item["min"], f"gates[{number}].min")
        if maximum is None and minimum is None:
            raise ConfigurationError(f"gates[{number}]", metric, "a gate with max or min")
        bound = item.get("bound")
        if bound is not None and bound not in BOUNDS:
            raise ConfigurationError(f"gates[{number}].bound", bound, "wilson95, or no bound")
        if bound is not None and metric in IMMEDIATE_METRICS | {"sql"}:
            raise ConfigurationError(f"gates[{number}].bound", bound, "a bound only on a ratio metric")
        query = item.get("query")
        if metric == "sql" and (not isinstance(query, str) or not query.strip()):
            raise ConfigurationError(f"gates[{number}].query", query, "a SQL query returning one number")
        if metric != "sql" and query is not None:
            raise ConfigurationError(f"gates[{number}].query", query, "a query only with metric = \"sql\"")
        gates.append(GateSpec(metric, maximum, minimum, bound, query))
    return tuple(gates)


def parse_plan(text: str, fmt: str = "toml") -> Plan:
    """Parse plan text in ``toml``, ``yaml`` or ``json``."""
    try:
        if fmt == "toml":
            document = tomllib.loads(text)
        elif fmt in ("yaml", "yml"):
            document = yaml.safe_load(text) or {}
        elif fmt == "json":
            document = json.loads(text)
        else:
            raise ConfigurationError("plan format", fmt, "toml, yaml or json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigurationError("plan file", str(error).splitlines()[0], f"valid {fmt.upper()}") from error
    return plan_from_dict(document)


def plan_to_document(plan: Plan) -> dict[str, Any]:
    """Return the plan as stored in the ``rollouts.plan`` column."""
    return {
        "stages": [{"percentage": s.percentage, "bake_seconds": s.bake_seconds} for s in plan.stages],
        "gates": [
            {k: v for k, v in (("metric", g.metric), ("max", g.max), ("min", g.min), ("bound", g.bound), ("query", g.query)) if v is not None}
            for g in plan.gates
        ],
        "on_failure": plan.on_failure,
        "approval": plan.approval,
        "min_decisions": plan.min_decisions,
        "check_interval_seconds": plan.check_interval_seconds,
    }
