"""Trust profiles for a replay, read from a CSV file.

Each row is ``actor_type,actor_id,tier[,enforcement_level]``, for example
``ip,h0127.prodigy.com,A`` or ``ip,198.18.2.41,C,E5``. A first row that starts
with ``actor_type`` is a header and is skipped. Actors without a row are
tier B at level E0, as in production.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rampgate.core.names import (
    DEFAULT_LEVEL,
    check_actor_id,
    check_actor_type,
    check_level,
    check_tier,
)
from rampgate.core.trust import TrustProfile
from rampgate.errors import ConfigurationError, InvalidInput


def load_trust(path: str | Path) -> list[TrustProfile]:
    """Read the trust file; raise :class:`ConfigurationError` naming the first bad row and field."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise ConfigurationError("--trust", str(path), f"a readable CSV file ({error.strerror or error})") from error
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigurationError("--trust", str(path), f"a UTF-8 CSV file ({error})") from error
    return parse_trust_rows(rows)


def parse_trust_rows(rows: list[list[str]]) -> list[TrustProfile]:
    """Check each row and build the profiles; a later row for the same actor replaces an earlier one."""
    profiles: dict[tuple[str, str], TrustProfile] = {}
    for number, row in enumerate(rows, 1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells):
            continue
        if number == 1 and cells[0] == "actor_type":
            continue
        field = f"--trust line {number}"
        if len(cells) not in (3, 4):
            raise ConfigurationError(field, ",".join(row), "actor_type,actor_id,tier[,enforcement_level]")

        try:
            actor_type = check_actor_type(cells[0], f"{field} actor_type")
            actor_id = check_actor_id(cells[1], f"{field} actor_id")
            tier = check_tier(cells[2], f"{field} tier")
            level = check_level(cells[3], f"{field} enforcement_level") if len(cells) == 4 else DEFAULT_LEVEL
        except InvalidInput as error:
            raise ConfigurationError(error.field, error.value, error.allowed) from error
        profiles[(actor_type, actor_id)] = TrustProfile(actor_type, actor_id, tier, level)
    return list(profiles.values())
