"""Gate judging: thresholds, evidence, immediate gates and the Wilson bound."""

from __future__ import annotations

import pytest

from rampgate.core.gates import FAIL, PASS, PENDING, StageMetrics, evaluate_gate, judge_stage, wilson_interval
from rampgate.core.plans import GateSpec, Plan, Stage


def _plan(*gates: GateSpec, min_decisions: int = 100) -> Plan:
    return Plan(stages=(Stage(1, 60), Stage(100, 0)), gates=gates, min_decisions=min_decisions)


def test_wilson_interval_known_values() -> None:
    lower, upper = wilson_interval(10, 100)

    # Reference values of the 95 % Wilson score interval for 10 of 100.
    assert lower == pytest.approx(0.0552, abs=1e-4)
    assert upper == pytest.approx(0.1744, abs=1e-4)


def test_wilson_interval_no_trials() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_all_successes() -> None:
    lower, upper = wilson_interval(20, 20)

    assert upper == pytest.approx(1.0)
    assert lower > 0.8


def test_gates_ratio_pending_below_min_decisions() -> None:
    metrics = StageMetrics(decisions=99, blocked=99)

    result = evaluate_gate(GateSpec("block_rate", max=0.05), metrics, 100)

    assert result.status == PENDING
    assert result.value == 1.0


def test_gates_ratio_pass_and_fail_at_min_decisions() -> None:
    passing = evaluate_gate(GateSpec("block_rate", max=0.05), StageMetrics(decisions=100, blocked=5), 100)
    failing = evaluate_gate(GateSpec("block_rate", max=0.05), StageMetrics(decisions=100, blocked=6), 100)

    assert passing.status == PASS  # max is inclusive
    assert failing.status == FAIL
    assert failing.value == pytest.approx(0.06)


def test_gates_min_threshold() -> None:
    spec = GateSpec("blocked_actor_rate", min=0.1)

    low = evaluate_gate(spec, StageMetrics(decisions=100, actors=10, blocked_actors=0), 100)
    high = evaluate_gate(spec, StageMetrics(decisions=100, actors=10, blocked_actors=1), 100)

    assert low.status == FAIL
    assert high.status == PASS


def test_gates_false_positive_rate_uses_legitimate_actors() -> None:
    metrics = StageMetrics(decisions=500, actors=200, legitimate_actors=100, legitimate_blocked_actors=2)

    result = evaluate_gate(GateSpec("false_positive_rate", max=0.01), metrics, 100)

    assert result.value == pytest.approx(0.02)
    assert result.status == FAIL


def test_gates_complaints_act_before_min_decisions() -> None:
    result = evaluate_gate(GateSpec("complaints", max=0), StageMetrics(decisions=3, complaints=1), 100)

    assert result.status == FAIL
    assert result.value == 1


def test_gates_errors_act_before_min_decisions() -> None:
    result = evaluate_gate(GateSpec("errors", max=0), StageMetrics(decisions=0, errors=2), 100)

    assert result.status == FAIL


def test_gates_wilson_pending_while_interval_straddles_max() -> None:
    # 6 of 100 is above 0.05, but the interval (about 0.028 to 0.125) straddles it.
    result = evaluate_gate(GateSpec("block_rate", max=0.05, bound="wilson95"), StageMetrics(decisions=100, blocked=6), 100)

    assert result.status == PENDING
    assert result.lower is not None and result.lower < 0.05
    assert result.upper is not None and result.upper > 0.05


def test_gates_wilson_fails_when_lower_end_above_max() -> None:
    result = evaluate_gate(
        GateSpec("block_rate", max=0.05, bound="wilson95"), StageMetrics(decisions=1000, blocked=100), 100
    )

    assert result.status == FAIL


def test_gates_wilson_passes_when_upper_end_within_max() -> None:
    result = evaluate_gate(
        GateSpec("block_rate", max=0.05, bound="wilson95"), StageMetrics(decisions=2000, blocked=20), 100
    )

    assert result.status == PASS


def test_gates_wilson_waits_for_min_decisions() -> None:
    # The interval would already be decisive, but the stage has too few decisions.
    result = evaluate_gate(
        GateSpec("block_rate", max=0.05, bound="wilson95"), StageMetrics(decisions=50, blocked=50), 100
    )

    assert result.status == PENDING


def test_gates_wilson_min_threshold() -> None:
    spec = GateSpec("block_rate", min=0.5, bound="wilson95")

    assert evaluate_gate(spec, StageMetrics(decisions=1000, blocked=100), 100).status == FAIL
    assert evaluate_gate(spec, StageMetrics(decisions=1000, blocked=900), 100).status == PASS
    assert evaluate_gate(spec, StageMetrics(decisions=100, blocked=52), 100).status == PENDING


def test_gates_sql_value_judged_after_min_decisions() -> None:
    spec = GateSpec("sql", max=3, query="select 4")

    early = evaluate_gate(spec, StageMetrics(decisions=10, custom={"select 4": 4.0}), 100)
    late = evaluate_gate(spec, StageMetrics(decisions=100, custom={"select 4": 4.0}), 100)
    missing = evaluate_gate(spec, StageMetrics(decisions=100), 100)

    assert early.status == PENDING
    assert late.status == FAIL
    assert missing.status == PENDING


def test_judge_stage_reports_first_failure() -> None:
    plan = _plan(GateSpec("block_rate", max=0.05), GateSpec("complaints", max=0))

    verdict = judge_stage(plan, StageMetrics(decisions=200, blocked=1, complaints=2))

    assert verdict.status == FAIL
    assert verdict.failed is not None
    assert verdict.failed.metric == "complaints"
    assert verdict.failed.failure() == {"metric": "complaints", "value": 2.0, "max": 0}


def test_judge_stage_pending_without_evidence() -> None:
    verdict = judge_stage(_plan(GateSpec("complaints", max=0)), StageMetrics(decisions=5))

    assert verdict.status == PENDING


def test_judge_stage_pass() -> None:
    plan = _plan(GateSpec("block_rate", max=0.05), GateSpec("errors", max=0))

    verdict = judge_stage(plan, StageMetrics(decisions=100, blocked=1))

    assert verdict.status == PASS
    assert [r.status for r in verdict.results] == [PASS, PASS]


def test_gate_result_document() -> None:
    result = evaluate_gate(GateSpec("block_rate", max=0.05), StageMetrics(decisions=100, blocked=1), 100)

    assert result.to_dict() == {"metric": "block_rate", "value": 0.01, "max": 0.05, "status": "pass"}
