"""Actor ids with NUL are rejected before they reach a counter or the audit trail."""

from __future__ import annotations

import pytest

from rampgate.core.names import check_actor_id, parse_actor
from rampgate.errors import InvalidInput
from rampgate.gate import AsyncGate, memory_gate


def test_check_actor_id_rejects_nul() -> None:
    with pytest.raises(InvalidInput) as raised:
        check_actor_id("evil\x00")

    assert raised.value.field == "actor_id"
    assert "without NUL" in str(raised.value)


def test_parse_actor_rejects_nul() -> None:
    with pytest.raises(InvalidInput):
        parse_actor("user:a\x00b")


def test_gate_decide_rejects_nul() -> None:
    gate = memory_gate(watch=False, audit=False)
    try:
        with pytest.raises(InvalidInput):
            gate.decide("user", "evil\x00", "media_upload")
        assert gate.decide("user", "plain", "media_upload").allowed
    finally:
        gate.close()


async def test_async_gate_decide_rejects_nul() -> None:
    async with AsyncGate(database_url="sqlite://", counter_store="memory", watch=False, audit=False) as gate:
        with pytest.raises(InvalidInput):
            await gate.decide("user", "evil\x00", "media_upload")
