"""Shared helpers of the CLI commands: JSON on stdout, everything else on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from sqlalchemy.engine import make_url

from rampgate.catalog.database import create_catalog_engine
from rampgate.catalog.repository import Catalog
from rampgate.catalog.database import check_schema
from rampgate.settings import Settings, load_settings

# Tables and human-readable reports go to stdout; logs, warnings and progress to stderr.
stdout = Console(soft_wrap=True, emoji=False)
stderr = Console(stderr=True, soft_wrap=True, emoji=False)


def print_json(document: Any) -> None:
    """Write exactly one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str, indent=2) + "\n")
    sys.stdout.flush()


def masked_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_catalog(settings: Settings | None = None) -> Catalog:
    """Open the configured catalog, which must already be migrated."""
    settings = settings or load_settings()
    engine = create_catalog_engine(settings.database_url)
    check_schema(engine)
    return Catalog(engine)


def operator_name() -> str:
    """Who made a CLI change, for the config-change history: ``cli:<os user>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"
