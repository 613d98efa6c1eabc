"""Trace readers: Common Log Format, Combined, CSV and JSON lines, plain or gzip, streamed.

A reader yields one :data:`TraceRecord` per request and keeps no more than
one line in memory, so a log larger than memory can be replayed. A line
that cannot be parsed is counted as malformed and skipped, never fatal; the
first few are kept with their line numbers for the report. Blank lines are
skipped without being counted.

Each record is a plain tuple ``(timestamp, actor_type, actor_id, action,
request)``: web server logs give the request line (``GET /path HTTP/1.0``)
and leave ``action`` None for the action map to fill in; CSV and JSON lines
give ``action`` and leave ``request`` None. Tuples rather than a dataclass,
because the replay loop reads 100,000 of them per second.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from math import isfinite
from pathlib import Path
from typing import IO, Self

from rampgate.core.names import ACTOR_TYPES, MAX_ACTOR_ID_LENGTH, is_valid_action
from rampgate.errors import InvalidInput

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("clf", "combined", "csv", "jsonl")
CSV_COLUMNS: tuple[str, ...] = ("timestamp", "actor_type", "actor_id", "action")
MAX_EXAMPLE_CHARACTERS = 200
GZIP_MAGIC = b"\x1f\x8b"

TraceRecord = tuple[float, str, str, str | None, str | None]
LineParser = Callable[[str], TraceRecord | None]

# host ident authuser [date] "request" status bytes, with the date split into
# its minute, seconds and UTC offset. A quoted field may contain
# backslash-escaped quotes, as Apache writes them; the pattern for it is the
# unrolled loop [^"\\]*(?:\\.[^"\\]*)*, three times faster than (?:[^"\\]|\\.)*.
_QUOTED_TEXT = r'[^"\\]*(?:\\.[^"\\]*)*'
_CLF_PREFIX = (
    r"(\S+) \S+ \S+ \[(\d\d/[A-Za-z]{3}/\d{4}:\d\d:\d\d):(\d\d) ([+-]\d{4})\] "
    r'"(' + _QUOTED_TEXT + r')" (?:\d{3}|-) (?:\d+|-)'
)
_CLF_RE = re.compile(_CLF_PREFIX + r"(?=\s|$)")
# Combined adds "referer" "user-agent"; a line cut inside either field does not match.
_COMBINED_RE = re.compile(_CLF_PREFIX + ' "' + _QUOTED_TEXT + '" "' + _QUOTED_TEXT + r'"(?=\s|$)')

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_ACTOR_TYPE_SET = frozenset(ACTOR_TYPES)
# Bounds of the per-format caches, so a trace with millions of distinct
# timestamps or actions cannot grow them without limit.
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """A line that could not be parsed: its number in the file (from 1) and its text."""

    line: int
    text: str

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "text": self.text}


# -- timestamps ----------------------------------------------------------------

# A timestamp must fall in the years 1970 to 9999, because datetime cannot show a
# later one. A Unix-millisecond timestamp read as seconds lands far beyond it.
MIN_TIMESTAMP = 0.0
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() + 1.0
_FIRST_YEAR = 1970


class ClfMinutes:
    """The Unix time of each CLF minute (``01/Aug/1995:02:00`` at ``-0400``), computed once.

    ``datetime.strptime`` costs about 10 µs, a tenth of the time budget of a
    request, so a parser looks the minute up here and adds the seconds.
    """

    __slots__ = ("_midnights", "_starts")

    def __init__(self) -> None:
        # minute text -> (UTC offset text, Unix time of the minute's start)
        self._starts: dict[str, tuple[str, float]] = {}
        # (day text, UTC offset text) -> Unix time of that midnight
        self._midnights: dict[tuple[str, str], float] = {}

    def start(self, minute: str, offset: str) -> float:
        """Return the Unix time at which ``minute`` begins; raise ValueError for an invalid date."""
        cached = self._starts.get(minute)
        if cached is not None and cached[0] == offset:
            return cached[1]
        hours, minutes = int(minute[12:14]), int(minute[15:17])
        if hours > 23 or minutes > 59:
            raise ValueError(f"time of day out of range: {minute!r}")
        day = (minute[:11], offset)
        midnight = self._midnights.get(day)
        if midnight is None:
            midnight = self._midnights[day] = _clf_midnight(*day)
        start = midnight + hours * 3600 + minutes * 60
        if len(self._starts) >= _CACHE_LIMIT:
            self._starts.clear()
            self._midnights.clear()
        self._starts[minute] = (offset, start)
        return start


def parse_clf_timestamp(text: str) -> float:
    """Return the Unix time of ``01/Aug/1995:02:00:00 -0400``; raise ValueError for anything else."""
    if len(text) != 26 or text[17] != ":" or text[20] != " " or not text[18:20].isdigit() or text[18:20] > "60":
        raise ValueError(f"not a CLF timestamp: {text!r}")
    return ClfMinutes().start(text[:17], text[21:]) + int(text[18:20])


def _clf_midnight(day: str, offset: str) -> float:
    """Return the Unix time of midnight of ``01/Aug/1995`` at UTC offset ``-0400``."""
    if day[2] != "/" or day[6] != "/" or not day[:2].isdigit() or not day[7:].isdigit():
        raise ValueError(f"not a CLF date: {day!r}")
    month = _MONTHS.get(day[3:6])
    if month is None:
        raise ValueError(f"unknown month: {day[3:6]!r}")
    if len(offset) != 5 or offset[0] not in "+-" or not offset[1:].isdigit():
        raise ValueError(f"not a UTC offset: {offset!r}")
    if int(day[7:11]) < _FIRST_YEAR:
        raise ValueError(f"year before {_FIRST_YEAR}: {day!r}")
    sign = -1 if offset[0] == "-" else 1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])) * sign
    return datetime(int(day[7:11]), month, int(day[0:2]), tzinfo=timezone(delta)).timestamp()


def parse_timestamp(value: object) -> float:
    """Return Unix seconds from a number, a numeric string or an ISO 8601 string.

    An ISO 8601 time without an offset is taken as UTC. Raise ValueError
    for anything else, including booleans, NaN, infinities and times outside
    the years 1970 to 9999 (such as Unix milliseconds).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
    else:
        raise ValueError(f"not a timestamp: {value!r}")

    if not isfinite(seconds):
        raise ValueError(f"not a finite timestamp: {value!r}")
    if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
        raise ValueError(f"timestamp outside the years 1970 to 9999 (Unix seconds expected): {value!r}")
    return seconds


