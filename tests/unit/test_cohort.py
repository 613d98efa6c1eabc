"""Cohort membership through Gate.decide, checked against MurmurHash3 written out in Python."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.gate import Gate

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF


def _rotate_left(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def _scramble(block: int) -> int:
    block = (block * _C1) & _MASK
    block = _rotate_left(block, 15)
    return (block * _C2) & _MASK


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 as Austin Appleby's reference C code computes it, unsigned."""
    length = len(data)
    body_length = length - length % 4
    state = seed & _MASK

    for offset in range(0, body_length, 4):
        state ^= _scramble(int.from_bytes(data[offset : offset + 4], "little"))
        state = _rotate_left(state, 13)
        state = (state * 5 + 0xE6546B64) & _MASK

    tail = data[body_length:]
    if tail:
        state ^= _scramble(int.from_bytes(tail, "little"))

    state ^= length
    state ^= state >> 16
    state = (state * 0x85EBCA6B) & _MASK
    state ^= state >> 13
    state = (state * 0xC2B2AE35) & _MASK
    state ^= state >> 16
    return state


def expected_in_cohort(group: str, actor_id: str, percentage: int) -> bool:
    bucket = murmur3_x86_32(f"{group}:{actor_id}".encode()) % 100 + 1
    return percentage > 0 and bucket <= percentage


@pytest.mark.parametrize(
    ("data", "seed", "digest"),
    [
        (b"", 0, 0),
        (b"", 1, 0x514E28B7),
        (b"hello", 0, 0x248BFA47),
        (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
        (b"AB12A:122", 0, None),
    ],
)
def test_murmur3_reference_vectors(data: bytes, seed: int, digest: int | None) -> None:
    """The Python twin reproduces the published vectors and the Unleash worked value (bucket 23)."""
    if digest is None:
        assert murmur3_x86_32(data, seed) % 100 + 1 == 23
    else:
        assert murmur3_x86_32(data, seed) == digest


def test_gate_enforces_cohort_at_30_percent(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=30)

    counts = {"enforce": 0, "shadow": 0}
    for number in range(4000):
        actor_id = f"actor-{number}"
        decision = gate.decide("user", actor_id, "send_message")
        expected_mode = "enforce" if expected_in_cohort(ENFORCEMENT_FLAG, actor_id, 30) else "shadow"
        assert decision.mode == expected_mode, actor_id
        assert decision.allowed
        counts[decision.mode] += 1

    # Both modes occur, in roughly the proportion of the percentage.
    assert 1000 < counts["enforce"] < 1400


def test_gate_cohort_uses_config_group(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=30, group="experiment-7")

    differs = 0
    for number in range(2000):
        actor_id = f"actor-{number}"
        decision = gate.decide("user", actor_id, "search")
        in_group = expected_in_cohort("experiment-7", actor_id, 30)
        assert decision.mode == ("enforce" if in_group else "shadow"), actor_id
        differs += in_group != expected_in_cohort(ENFORCEMENT_FLAG, actor_id, 30)

    # The group really changes who is enforced.
    assert differs > 100


def test_gate_cohort_unicode_actor(gate: Gate, set_flag: Callable[..., None]) -> None:
    set_flag(percentage=50)

    for actor_id in ("Дмитрий", "用户-7", "emoji-🙂", "é" * 256):
        decision = gate.decide("user", actor_id, "follow")
        expected = expected_in_cohort(ENFORCEMENT_FLAG, actor_id, 50)
        assert decision.mode == ("enforce" if expected else "shadow"), actor_id
