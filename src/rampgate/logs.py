"""Logging set-up: JSON lines on stderr (or readable lines on a terminal), one logger per module.

Modules log with the standard library (``logging.getLogger(__name__)``), a
dotted event name as the message and flat fields in ``extra``. structlog
renders them.
"""

from __future__ import annotations

import logging
import sys

import structlog

from rampgate.errors import InvalidInput

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SECRET_FIELDS = frozenset({"token", "authorization", "password", "secret", "jwt", "cookie"})


def _redact(_logger: object, _method: str, event: dict) -> dict:  # type: ignore[type-arg]
    for key in list(event):
        if key.lower() in _SECRET_FIELDS:
            event[key] = "[redacted]"
    return event


def check_log_level(level: object, field: str = "RAMPGATE_LOG_LEVEL") -> str:
    """Return ``level`` in upper case, or raise :class:`InvalidInput` naming ``field``."""
    # The standard library also takes WARN, FATAL and NOTSET, so those keep working.
    if not isinstance(level, str) or level.strip().upper() not in logging.getLevelNamesMapping():
        raise InvalidInput(field, level, "one of " + ", ".join(LOG_LEVELS) + " (in any case)")
    return level.strip().upper()


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Send every ``rampgate.*`` record to stderr, as JSON unless stderr is a terminal."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    # JSON has no place for a traceback object, so format_exc_info turns exc_info into an
    # "exception" field holding the traceback text. ConsoleRenderer formats exc_info itself.
    renderers: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if use_json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)

    root = logging.getLogger("rampgate")
    root.handlers[:] = [handler]
    root.setLevel(check_log_level(level))
    root.propagate = False
