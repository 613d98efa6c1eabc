"""Bucketing: the Unleash conformance cases, the rollout distribution and stickiness."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rampgate.core.bucketing import assign_bucket, is_in_cohort
from rampgate.core.flags import ENFORCEMENT_FLAG

CONFORMANCE_DIR = Path(__file__).resolve().parents[1] / "data" / "unleash-conformance"
CONFORMANCE_FILES = (
    "03-gradual-rollout-user-id-strategy.json",
    "10-flexible-rollout-strategy.json",
    "12-custom-stickiness.json",
)


def _skip_reason(strategies: list[dict[str, Any]], context: dict[str, Any]) -> str | None:
    """Return why a case cannot run through rampgate's bucketing, None when it can."""
    if len(strategies) != 1:
        return "several strategies on one toggle (a 'default' strategy): rampgate has one rule per flag"
    strategy = strategies[0]
    if strategy.get("constraints"):
        return "strategy constraints: rampgate has none"

    name = strategy["name"]
    stickiness = strategy["parameters"].get("stickiness", "userId")
    if name == "gradualRolloutUserId" or stickiness in ("userId", "default"):
        if "userId" not in context:
            return (
                "no userId in the context: Unleash then falls back to sessionId or a random bucket, "
                "while a rampgate actor always has an id"
            )
        return None
    if stickiness == "sessionId":
        return "session-id stickiness: rampgate buckets actor ids only"
    if stickiness == "random":
        return "random stickiness: rampgate bucketing is deterministic"
    if stickiness not in context.get("properties", {}):
        return f"no {stickiness!r} in the context: the strategy is off, while a rampgate actor always has an id"
    return None


def _unleash_cases() -> list[Any]:
    """Turn each case of the copied files into pytest parameters ``(group, actor_id, percentage, expected)``."""
    cases = []
    for file_name in CONFORMANCE_FILES:
        document = json.loads((CONFORMANCE_DIR / file_name).read_text(encoding="utf-8"))
        features = {feature["name"]: feature for feature in document["state"]["features"]}

        for case in document["tests"]:
            feature = features[case["toggleName"]]
            strategies = feature["strategies"]
            context = case["context"]
            case_id = f"{file_name[:2]}: {case['description']}"

            reason = _skip_reason(strategies, context)
            if reason is not None:
                cases.append(pytest.param(None, None, None, None, id=case_id, marks=pytest.mark.skip(reason=reason)))
                continue

            parameters = strategies[0]["parameters"]
            percentage = int(parameters.get("percentage", parameters.get("rollout")))
            stickiness = parameters.get("stickiness", "userId")
            if stickiness in ("userId", "default"):
                actor_id = context["userId"]
            else:
                actor_id = context["properties"][stickiness]
            cases.append(
                pytest.param(parameters["groupId"], actor_id, percentage, case["expectedResult"], id=case_id)
            )

        if document.get("variantTests"):
            cases.append(
                pytest.param(
                    None, None, None, None, id=f"{file_name[:2]}: variantTests",
                    marks=pytest.mark.skip(reason="variants: rampgate flags have no variants"),
                )
            )
    return cases


UNLEASH_CASES = _unleash_cases()


def test_unleash_cases_applicable_count() -> None:
    """Twelve cases run: 4 of file 03, 4 of file 10 and 4 of file 12; a broken filter would skip them."""
    applicable = [case for case in UNLEASH_CASES if not case.marks]
    assert len(applicable) == 12


@pytest.mark.parametrize(("group", "actor_id", "percentage", "expected"), UNLEASH_CASES)
def test_bucketing_unleash_conformance(group: str, actor_id: str, percentage: int, expected: bool) -> None:
    assert is_in_cohort(group, actor_id, percentage) is expected


@pytest.mark.parametrize(
    ("group", "actor_id", "bucket"),
    [
        ("AB12A", "122", 23),
        ("AB12A", "155", 100),
        ("Feature.flexibleRollout.10", "174", 10),
        ("Feature.flexibleRollout.10", "499", 32),
    ],
)
def test_assign_bucket_worked_values(group: str, actor_id: str, bucket: int) -> None:
    assert assign_bucket(group, actor_id) == bucket


def test_assign_bucket_unsigned_utf8() -> None:
    """The hash of the UTF-8 bytes b"g:\\xd0\\xb6" is 0x8976a2bf: bucket 4 read unsigned, 8 read signed."""
    assert assign_bucket("g", "\u0436") == 0x8976A2BF % 100 + 1 == 4


@pytest.mark.parametrize("percentage", [-5, 0])
def test_is_in_cohort_zero_percent_excludes_everyone(percentage: int) -> None:
    assert not any(is_in_cohort("g", f"u-{number}", percentage) for number in range(1000))


def test_is_in_cohort_hundred_percent_includes_everyone() -> None:
    assert all(is_in_cohort("g", f"u-{number}", 100) for number in range(1000))


def test_is_in_cohort_matches_bucket() -> None:
    for number in range(2000):
        bucket = assign_bucket("g", f"u-{number}")
        for percentage in (1, bucket - 1, bucket, 99):
            expected = 0 < percentage and bucket <= percentage
            assert is_in_cohort("g", f"u-{number}", percentage) is expected, (number, bucket, percentage)


def test_cohort_share_within_half_point() -> None:
    """For ids u-0 … u-99999 the share enforced at P % is within 0.5 points of P, for every P."""
    actor_ids = [f"u-{number}" for number in range(100_000)]
    buckets = Counter(assign_bucket(ENFORCEMENT_FLAG, actor_id) for actor_id in actor_ids)

    shares = {}
    enforced = 0
    for percentage in range(101):
        enforced += buckets[percentage]
        shares[percentage] = 100 * enforced / len(actor_ids)

    for percentage in (1, 30, 99):
        cohort = sum(1 for actor_id in actor_ids if is_in_cohort(ENFORCEMENT_FLAG, actor_id, percentage))
        assert 100 * cohort / len(actor_ids) == shares[percentage]
    too_far = {p: round(share - p, 3) for p, share in shares.items() if abs(share - p) > 0.5}
    assert not too_far, f"share minus percentage, in points, where it exceeds 0.5: {too_far}"


@given(
    group=st.text(min_size=1, max_size=30),
    actor_id=st.text(min_size=1, max_size=256),
    low=st.integers(0, 100),
    high=st.integers(0, 100),
)
def test_raising_percentage_keeps_cohort(group: str, actor_id: str, low: int, high: int) -> None:
    """An actor in the cohort at some percentage stays in it at every higher percentage."""
    low, high = min(low, high), max(low, high)
    if is_in_cohort(group, actor_id, low):
        assert is_in_cohort(group, actor_id, high)
    assert is_in_cohort(group, actor_id, high) is (high > 0 and assign_bucket(group, actor_id) <= high)


@given(group=st.text(min_size=1, max_size=30), actor_id=st.text(min_size=1, max_size=256))
def test_assign_bucket_range_and_stickiness(group: str, actor_id: str) -> None:
    bucket = assign_bucket(group, actor_id)
    assert 1 <= bucket <= 100
    assert assign_bucket(group, actor_id) == bucket
