"""Judging a rollout stage: gate values against thresholds, with an optional Wilson bound."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import sqrt

from rampgate.core.plans import IMMEDIATE_METRICS, GateSpec, Plan

PASS = "pass"
FAIL = "fail"
PENDING = "pending"  # not enough evidence yet: the stage is extended, never promoted

WILSON_Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class StageMetrics:
    """What the enforced cohort did during the current stage.

    ``legitimate_actors`` are enforced actors that are not known abusers, and
    ``legitimate_blocked_actors`` the known-legitimate ones among them that
    were blocked at least once; their ratio is the false-positive rate.
    ``custom`` holds the values of ``sql`` gates, keyed by query.
    """

    decisions: int = 0
    blocked: int = 0
    actors: int = 0
    blocked_actors: int = 0
    legitimate_actors: int = 0
    legitimate_blocked_actors: int = 0
    complaints: int = 0
    errors: int = 0
    custom: dict[str, float] = field(default_factory=dict)

    @property
    def block_rate(self) -> float:
        return self.blocked / self.decisions if self.decisions else 0.0

    @property
    def blocked_actor_rate(self) -> float:
        return self.blocked_actors / self.actors if self.actors else 0.0

    @property
    def false_positive_rate(self) -> float:
        return self.legitimate_blocked_actors / self.legitimate_actors if self.legitimate_actors else 0.0


@dataclass(frozen=True, slots=True)
class GateResult:
    metric: str
    value: float | None
    max: float | None
    min: float | None
    status: str
    lower: float | None = None
    upper: float | None = None

    def to_dict(self) -> dict[str, object]:
        document: dict[str, object] = {"metric": self.metric, "value": self.value, "max": self.max, "status": self.status}
        if self.min is not None:
            document["min"] = self.min
        if self.lower is not None:
            document["interval"] = [self.lower, self.upper]
        return document

    def failure(self) -> dict[str, object]:
        """Return the ``failed_gate`` document: metric, value and the threshold crossed."""
        document: dict[str, object] = {"metric": self.metric, "value": self.value, "max": self.max}
        if self.min is not None:
            document["min"] = self.min
        return document


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of a stage at one check: ``pass``, ``fail`` or ``pending``."""

    status: str
    results: tuple[GateResult, ...]
    failed: GateResult | None = None


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion; (0, 1) without trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio_parts(metric: str, metrics: StageMetrics) -> tuple[int, int]:
    if metric == "block_rate":
        return metrics.blocked, metrics.decisions
    if metric == "blocked_actor_rate":
        return metrics.blocked_actors, metrics.actors
    return metrics.legitimate_blocked_actors, metrics.legitimate_actors


def _within(value: float, spec: GateSpec) -> bool:
    if spec.max is not None and value > spec.max:
        return False
    if spec.min is not None and value < spec.min:
        return False
    return True


def evaluate_gate(spec: GateSpec, metrics: StageMetrics, min_decisions: int) -> GateResult:
    """Judge one gate; see :func:`judge_stage` for the rules."""
    if spec.metric in IMMEDIATE_METRICS:
        value = float(metrics.complaints if spec.metric == "complaints" else metrics.errors)
        return GateResult(spec.metric, value, spec.max, spec.min, PASS if _within(value, spec) else FAIL)

    if spec.metric == "sql":
        custom = metrics.custom.get(spec.query or "")
        if custom is None or metrics.decisions < min_decisions:
            return GateResult(spec.label, custom, spec.max, spec.min, PENDING)
        return GateResult(spec.label, custom, spec.max, spec.min, PASS if _within(custom, spec) else FAIL)

    successes, trials = _ratio_parts(spec.metric, metrics)
    value = successes / trials if trials else 0.0
    if metrics.decisions < min_decisions:
        return GateResult(spec.metric, value, spec.max, spec.min, PENDING)

    if spec.bound != "wilson95":
        return GateResult(spec.metric, value, spec.max, spec.min, PASS if _within(value, spec) else FAIL)

    lower, upper = wilson_interval(successes, trials)
    status = PASS
    if spec.max is not None:
        if lower > spec.max:
            status = FAIL
        elif upper > spec.max:
            status = PENDING
    if spec.min is not None and status != FAIL:
        if upper < spec.min:
            status = FAIL
        elif lower < spec.min:
            status = PENDING
    return GateResult(spec.metric, value, spec.max, spec.min, status, lower, upper)


def judge_stage(plan: Plan, metrics: StageMetrics) -> Verdict:
    """Judge the current stage's gates.

    ``complaints`` and ``errors`` fail as soon as they cross. Ratio and ``sql``
    gates stay pending until the stage has ``min_decisions`` enforced
    decisions; with ``bound = "wilson95"`` a ratio gate passes when the upper
    end of the 95 % interval is within ``max``, fails when the lower end is
    beyond it, and stays pending in between. The verdict is ``fail`` if any
    gate failed (the first one is reported), ``pending`` if any is pending or
    the stage has fewer than ``min_decisions`` decisions, else ``pass``.
    """
    results = tuple(evaluate_gate(spec, metrics, plan.min_decisions) for spec in plan.gates)
    failed = next((r for r in results if r.status == FAIL), None)
    if failed is not None:
        return Verdict(FAIL, results, failed)
    if any(r.status == PENDING for r in results) or metrics.decisions < plan.min_decisions:
        return Verdict(PENDING, results)
    return Verdict(PASS, results)
