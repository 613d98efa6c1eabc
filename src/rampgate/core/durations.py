"""Durations written the way operators write them: ``90s``, ``30m``, ``2h``, ``1d``."""

from __future__ import annotations

import re

from rampgate.errors import InvalidInput

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}

# 100 years of 365.25 days. A longer duration is a typo, and subtracting it
# from the current time would leave the range of ``datetime``.
MAX_DURATION_SECONDS = 100 * 365.25 * 86400.0
_TOO_LONG = "a duration of at most 100 years (3155760000 seconds)"


def parse_duration(text: object, field: str = "duration") -> float:
    """Return the seconds in ``text``: a number of seconds or a string such as ``"1h"``.

    A compound form such as ``"1h30m"`` is accepted as well. Anything else,
    such as ``None`` from a plan file that left the key empty, or a duration
    longer than :data:`MAX_DURATION_SECONDS`, raises :class:`InvalidInput`
    naming ``field``.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not 0 <= text < float("inf"):
            raise InvalidInput(field, text, "a duration of 0 or more seconds")
        if text > MAX_DURATION_SECONDS:
            raise InvalidInput(field, text, _TOO_LONG)
        return float(text)
    if not isinstance(text, str):
        raise InvalidInput(field, text, 'a duration such as "90s", "30m", "2h" or a number of seconds')

    position = 0
    total = 0.0
    matched = False
    text_stripped = text.strip()
    while position < len(text_stripped):
        match = _DURATION_RE.match(text_stripped, position)
        if match is None or match.end() == position:
            raise InvalidInput(field, text, 'a duration such as "90s", "30m", "2h" or "1h30m"')
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
        matched = True
    if not matched:
        raise InvalidInput(field, text, 'a duration such as "90s", "30m", "2h" or "1h30m"')

    # A string of hundreds of digits makes ``total`` infinite, which fails here as well.
    if not total <= MAX_DURATION_SECONDS:
        raise InvalidInput(field, text, _TOO_LONG)
    return total


def format_duration(seconds: float) -> str:
    """Return ``"1h 30m"`` style text for a number of seconds."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs and not hours:
        parts.append(f"{secs}s")
    return " ".join(parts)
