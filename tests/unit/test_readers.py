"""Trace readers: each format plain and gzip, malformed and truncated lines, timestamps, detection."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rampgate.errors import InvalidInput
from rampgate.simulate.readers import (
    TraceReader,
    detect_format,
    parse_clf_timestamp,
    parse_timestamp,
)

# 1 August 1995 02:00:00 at -0400 is 06:00:00 UTC.
AUG_1_0600_UTC = datetime(1995, 8, 1, 6, tzinfo=UTC).timestamp()

CLF_LINES = [
    'h0000.compuserve.com - - [01/Aug/1995:02:00:00 -0400] "GET /images/launch-logo.gif HTTP/1.0" 200 1713',
    '198.18.0.3 - - [01/Aug/1995:02:01:21 -0400] "GET /whats-new.html HTTP/1.0" 200 18936',
    'h0002.cchem.berkeley.edu - frank [01/Aug/1995:02:01:22 -0400] "POST /cgi-bin/imagemap/countdown70?91,172 HTTP/1.0" 302 -',
]
COMBINED_SUFFIX = ' "http://www.example.com/start.html" "Mozilla/2.0 (compatible)"'
EXPECTED = [
    (AUG_1_0600_UTC, "ip", "h0000.compuserve.com", None, "GET /images/launch-logo.gif HTTP/1.0"),
    (AUG_1_0600_UTC + 81, "ip", "198.18.0.3", None, "GET /whats-new.html HTTP/1.0"),
    (AUG_1_0600_UTC + 82, "ip", "h0002.cchem.berkeley.edu", None, "POST /cgi-bin/imagemap/countdown70?91,172 HTTP/1.0"),
]
CSV_TEXT = "timestamp,actor_type,actor_id,action\n1995-08-01T06:00:00Z,user,u-1,send_message\n807256801,ip,198.18.0.3,search\n"
CSV_EXPECTED = [
    (AUG_1_0600_UTC, "user", "u-1", "send_message", None),
    (AUG_1_0600_UTC + 1, "ip", "198.18.0.3", "search", None),
]


def write(path: Path, text: str, compress: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def read_all(path: Path, fmt: str | None = None) -> tuple[list[tuple[object, ...]], TraceReader]:
    with TraceReader.open(path, fmt) as reader:
        records = list(reader)
    return records, reader


# -- each format, plain and gzip -------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_reader_clf(tmp_path: Path, compress: bool) -> None:
    path = write(tmp_path / "access.log", "\n".join(CLF_LINES) + "\n", compress)

    records, reader = read_all(path)

    assert reader.format == "clf"
    assert records == EXPECTED
    assert reader.lines == 3
    assert reader.malformed == 0


@pytest.mark.parametrize("compress", [False, True])
def test_reader_combined(tmp_path: Path, compress: bool) -> None:
    text = "\n".join(line + COMBINED_SUFFIX for line in CLF_LINES) + "\n"
    path = write(tmp_path / "access.log", text, compress)

    records, reader = read_all(path)

    assert reader.format == "combined"
    assert records == EXPECTED
    assert reader.malformed == 0


@pytest.mark.parametrize("compress", [False, True])
def test_reader_csv(tmp_path: Path, compress: bool) -> None:
    path = write(tmp_path / "trace.csv", CSV_TEXT, compress)

    records, reader = read_all(path)

    assert reader.format == "csv"
    assert records == CSV_EXPECTED
    assert reader.lines == 2


@pytest.mark.parametrize("compress", [False, True])
def test_reader_jsonl(tmp_path: Path, compress: bool) -> None:
    documents = [
        {"timestamp": "1995-08-01T02:00:00-04:00", "actor_type": "user", "actor_id": "u-1", "action": "send_message"},
        {"timestamp": 807256801, "actor_type": "ip", "actor_id": "198.18.0.3", "action": "search", "extra": 1},
    ]
    path = write(tmp_path / "trace.jsonl", "".join(json.dumps(d) + "\n" for d in documents), compress)

    records, reader = read_all(path)

    assert reader.format == "jsonl"
    assert records == CSV_EXPECTED


def test_reader_gzip_by_magic_not_name(tmp_path: Path) -> None:
    path = write(tmp_path / "access.log", "\n".join(CLF_LINES) + "\n", compress=True)

    records, _ = read_all(path)

    assert records == EXPECTED


def test_reader_bundled_trace_first_line() -> None:
    path = Path(__file__).resolve().parents[2] / "src/rampgate/simulate/data/nasa-kennedy-1995-08-01-morning.log.gz"
    with TraceReader.open(path) as reader:
        first = next(iter(reader))

    assert first == EXPECTED[0]


# -- malformed, truncated and blank lines -------------------------------------------


def test_reader_malformed_counted_with_line_numbers(tmp_path: Path) -> None:
    text = "\n".join([CLF_LINES[0], "this is not a log line", "", CLF_LINES[1], "   ", "garbage again"]) + "\n"
    path = write(tmp_path / "access.log", text)

    records, reader = read_all(path, "clf")

    assert len(records) == 2
    assert reader.malformed == 2
    assert reader.lines == 4  # blank lines are neither requests nor malformed
    assert [(m.line, m.text) for m in reader.malformed_examples] == [(2, "this is not a log line"), (6, "garbage again")]


def test_reader_keeps_first_five_examples(tmp_path: Path) -> None:
    path = write(tmp_path / "access.log", "\n".join(f"bad {n}" for n in range(1, 9)) + "\n")

    _, reader = read_all(path, "clf")

    assert reader.malformed == 8
    assert [m.line for m in reader.malformed_examples] == [1, 2, 3, 4, 5]


def test_reader_clf_truncated_request(tmp_path: Path) -> None:
    truncated = CLF_LINES[1][:70]  # cut inside the quoted request
    path = write(tmp_path / "access.log", CLF_LINES[0] + "\n" + truncated)

    records, reader = read_all(path, "clf")

    assert records == EXPECTED[:1]
    assert reader.malformed == 1
    assert reader.malformed_examples[0].line == 2


def test_reader_clf_missing_bytes_field(tmp_path: Path) -> None:
    path = write(tmp_path / "access.log", CLF_LINES[0].rsplit(" ", 1)[0] + "\n")

    _, reader = read_all(path, "clf")

    assert reader.malformed == 1


def test_reader_combined_truncated_user_agent(tmp_path: Path) -> None:
    lines = [line + COMBINED_SUFFIX for line in CLF_LINES]
    lines[-1] = lines[-1][:-8]  # cut inside the user agent: no closing quote
    path = write(tmp_path / "access.log", "\n".join(lines))

    records, reader = read_all(path, "combined")

    assert records == EXPECTED[:2]
    assert reader.malformed == 1


@pytest.mark.parametrize(
    "row",
    [
        "1995-08-01T06:00:00Z,robot,u-1,search",  # unknown actor type
        "1995-08-01T06:00:00Z,user,,search",  # empty actor id
        "1995-08-01T06:00:00Z,user,u-1,Search!",  # invalid action name
        "yesterday,user,u-1,search",  # not a timestamp
        "1995-08-01T06:00:00Z,user,u-1",  # a field short
        "1995-08-01T06:00:00Z,user,u-1,search,extra",  # a field too many
        "nan,user,u-1,search",  # not a finite number
        "1e24,user,u-1,search",  # far beyond the year 9999
        "1767603601000,user,u-1,search",  # Unix milliseconds
    ],
)
def test_reader_csv_invalid_row_malformed(tmp_path: Path, row: str) -> None:
    path = write(tmp_path / "trace.csv", "timestamp,actor_type,actor_id,action\n" + row + "\n")

    records, reader = read_all(path)

    assert records == []
    assert reader.malformed == 1
    assert reader.malformed_examples[0].line == 2


def test_reader_csv_columns_any_order_and_quotes(tmp_path: Path) -> None:
    text = 'action,actor_id,timestamp,actor_type\nsearch,"u,1",807256800,user\n'
    path = write(tmp_path / "trace.csv", text)

    records, _ = read_all(path, "csv")

    assert records == [(AUG_1_0600_UTC, "user", "u,1", "search", None)]


def test_reader_csv_without_header_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "trace.csv", "807256800,user,u-1,search\n")

    with pytest.raises(InvalidInput) as error:
        TraceReader.open(path, "csv")

    assert "CSV header" in str(error.value)


@pytest.mark.parametrize(
    "line",
    [
        '{"timestamp": 1, "actor_type": "user", "actor_id": "u"}',
        "[1, 2]",
        "{not json",
        '{"timestamp": 1e24, "actor_type": "user", "actor_id": "u", "action": "search"}',
        '{"timestamp": 1767603601000, "actor_type": "user", "actor_id": "u", "action": "search"}',
    ],
)
def test_reader_jsonl_invalid_line_malformed(tmp_path: Path, line: str) -> None:
    good = '{"timestamp": 1, "actor_type": "user", "actor_id": "u", "action": "search"}'
    path = write(tmp_path / "trace.jsonl", good + "\n" + line + "\n")

    records, reader = read_all(path, "jsonl")

    assert len(records) == 1
    assert reader.malformed == 1


def test_reader_host_longer_than_actor_id_malformed(tmp_path: Path) -> None:
    line = CLF_LINES[0].replace("h0000.compuserve.com", "h" * 257)
    path = write(tmp_path / "access.log", line + "\n")

    _, reader = read_all(path, "clf")

    assert reader.malformed == 1


def test_reader_corrupt_gzip_tail_counted(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(CLF_LINES * 200) + "\n").encode())
    path = tmp_path / "access.log.gz"
    path.write_bytes(data[: len(data) - 40])

    records, reader = read_all(path, "clf")

    assert 0 < len(records) < 600
    assert reader.malformed == 1
    assert reader.lines == len(records) + 1


def test_reader_missing_file_names_option(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as error:
        TraceReader.open(tmp_path / "absent.log")

    assert error.value.field == "--trace"


def test_reader_unknown_format_names_option(tmp_path: Path) -> None:
    path = write(tmp_path / "access.log", CLF_LINES[0])

    with pytest.raises(InvalidInput) as error:
        TraceReader.open(path, "xml")

    assert error.value.field == "--format"


def test_reader_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "access.log", "")

    records, reader = read_all(path)

    assert records == []
    assert reader.lines == 0


# -- timestamps and detection ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01/Aug/1995:02:00:00 -0400", AUG_1_0600_UTC),
        ("01/Aug/1995:06:00:00 +0000", AUG_1_0600_UTC),
        ("01/Aug/1995:11:30:59 +0530", AUG_1_0600_UTC + 59),
        ("31/Dec/1999:23:59:60 +0000", datetime(2000, 1, 1, tzinfo=UTC).timestamp()),
    ],
)
def test_clf_timestamp(text: str, expected: float) -> None:
    assert parse_clf_timestamp(text) == expected


@pytest.mark.parametrize("text", ["01/Aug/1995:24:00:00 -0400", "01/Foo/1995:02:00:00 -0400", "01/Aug/1995:02:00:61 -0400", "1995-08-01"])
def test_clf_timestamp_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_clf_timestamp(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (807256800, AUG_1_0600_UTC),
        (807256800.5, AUG_1_0600_UTC + 0.5),
        ("807256800", AUG_1_0600_UTC),
        ("1995-08-01T06:00:00Z", AUG_1_0600_UTC),
        ("1995-08-01T06:00:00", AUG_1_0600_UTC),  # no offset: UTC
        ("1995-08-01 02:00:00-04:00", AUG_1_0600_UTC),
    ],
)
def test_parse_timestamp(value: object, expected: float) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", [True, None, "inf", float("nan"), "soon", [1]])
def test_parse_timestamp_invalid(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "value",
    [1e24, "1e24", 1767603601000, "1767603601000", 253402300800, -1, "1969-12-31T23:59:59Z"],
)
def test_parse_timestamp_outside_1970_to_9999(value: object) -> None:
    with pytest.raises(ValueError) as raised:
        parse_timestamp(value)
    assert "1970 to 9999" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (253402300799, 253402300799.0), ("9999-12-31T23:59:59Z", 253402300799.0)],
)
def test_parse_timestamp_range_edges(value: object, expected: float) -> None:
    assert parse_timestamp(value) == expected


def test_clf_timestamp_before_1970_invalid() -> None:
    with pytest.raises(ValueError):
        parse_clf_timestamp("01/Aug/1969:02:00:00 -0400")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (CLF_LINES[0], "clf"),
        (CLF_LINES[0] + COMBINED_SUFFIX, "combined"),
        ("timestamp,actor_type,actor_id,action", "csv"),
        ('{"timestamp": 1}', "jsonl"),
        ("anything else", "clf"),
    ],
)
def test_detect_format(line: str, expected: str) -> None:
    assert detect_format(line) == expected
