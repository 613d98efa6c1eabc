"""Deterministic, sticky percentage bucketing of actors.

The bucket of an actor is the unsigned 32-bit MurmurHash3 (x86, seed 0) of the
UTF-8 string ``"<group>:<actor_id>"``, then ``% 100 + 1``: a number from 1 to
100, the normalisation Unleash uses for gradual rollouts. An actor is in the
cohort when ``percentage > 0`` and ``bucket <= percentage``, so raising the
percentage only adds actors and lowering it only removes them.
"""

from __future__ import annotations

import mmh3

_hash = mmh3.hash


def assign_bucket(group: str, actor_id: str) -> int:
    """Return the bucket (1 to 100) of ``actor_id`` within ``group``."""
    return _hash(f"{group}:{actor_id}", 0, False) % 100 + 1


def is_in_cohort(group: str, actor_id: str, percentage: int) -> bool:
    """Return whether the actor is enforced at ``percentage`` (0 to 100)."""
    if percentage <= 0:
        return False
    if percentage >= 100:
        return True
    return _hash(f"{group}:{actor_id}", 0, False) % 100 + 1 <= percentage
