"""Trust profiles: an actor's tier and enforcement level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rampgate.core.names import DEFAULT_LEVEL, DEFAULT_TIER


@dataclass(frozen=True, slots=True)
class TrustProfile:
    """One row of ``trust_profiles``. An actor without a row is tier B at level E0."""

    actor_type: str
    actor_id: str
    risk_tier: str = DEFAULT_TIER
    enforcement_level: str = DEFAULT_LEVEL
    trust_score: float | None = None
    signals: dict[str, Any] = field(default_factory=dict)
