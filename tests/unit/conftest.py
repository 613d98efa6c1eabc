"""Fixtures of the unit tests: a gate on an in-memory catalog, driven by the manual clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rampgate.core.decision import Decision
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.policies import Policy
from rampgate.gate import Gate, memory_gate


class ListRecorder:
    """Keeps every decision the gate records, in order."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None:
        self.decisions.append(decision)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def recorder() -> ListRecorder:
    return ListRecorder()


@pytest.fixture
def gate(clock: Callable[[], float], recorder: ListRecorder) -> Iterator[Gate]:
    """A gate on a fresh in-memory catalog seeded with the defaults, with memory counters."""
    gate = memory_gate(clock=clock, watch=False, recorder=recorder)
    yield gate
    gate.close()


@pytest.fixture
def set_flag(gate: Gate) -> Callable[..., None]:
    """Change a flag (``rate_limit_enforcement`` unless ``name`` is given) and reload the gate's snapshot."""

    def set_flag(
        enabled: bool = True,
        percentage: int = 100,
        name: str = ENFORCEMENT_FLAG,
        create: bool = False,
        **config: Any,
    ) -> None:
        current = None if create else gate.catalog.get_flag(name)
        merged = dict(current.config) if current is not None else {}
        merged.update(config)
        gate.catalog.set_flag(
            name, enabled=enabled, percentage=percentage, config=merged, changed_by="test", create=create
        )
        gate.refresh()

    return set_flag


@pytest.fixture
def set_policy(gate: Gate) -> Callable[..., Policy]:
    """Store a policy (keyword arguments of :class:`Policy`) and reload the gate's snapshot."""

    def set_policy(**fields: Any) -> Policy:
        stored = gate.catalog.set_policy(Policy(**fields), changed_by="test")
        gate.refresh()
        return stored

    return set_policy