# -- line parsers --------------------------------------------------------------


def make_clf_parser(combined: bool = False) -> LineParser:
    """Return a parser of Common Log Format lines (or Combined, which must carry referer and user agent)."""
    match = (_COMBINED_RE if combined else _CLF_RE).match
    minutes = ClfMinutes()
    starts = minutes._starts
    max_length = MAX_ACTOR_ID_LENGTH

    def parse(line: str) -> TraceRecord | None:
        found = match(line)
        if found is None:
            return None
        host, minute, seconds, offset, request = found.groups()
        if len(host) > max_length or seconds > "60":
            return None
        # The cache lookup of ClfMinutes.start, inlined: it runs for every line.
        cached = starts.get(minute)
        if cached is not None and cached[0] == offset:
            start = cached[1]
        else:
            try:
                start = minutes.start(minute, offset)
            except ValueError:
                return None
        return (start + int(seconds), "ip", host, None, request)

    return parse


def _check_fields(timestamp_text: object, actor_type: object, actor_id: object, action: object) -> TraceRecord | None:
    if actor_type not in _ACTOR_TYPE_SET:
        return None
    if not isinstance(actor_id, str) or not 0 < len(actor_id) <= MAX_ACTOR_ID_LENGTH:
        return None
    if not isinstance(action, str) or not is_valid_action(action):
        return None
    try:
        timestamp = parse_timestamp(timestamp_text)
    except (ValueError, OverflowError):
        return None
    return (timestamp, actor_type, actor_id, action, None)


def make_csv_parser(header: str) -> LineParser:
    """Return a parser of CSV rows whose columns are named by ``header``.

    The header must name ``timestamp``, ``actor_type``, ``actor_id`` and
    ``action`` in any order; other columns are ignored. A row must have as
    many fields as the header.
    """
    columns = [name.strip() for name in next(csv.reader([header]))]
    missing = [name for name in CSV_COLUMNS if name not in columns]
    if missing:
        raise InvalidInput(
            "--trace CSV header", header.strip(), "a first line naming the columns " + ",".join(CSV_COLUMNS)
        )
    width = len(columns)
    at_time, at_type, at_id, at_action = (columns.index(name) for name in CSV_COLUMNS)

    def parse(line: str) -> TraceRecord | None:
        line = line.rstrip("\r\n")
        if '"' in line:
            fields = next(csv.reader([line]))
        else:
            fields = line.split(",")
        if len(fields) != width:
            return None
        return _check_fields(fields[at_time], fields[at_type], fields[at_id], fields[at_action])

    return parse


def parse_jsonl_line(line: str) -> TraceRecord | None:
    """Parse one JSON object with the keys timestamp, actor_type, actor_id and action."""
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    return _check_fields(
        document.get("timestamp"), document.get("actor_type"), document.get("actor_id"), document.get("action")
    )


