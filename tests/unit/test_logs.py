"""Log lines rendered by the handler that configure_logging installs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from rampgate.logs import configure_logging


@pytest.fixture(autouse=True)
def restored_logger() -> Iterator[None]:
    root = logging.getLogger("rampgate")
    handlers, level, propagate = root.handlers[:], root.level, root.propagate
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = propagate


def _log_caught_error() -> None:
    try:
        raise ValueError("Out of range float values are not JSON compliant")
    except ValueError as error:
        logging.getLogger("rampgate.service.errors").error(
            "http.internal_error", exc_info=error, extra={"path": "/v1/check"}
        )


def test_logs_json_exception_has_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")

    _log_caught_error()

    line = json.loads(capsys.readouterr().err.strip())
    assert line["event"] == "http.internal_error"
    assert line["path"] == "/v1/check"
    assert "exc_info" not in line
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "in _log_caught_error" in line["exception"]
    assert "ValueError: Out of range float values are not JSON compliant" in line["exception"]


def test_logs_console_exception_has_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "console")

    _log_caught_error()

    text = capsys.readouterr().err
    assert "http.internal_error" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: Out of range float values are not JSON compliant" in text
