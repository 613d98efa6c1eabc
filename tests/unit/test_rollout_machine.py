"""The rollout state machine on a manual clock: bake, evidence, promotion, approval, pause and failure."""

from __future__ import annotations

import pytest

from rampgate.core.gates import StageMetrics
from rampgate.core.plans import GateSpec, Plan, Stage
from rampgate.core.rollout import ABORTED, COMPLETED, PAUSED, ROLLED_BACK, RUNNING, FlagChange, Rollout

T0 = 1_700_000_000.0
GOOD = StageMetrics(decisions=100, blocked=1, actors=20, legitimate_actors=20)
BAD = StageMetrics(decisions=100, blocked=50, actors=20, blocked_actors=10, legitimate_actors=20)


def _plan(approval: str = "auto", on_failure: str = "rollback") -> Plan:
    return Plan(
        stages=(Stage(1, 60), Stage(10, 60), Stage(100, 0)),
        gates=(GateSpec("block_rate", max=0.05), GateSpec("complaints", max=0)),
        on_failure=on_failure,
        approval=approval,
        min_decisions=100,
        check_interval_seconds=5,
    )


def test_machine_start_enables_first_stage() -> None:
    rollout, transitions, change = Rollout.start("flag", _plan(), T0)

    assert rollout.state == RUNNING
    assert rollout.stage == 1
    assert change == FlagChange(True, 1)
    assert [t.event for t in transitions] == ["started"]
    assert transitions[0].percentage == 1


def test_machine_waits_for_bake() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)

    transitions, change = rollout.step(T0 + 59, GOOD)

    assert transitions == []
    assert change is None
    assert rollout.bake_left(T0 + 59) == pytest.approx(1)


def test_machine_promotes_after_bake() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)

    transitions, change = rollout.step(T0 + 60, GOOD)

    assert [t.event for t in transitions] == ["promoted"]
    assert change == FlagChange(True, 10)
    assert rollout.stage == 2
    assert rollout.baked_seconds == 0
    assert rollout.evidence_since == T0 + 60


def test_machine_completes_on_last_stage_without_bake() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)
    rollout.step(T0 + 60, GOOD)

    transitions, change = rollout.step(T0 + 120, GOOD)

    assert [t.event for t in transitions] == ["promoted", "completed"]
    assert change == FlagChange(True, 100)
    assert rollout.state == COMPLETED
    assert rollout.step(T0 + 200, GOOD) == ([], None)


def test_machine_extends_once_without_evidence() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)
    thin = StageMetrics(decisions=10)

    first, _ = rollout.step(T0 + 60, thin)
    second, _ = rollout.step(T0 + 120, thin)
    third, change = rollout.step(T0 + 180, GOOD)

    assert [t.event for t in first] == ["extended"]
    assert first[0].reason == "10 of 100 enforced decisions"
    assert second == []
    assert [t.event for t in third] == ["promoted"]
    assert change == FlagChange(True, 10)


def test_machine_rolls_back_on_failed_gate_during_bake() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)

    transitions, change = rollout.step(T0 + 10, BAD)

    assert [t.event for t in transitions] == ["rolled_back"]
    assert change == FlagChange(False, 0)
    assert rollout.state == ROLLED_BACK
    assert rollout.failed_gate == {"metric": "block_rate", "value": 0.5, "max": 0.05}
    assert transitions[0].reason == "gate block_rate = 0.5 > max 0.05"


def test_machine_complaint_acts_at_once() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)

    transitions, _ = rollout.step(T0 + 1, StageMetrics(decisions=3, complaints=1))

    assert [t.event for t in transitions] == ["rolled_back"]
    assert rollout.failed_gate is not None
    assert rollout.failed_gate["metric"] == "complaints"


def test_machine_on_failure_pause_keeps_flag() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(on_failure="pause"), T0)

    transitions, change = rollout.step(T0 + 10, BAD)

    assert [t.event for t in transitions] == ["paused"]
    assert change is None
    assert rollout.state == PAUSED
    assert rollout.failed_gate is not None
    assert rollout.step(T0 + 100, GOOD) == ([], None)


def test_machine_resume_after_failure_starts_fresh_evidence() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(on_failure="pause"), T0)
    rollout.step(T0 + 10, BAD)

    transitions = rollout.resume(T0 + 30)

    assert [t.event for t in transitions] == ["resumed"]
    assert rollout.failed_gate is None
    assert rollout.evidence_since == T0 + 30
    assert rollout.baked(T0 + 30) == pytest.approx(10)


def test_machine_pause_resume_keeps_bake_time() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)
    rollout.step(T0 + 20, GOOD)

    rollout.pause(T0 + 40)
    paused_left = rollout.bake_left(T0 + 1000)
    rollout.resume(T0 + 1000)

    assert paused_left == pytest.approx(20)
    assert rollout.bake_left(T0 + 1010) == pytest.approx(10)
    assert rollout.step(T0 + 1019, GOOD) == ([], None)
    transitions, _ = rollout.step(T0 + 1020, GOOD)
    assert [t.event for t in transitions] == ["promoted"]


def test_machine_manual_approval_waits_for_advance() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(approval="manual"), T0)

    transitions, change = rollout.step(T0 + 60, GOOD)

    assert transitions == []
    assert change is None
    assert rollout.awaiting_approval
    assert rollout.stage == 1

    transitions, change = rollout.advance(T0 + 90, "approved")

    assert [t.event for t in transitions] == ["promoted"]
    assert transitions[0].reason == "approved"
    assert change == FlagChange(True, 10)
    assert not rollout.awaiting_approval


def test_machine_manual_approval_not_needed_to_complete() -> None:
    plan = Plan(stages=(Stage(1, 60), Stage(100, 60)), gates=(), approval="manual", min_decisions=1)
    rollout, _, _ = Rollout.start("flag", plan, T0)
    rollout.step(T0 + 60, GOOD)
    rollout.advance(T0 + 61)

    transitions, _ = rollout.step(T0 + 121, GOOD)

    assert [t.event for t in transitions] == ["completed"]


def test_machine_advance_forces_promotion() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)

    transitions, change = rollout.advance(T0 + 1)

    assert [t.event for t in transitions] == ["promoted"]
    assert change == FlagChange(True, 10)


def test_machine_abort_disables_flag() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)

    transitions, change = rollout.abort(T0 + 5)

    assert [t.event for t in transitions] == ["aborted"]
    assert change == FlagChange(False, 0)
    assert rollout.state == ABORTED
    assert rollout.abort(T0 + 6) == ([], None)


def test_machine_flag_disabled_elsewhere_aborts_without_change() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)
    rollout.pause(T0 + 5)

    transitions = rollout.flag_disabled_elsewhere(T0 + 6)

    assert [t.event for t in transitions] == ["aborted"]
    assert rollout.state == ABORTED


def test_machine_reattach_skips_unwatched_time() -> None:
    rollout, _, _ = Rollout.start("flag", _plan(), T0)
    rollout.checkpoint(T0 + 30)

    rollout.reattach(T0 + 500)

    assert rollout.baked(T0 + 500) == pytest.approx(30)
    assert rollout.bake_left(T0 + 510) == pytest.approx(20)


def test_machine_rejects_stage_outside_plan() -> None:
    with pytest.raises(ValueError, match="stage 4"):
        Rollout("flag", _plan(), stage=4)