def detect_format(first_line: str) -> str:
    """Guess the format of a trace from its first non-blank line; Common Log Format when unsure."""
    text = first_line.strip()
    if text.startswith("{"):
        return "jsonl"
    if "," in text and not text.startswith(("[", '"')) and "timestamp" in text.split(",")[0].lower():
        return "csv"
    if _COMBINED_RE.match(text):
        return "combined"
    return "clf"


# -- the reader ----------------------------------------------------------------


class TraceReader:
    """Stream the requests of one trace file; count lines, malformed lines and bytes read.

    Open it with :meth:`open`, iterate once, then read ``lines``,
    ``malformed`` and ``malformed_examples``. Gzip is recognised by its
    magic bytes, whatever the file is called; ``-`` reads standard input.
    """

    def __init__(
        self,
        raw: IO[bytes],
        text: IO[str],
        fmt: str,
        first_lines: list[tuple[int, str]],
        parser: LineParser,
        total_bytes: int | None,
        max_examples: int,
        source: str,
    ) -> None:
        self.format = fmt
        self.source = source
        self.total_bytes = total_bytes
        self.lines = 0
        self.malformed = 0
        self.malformed_examples: list[MalformedLine] = []
        self._raw = raw
        self._text = text
        self._first_lines = first_lines
        self._parser = parser
        self._max_examples = max_examples
        self._next_number = first_lines[-1][0] + 1 if first_lines else 1

    @classmethod
    def open(cls, source: str | Path, fmt: str | None = None, max_examples: int = 5) -> TraceReader:
        """Open ``source`` (a path or ``-``) and detect its format unless ``fmt`` names one.

        Raise :class:`InvalidInput` naming ``--trace`` when the file cannot be
        read, or ``--format`` when the format is unknown.
        """
        if fmt is not None and fmt not in FORMATS:
            raise InvalidInput("--format", fmt, "one of " + ", ".join(FORMATS))

        raw, total_bytes = _open_raw(str(source))
        stream: IO[bytes] = raw
        if raw.peek(2)[:2] == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        # Undecodable bytes become U+FFFD instead of failing the whole line:
        # the host and the path are what matter, and they are ASCII in practice.
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=None)

        try:
            number, first = _first_non_blank(text)
        except (OSError, EOFError) as error:
            text.close()
            raise InvalidInput("--trace", str(source), f"a readable trace file ({error})") from error
        detected = fmt or (detect_format(first) if first else "clf")

        first_lines: list[tuple[int, str]] = []
        if detected == "csv":
            if not first:
                raise InvalidInput("--trace", str(source), "a CSV file with the header " + ",".join(CSV_COLUMNS))
            parser = make_csv_parser(first)
            first_lines.append((number, ""))  # the header: consumed, not a request
        else:
            parser = parse_jsonl_line if detected == "jsonl" else make_clf_parser(detected == "combined")
            if first:
                first_lines.append((number, first))

        logger.debug("trace.opened", extra={"source": str(source), "format": detected, "bytes": total_bytes})
        return cls(raw, text, detected, first_lines, parser, total_bytes, max_examples, str(source))

    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (compressed bytes for gzip): the progress measure."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[TraceRecord]:
        parse = self._parser
        for number, line in self._first_lines:
            if line:
                self.lines += 1
                record = parse(line)
                if record is None:
                    self._count_malformed(number, line)
                else:
                    yield record

        number = self._next_number - 1
        lines = 0
        try:
            for number, line in enumerate(self._text, self._next_number):
                record = parse(line)
                if record is not None:
                    lines += 1
                    yield record
                elif line.strip():
                    lines += 1
                    self._count_malformed(number, line)
        except (OSError, EOFError) as error:
            # A gzip file cut short: what was read is replayed, and the damage is reported.
            lines += 1
            self._count_malformed(number + 1, f"<unreadable: {error}>")
            logger.warning("trace.truncated", extra={"source": self.source, "line": number + 1, "error": str(error)})
        finally:
            self.lines += lines

    def _count_malformed(self, number: int, line: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < self._max_examples:
            text = line.rstrip("\r\n")
            if len(text) > MAX_EXAMPLE_CHARACTERS:
                text = text[: MAX_EXAMPLE_CHARACTERS - 1] + "…"
            self.malformed_examples.append(MalformedLine(number, text))


def _open_raw(source: str) -> tuple[io.BufferedReader, int | None]:
    if source == "-":
        return sys.stdin.buffer, None  # type: ignore[return-value]
    path = Path(source)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by TraceReader.close
        size = path.stat().st_size
    except OSError as error:
        raise InvalidInput("--trace", source, f"a readable trace file ({error.strerror or error})") from error
    if not path.is_file():
        raw.close()
        raise InvalidInput("--trace", source, "a regular file, or - for standard input")
    return raw, size


def _first_non_blank(text: IO[str]) -> tuple[int, str]:
    for number, line in enumerate(text, 1):
        if line.strip():
            return number, line
    return 0, ""
