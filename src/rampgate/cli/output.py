"""Shared helpers of the CLI commands: JSON on stdout, everything else on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rampgate.catalog.database import check_schema, create_catalog_engine
from rampgate.catalog.repository import Catalog
from rampgate.errors import InvalidInput, NotFound
from rampgate.settings import Settings, load_settings

# Tables and human-readable reports go to stdout; logs, warnings and progress to stderr.
# Piped or redirected, stdout has no width, and Rich would squeeze tables into
# 80 columns and cut names such as tier:B:media_upload to "tier:B:m…"; there
# every table keeps its natural width.
stdout = Console(soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 100_000)
stderr = Console(stderr=True, soft_wrap=True, emoji=False)


def cell(value: object) -> Text:
    """A table cell that shows ``value`` as it is: no markup, no emoji codes."""
    return Text("-" if value is None else str(value))


def print_json(document: Any) -> None:
    """Write exactly one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str, indent=2) + "\n")
    sys.stdout.flush()


def parse_int(value: str, field: str, allowed: str) -> int:
    """Parse an integer option, raising :class:`InvalidInput` that names the option and the text given."""
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(field, value, allowed) from None


def masked_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_catalog(settings: Settings | None = None) -> Catalog:
    """Open the configured catalog, which must already be migrated."""
    settings = settings or load_settings()
    _check_sqlite_file(settings.database_url)
    engine = create_catalog_engine(settings.database_url)
    check_schema(engine)
    return Catalog(engine)


def _check_sqlite_file(url: str) -> None:
    """Raise :class:`NotFound` for a SQLite file that does not exist, instead of creating an empty one."""
    if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
        return
    path = Path(url.removeprefix("sqlite:///")).expanduser()
    if not path.exists():
        raise NotFound(f"no catalog database at {path}; run `rampgate migrate` to create it")


def operator_name() -> str:
    """Who made a CLI change, for the config-change history: ``cli:<os user>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
