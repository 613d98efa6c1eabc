"""Plan files: the keys, the default plan and every rejection."""

from __future__ import annotations

import pytest

from rampgate.core.plans import GateSpec, Plan, Stage, default_plan, parse_plan, plan_from_dict, plan_to_document
from rampgate.errors import ConfigurationError, InvalidInput

FULL_PLAN = """
on_failure = "pause"
approval = "manual"
min_decisions = 50
check_interval = "30s"

[[stages]]
percentage = 1
bake = "90s"

[[stages]]
percentage = 10
bake = "1h30m"

[[stages]]
percentage = 100

[[gates]]
metric = "block_rate"
max = 0.05
bound = "wilson95"

[[gates]]
metric = "complaints"
max = 0

[[gates]]
metric = "sql"
query = "select 1"
min = 1
"""


def test_plans_default_matches_runbook() -> None:
    plan = default_plan()

    assert [stage.percentage for stage in plan.stages] == [1, 10, 25, 50, 100]
    assert [stage.bake_seconds for stage in plan.stages] == [3600, 3600, 7200, 14400, 0]
    assert plan.on_failure == "rollback"
    assert plan.approval == "auto"
    assert plan.min_decisions == 100
    assert plan.check_interval_seconds == 60
    assert {gate.metric: gate.max for gate in plan.gates} == {
        "false_positive_rate": 0.01,
        "block_rate": 0.05,
        "complaints": 0,
        "errors": 0,
    }


def test_plans_toml_full() -> None:
    plan = parse_plan(FULL_PLAN, "toml")

    assert plan.on_failure == "pause"
    assert plan.approval == "manual"
    assert plan.min_decisions == 50
    assert plan.check_interval_seconds == 30
    assert plan.stages == (Stage(1, 90), Stage(10, 5400), Stage(100, 0))
    assert plan.gates[0] == GateSpec("block_rate", max=0.05, bound="wilson95")
    assert plan.gates[1] == GateSpec("complaints", max=0)
    assert plan.gates[2] == GateSpec("sql", min=1, query="select 1")


def test_plans_yaml_same_keys() -> None:
    text = """
on_failure: rollback
min_decisions: 10
check_interval: 2s
stages:
  - {percentage: 5, bake: 3s}
  - {percentage: 100}
gates:
  - {metric: errors, max: 0}
"""
    plan = parse_plan(text, "yaml")

    assert plan.stages == (Stage(5, 3), Stage(100, 0))
    assert plan.gates == (GateSpec("errors", max=0),)
    assert plan.check_interval_seconds == 2


def test_plans_missing_keys_take_defaults() -> None:
    plan = parse_plan('approval = "manual"', "toml")

    assert plan.stages == default_plan().stages
    assert plan.gates == default_plan().gates
    assert plan.approval == "manual"


def test_plans_document_round_trip() -> None:
    plan = parse_plan(FULL_PLAN, "toml")

    assert plan_from_dict(plan_to_document(plan)) == plan


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("[[stages]]\npercentage = 10\n[[stages]]\npercentage = 5\n", "stages[2].percentage", 5),
        ("[[stages]]\npercentage = 10\n[[stages]]\npercentage = 10\n", "stages[2].percentage", 10),
        ("[[stages]]\npercentage = 101\n", "stages[1].percentage", 101),
        ("[[stages]]\npercentage = -1\n", "stages[1].percentage", -1),
        ("[[stages]]\npercentage = 0\n", "stages[1].percentage", 0),
        ('[[stages]]\npercentage = "10"\n', "stages[1].percentage", "10"),
        ("[[stages]]\nbake = \"1h\"\n", "stages[1].percentage", None),
        ('[[stages]]\npercentage = 1\nbake = "an hour"\n', "stages[1].bake", "an hour"),
        ('[[stages]]\npercentage = 1\nbake = "1x"\n', "stages[1].bake", "1x"),
        ('[[stages]]\npercentage = 1\nbake = -5\n', "stages[1].bake", -5),
        ('[[stages]]\npercentage = 1\nsoak = "1h"\n', "stages[1] key", "soak"),
        ("stages = []\n", "stages", []),
        ('check_interval = "soon"\n', "check_interval", "soon"),
        ('check_interval = "0s"\n', "check_interval", "0s"),
        ('[[gates]]\nmetric = "latency"\nmax = 1\n', "gates[1].metric", "latency"),
        ('[[gates]]\nmetric = "block_rate"\n', "gates[1]", "block_rate"),
        ('[[gates]]\nmetric = "block_rate"\nmax = "5%"\n', "gates[1].max", "5%"),
        ('[[gates]]\nmetric = "block_rate"\nmax = 0.1\nbound = "wilson99"\n', "gates[1].bound", "wilson99"),
        ('[[gates]]\nmetric = "complaints"\nmax = 0\nbound = "wilson95"\n', "gates[1].bound", "wilson95"),
        ('[[gates]]\nmetric = "sql"\nmax = 1\n', "gates[1].query", None),
        ('[[gates]]\nmetric = "block_rate"\nmax = 1\nquery = "select 1"\n', "gates[1].query", "select 1"),
        ('[[gates]]\nmetric = "block_rate"\nmaximum = 1\n', "gates[1] key", "maximum"),
        ('on_failure = "ignore"\n', "on_failure", "ignore"),
        ('approval = "sometimes"\n', "approval", "sometimes"),
        ("min_decisions = -1\n", "min_decisions", -1),
        ("min_decisions = 1.5\n", "min_decisions", 1.5),
        ('stage = "typo"\n', "plan key", "stage"),
    ],
)
def test_plans_rejects_invalid(text: str, field: str, value: object) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_plan(text, "toml")

    assert raised.value.field == field
    assert raised.value.value == value
    assert field in str(raised.value)


def test_plans_rejects_malformed_toml() -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_plan("[[stages]\npercentage = 1", "toml")

    assert raised.value.field == "plan file"


def test_plans_rejects_malformed_yaml() -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_plan("stages: [1, 2", "yaml")

    assert raised.value.field == "plan file"


def test_plans_rejects_unknown_format() -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_plan("", "ini")

    assert raised.value.field == "plan format"


def test_plans_rejects_non_table_document() -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_plan("- 1\n- 2\n", "yaml")

    assert raised.value.field == "plan"


def test_plans_plan_is_value() -> None:
    assert isinstance(default_plan(), Plan)
    assert default_plan() == default_plan()
