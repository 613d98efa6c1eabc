"""Gate.decide on the shipped defaults: cohort modes, policy resolution, suspensions, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from rampgate import AsyncGate, Gate
from rampgate.catalog.database import MEMORY_URL
from rampgate.core.bucketing import is_in_cohort
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.policies import Policy
from rampgate.errors import InvalidInput, StoreError, StoreTimeout
from rampgate.gate import memory_gate


class BrokenStore:
    """A counter store whose every call fails, to drive the gate's fail-mode logic."""

    name = "broken"

    def __init__(self, error: StoreError) -> None:
        self.error = error
        self.calls = 0

    def consume(self, *args: Any) -> Any:
        self.calls += 1
        raise self.error

    async def aconsume(self, *args: Any) -> Any:
        self.calls += 1
        raise self.error

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def cohort_actor(percentage: int, inside: bool, group: str = ENFORCEMENT_FLAG) -> str:
    """Return the first id ``u-N`` that is (or is not) in the cohort at ``percentage``."""
    number = 0
    while is_in_cohort(group, f"u-{number}", percentage) is not inside:
        number += 1
    return f"u-{number}"


# -- the README scenario --------------------------------------------------------


def test_media_upload_sixth_blocked(gate: Gate, set_flag: Callable[..., None], clock: Any) -> None:
    set_flag(percentage=100)

    decisions = []
    for _ in range(6):
        decisions.append(gate.decide("user", "u-1", "media_upload"))
        clock.advance(0.05)

    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.mode == "enforce" and d.reason == "ok" for d in decisions[:5])
    sixth = decisions[5]
    assert sixth.reason == "limited"
    assert sixth.would_block
    assert sixth.policy == "tier:B:media_upload"
    assert (sixth.tier, sixth.limit, sixth.window_seconds) == ("B", 5, 60)
    assert 0 < sixth.retry_after <= 12
    assert sixth.retry_after == pytest.approx(12 - 0.05 * 5, abs=0.001)
    assert sixth.message() == "Too many requests. Try again in 12 seconds."
    assert sixth.to_dict("ru")["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."


def test_blocked_request_passes_at_retry_after(gate: Gate, set_flag: Callable[..., None], clock: Any) -> None:
    set_flag(percentage=100)
    for _ in range(5):
        gate.decide("user", "u-1", "media_upload")
    blocked = gate.decide("user", "u-1", "media_upload")
    assert blocked.retry_after == 12.0

    clock.advance(blocked.retry_after - 0.0011)
    assert not gate.decide("user", "u-1", "media_upload").allowed
    clock.advance(0.0011)
    assert gate.decide("user", "u-1", "media_upload").allowed


def test_zero_percent_shadows(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(enabled=True, percentage=0)

    decisions = [gate.decide("user", "u-2", "media_upload") for _ in range(6)]

    assert all(d.allowed for d in decisions)
    assert all(d.mode == "shadow" for d in decisions)
    assert [d.would_block for d in decisions] == [False] * 5 + [True]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[5].reason == "limited"
    assert decisions[5].message() is None


def test_disabled_flag_shadows(gate: Gate) -> None:
    """The seeded flag is disabled at 0 %: every governed action is shadowed."""
    decision = gate.decide("user", "u-2", "send_message")
    assert decision.allowed
    assert decision.mode == "shadow"
    assert not decision.in_cohort


def test_shadow_off_bypasses_uncounted(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=0, shadow=False)

    decisions = [gate.decide("user", "u-3", "media_upload") for _ in range(8)]

    assert all(d.allowed and d.mode == "bypass" and not d.would_block for d in decisions)
    assert all(d.remaining is None for d in decisions)
    assert len(gate.store) == 0, "a bypass decision touches no counter"

    set_flag(percentage=100)
    assert gate.decide("user", "u-3", "media_upload").remaining == 4


def test_shadow_off_cohort_still_enforced(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=50, shadow=False)
    inside = cohort_actor(50, inside=True)
    outside = cohort_actor(50, inside=False)

    assert gate.decide("user", inside, "media_upload").mode == "enforce"
    assert gate.decide("user", outside, "media_upload").mode == "bypass"


def test_ungoverned_action_enforced(gate: Gate, set_policy: Callable[..., Any]) -> None:
    """The seeded flag lists six actions and is disabled; a seventh action is enforced anyway."""
    set_policy(scope="global", action="export_data", limit_value=2, window_seconds=60)

    decisions = [gate.decide("user", "u-4", "export_data") for _ in range(3)]

    assert [d.mode for d in decisions] == ["enforce"] * 3
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[0].policy == "global:*:export_data"


def test_flag_without_actions_governs_everything(
    gate: Gate, set_flag: Callable[..., None], set_policy: Callable[..., Any]
) -> None:
    set_policy(scope="global", action="export_data", limit_value=2, window_seconds=60)
    set_flag(name="everything", create=True, enabled=True, percentage=0)

    assert gate.decide("user", "u-4", "export_data").mode == "shadow"


def test_no_policy_bypasses(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=100)

    for action in ("unknown_action", "media_upload.v2"):
        decision = gate.decide("user", "u-5", action)
        assert decision.allowed
        assert decision.mode == "bypass"
        assert decision.reason == "no_policy"
        assert decision.policy is None
        assert decision.retry_after == 0.0
    assert len(gate.store) == 0


# -- policy resolution ----------------------------------------------------------


def test_policy_actor_over_tier_over_global(
    gate: Gate, set_flag: Callable[..., None], set_policy: Callable[..., Any]
) -> None:
    set_flag(percentage=100)
    set_policy(scope="global", action="media_upload", limit_value=2, window_seconds=60)
    set_policy(scope="actor", actor_type="user", actor_id="u-vip", action="media_upload", limit_value=9,
               window_seconds=60)
    gate.catalog.set_trust("user", "u-trusted", tier="A", changed_by="test")
    gate.refresh()

    assert gate.decide("user", "u-vip", "media_upload").policy == "actor:user/u-vip:media_upload"
    assert gate.decide("user", "u-vip", "media_upload").limit == 9
    assert gate.decide("user", "u-plain", "media_upload").policy == "tier:B:media_upload"
    trusted = gate.decide("user", "u-trusted", "media_upload")
    assert (trusted.tier, trusted.policy, trusted.limit) == ("A", "tier:A:media_upload", 20)
    # The override is for user:u-vip only, not for another actor type with the same id.
    assert gate.decide("device", "u-vip", "media_upload").policy == "tier:B:media_upload"


def test_policy_disabled_rows_skipped(
    gate: Gate, set_flag: Callable[..., None], set_policy: Callable[..., Any]
) -> None:
    set_flag(percentage=100)
    set_policy(scope="global", action="media_upload", limit_value=2, window_seconds=60)
    set_policy(scope="actor", actor_type="user", actor_id="u-vip", action="media_upload", limit_value=9,
               window_seconds=60, enabled=False)
    set_policy(scope="tier", tier="B", action="media_upload", limit_value=5, window_seconds=60, enabled=False)

    decision = gate.decide("user", "u-vip", "media_upload")
    assert decision.policy == "global:*:media_upload"
    assert decision.limit == 2

    set_policy(scope="global", action="media_upload", limit_value=2, window_seconds=60, enabled=False)
    assert gate.decide("user", "u-vip", "media_upload").reason == "no_policy"


def test_trust_tier_d_hourly_limit(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=100)
    gate.catalog.set_trust("user", "u-d", tier="D", changed_by="test")
    gate.refresh()

    first = gate.decide("user", "u-d", "media_upload")
    second = gate.decide("user", "u-d", "media_upload")

    assert (first.allowed, first.policy, first.window_seconds) == (True, "tier:D:media_upload", 3600)
    assert not second.allowed
    assert second.retry_after == 3600.0
    assert second.message() == "Too many requests. Try again in 1 hour."


# -- suspension and capacity ------------------------------------------------------


def test_suspended_actor_blocked_uncounted(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=100)
    gate.catalog.set_trust("user", "u-bad", tier="C", level="E5", changed_by="test")
    gate.refresh()

    for action in ("media_upload", "send_message"):
        decision = gate.decide("user", "u-bad", action)
        assert not decision.allowed
        assert decision.reason == "suspended"
        assert decision.retry_after == 3600.0
        assert decision.mode == "enforce"
        assert decision.message() == "Your account is temporarily restricted. Try again in 1 hour."
    assert len(gate.store) == 0, "a suspended actor touches no counter"

    gate.catalog.set_trust("user", "u-bad", level="E4", changed_by="test")
    gate.refresh()
    assert gate.decide("user", "u-bad", "media_upload").remaining == 0  # tier C: 1 per 60 s


def test_suspended_actor_shadowed(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=0)
    gate.catalog.set_trust("user", "u-bad", level="E5", changed_by="test")
    gate.refresh()

    decision = gate.decide("user", "u-bad", "media_upload")
    assert decision.allowed
    assert decision.would_block
    assert (decision.mode, decision.reason) == ("shadow", "suspended")
    assert len(gate.store) == 0


def test_exceeds_capacity_consumes_nothing(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=100)

    decision = gate.decide("user", "u-6", "media_upload", cost=6)

    assert not decision.allowed
    assert decision.reason == "exceeds_capacity"
    assert decision.retry_after is None
    assert decision.retry_after_header is None
    assert decision.to_dict()["retry_after"] is None
    assert decision.message() == "This request is larger than the limit allows and cannot be accepted."
    assert gate.decide("user", "u-6", "media_upload", cost=5).remaining == 0


def test_cost_per_action_multiplies(gate: Gate, set_flag: Callable[..., None], set_policy: Callable[..., Any]) -> None:
    set_flag(percentage=100)
    set_policy(scope="tier", tier="B", action="media_upload", limit_value=10, window_seconds=60, cost_per_action=3)

    assert gate.decide("user", "u-7", "media_upload").remaining == 7
    assert gate.decide("user", "u-7", "media_upload", cost=2).remaining == 1
    assert gate.decide("user", "u-7", "media_upload", cost=4).reason == "exceeds_capacity"


@pytest.mark.parametrize(
    ("algorithm", "admitted"),
    [("token_bucket", 8), ("gcra", 8), ("fixed_window", 5), ("sliding_window", 5)],
)
def test_burst_sizes_bucket(
    gate: Gate, set_flag: Callable[..., None], set_policy: Callable[..., Any], algorithm: str, admitted: int
) -> None:
    """``burst`` sizes token_bucket and gcra; the window algorithms count ``limit`` per window."""
    set_flag(percentage=100)
    set_policy(scope="tier", tier="B", action="media_upload", algorithm=algorithm, limit_value=5,
               window_seconds=60, burst=8)

    decisions = [gate.decide("user", "u-8", "media_upload") for _ in range(admitted + 1)]

    assert [d.allowed for d in decisions] == [True] * admitted + [False]
    assert decisions[admitted - 1].remaining == 0
    if algorithm in ("token_bucket", "gcra"):
        assert decisions[admitted].retry_after == 12.0
        assert gate.decide("user", "u-9", "media_upload", cost=8).allowed
        assert gate.decide("user", "u-9", "media_upload", cost=9).reason == "exceeds_capacity"


# -- rollout percentages ----------------------------------------------------------


def test_action_percentages_override(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=0, action_percentages={"media_upload": 50})

    for number in range(400):
        actor_id = f"u-{number}"
        media = gate.decide("user", actor_id, "media_upload")
        message = gate.decide("user", actor_id, "send_message")
        assert media.mode == ("enforce" if is_in_cohort(ENFORCEMENT_FLAG, actor_id, 50) else "shadow")
        assert message.mode == "shadow"


def test_action_percentages_ignored_when_disabled(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(enabled=False, percentage=100, action_percentages={"media_upload": 100})

    assert gate.decide("user", "u-1", "media_upload").mode == "shadow"
    assert gate.decide("user", "u-1", "send_message").mode == "shadow"


def test_raising_percentage_keeps_enforced_actors(gate: Gate, set_flag: Callable[..., None]) -> None:
    enforced: set[str] = set()
    for percentage in (1, 10, 25, 50, 100):
        set_flag(percentage=percentage)
        now_enforced = {
            f"u-{n}" for n in range(500) if gate.decide("user", f"u-{n}", "search").mode == "enforce"
        }
        assert enforced <= now_enforced, percentage
        enforced = now_enforced
    assert len(enforced) == 500


# -- store failures ------------------------------------------------------------------


def failing_gate(clock: Any, recorder: Any, error: StoreError) -> Gate:
    gate = memory_gate(clock=clock, watch=False, recorder=recorder, store=BrokenStore(error))
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
    gate.refresh()
    return gate


@pytest.mark.parametrize("error", [StoreError("redis down"), StoreTimeout("redis slow")])
def test_store_failure_fails_open(clock: Any, recorder: Any, error: StoreError) -> None:
    with failing_gate(clock, recorder, error) as gate:
        decision = gate.decide("user", "u-1", "media_upload")

    assert decision.allowed
    assert decision.mode == "fail_open"
    assert decision.reason == "store_error"
    assert not decision.would_block
    assert decision.policy == "tier:B:media_upload"
    assert recorder.decisions == [decision]


def test_store_failure_fail_closed(clock: Any, recorder: Any) -> None:
    with failing_gate(clock, recorder, StoreError("redis down")) as gate:
        gate.catalog.set_policy(
            Policy(
                scope="tier", tier="B", action="media_upload", limit_value=5, window_seconds=60,
                fail_mode="closed",
            ),
            changed_by="test",
        )
        gate.refresh()
        closed = gate.decide("user", "u-1", "media_upload")
        still_open = gate.decide("user", "u-1", "send_message")

    assert not closed.allowed
    assert (closed.mode, closed.reason) == ("enforce", "store_error")
    assert closed.retry_after == 1.0
    assert closed.message() == "The service is temporarily unavailable. Try again in 1 second."
    assert still_open.allowed
    assert still_open.mode == "fail_open"


def test_store_failure_closed_shadow_allowed(clock: Any, recorder: Any) -> None:
    """Outside the cohort a request is never blocked, even by a closed policy."""
    with failing_gate(clock, recorder, StoreError("redis down")) as gate:
        gate.catalog.set_flag(ENFORCEMENT_FLAG, percentage=0, changed_by="test")
        gate.catalog.set_policy(
            Policy(
                scope="tier", tier="B", action="media_upload", limit_value=5, window_seconds=60,
                fail_mode="closed",
            ),
            changed_by="test",
        )
        gate.refresh()
        decision = gate.decide("user", "u-1", "media_upload")

    assert decision.allowed
    assert decision.mode == "fail_open"


async def test_async_gate_store_failure(clock: Any, recorder: Any) -> None:
    store = BrokenStore(StoreError("redis down"))
    async with AsyncGate(
        database_url=MEMORY_URL, clock=clock, watch=False, recorder=recorder, store=store
    ) as gate:
        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
        gate.refresh()
        decision = await gate.decide("user", "u-1", "media_upload")

    assert store.calls == 1
    assert (decision.allowed, decision.mode, decision.reason) == (True, "fail_open", "store_error")


async def test_async_gate_media_upload(clock: Any, recorder: Any) -> None:
    async with AsyncGate(database_url=MEMORY_URL, clock=clock, watch=False, recorder=recorder) as gate:
        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
        gate.refresh()
        decisions = [await gate.decide("user", "u-1", "media_upload") for _ in range(6)]

    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]


# -- input checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("robot", "u-1", "media_upload", 1), "actor_type"),
        (("user", "", "media_upload", 1), "actor_id"),
        (("user", "x" * 257, "media_upload", 1), "actor_id"),
        (("user", "u-1", "Media Upload", 1), "action"),
        (("user", "u-1", "a" * 65, 1), "action"),
        (("user", "u-1", "media_upload", 0), "cost"),
        (("user", "u-1", "media_upload", True), "cost"),
        (("user", "u-1", "media_upload", 1.5), "cost"),
    ],
)
def test_decide_rejects_invalid_input(gate: Gate, arguments: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        gate.decide(*arguments)
    assert raised.value.field == field
    assert len(gate.store) == 0


def test_decide_accepts_limits_of_input(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=100)
    assert gate.decide("user", "x" * 256, "search").allowed
    assert gate.decide("service", "s", "a" * 64).reason == "no_policy"
    assert gate.decide("org", "o-1", "a.b:c-d_0").reason == "no_policy"


# -- concurrency -------------------------------------------------------------------------


ALGORITHM_NAMES = ("token_bucket", "gcra", "fixed_window", "sliding_window")


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_threads_admit_exactly_limit(
    gate: Gate, set_flag: Callable[..., None], set_policy: Callable[..., Any], algorithm: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    set_flag(percentage=100)
    set_policy(scope="tier", tier="B", action="media_upload", algorithm=algorithm, limit_value=5,
               window_seconds=60)
    barrier = Barrier(50)

    def decide(_: int) -> bool:
        barrier.wait()
        return gate.decide("user", "u-race", "media_upload").allowed

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(decide, range(200)))

    assert results.count(True) == 5


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
async def test_tasks_admit_exactly_limit(clock: Any, recorder: Any, algorithm: str) -> None:
    async with AsyncGate(database_url=MEMORY_URL, clock=clock, watch=False, recorder=recorder) as gate:
        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
        gate.catalog.set_policy(
            Policy(scope="tier", tier="B", action="media_upload", algorithm=algorithm,
                             limit_value=5, window_seconds=60),
            changed_by="test",
        )
        gate.refresh()

        decisions = await asyncio.gather(*(gate.decide("user", "u-race", "media_upload") for _ in range(200)))

    assert sum(d.allowed for d in decisions) == 5
    assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1, 2, 3, 4]
