"""Plan files on disk: TOML, YAML or JSON, chosen by the file's suffix."""

from __future__ import annotations

from pathlib import Path

from rampgate.core.plans import Plan, parse_plan
from rampgate.errors import InvalidInput

FORMATS_BY_SUFFIX = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def load_plan(path: str | Path, field: str = "--plan") -> Plan:
    """Read and validate the plan in ``path``.

    Raises :class:`InvalidInput` naming ``field`` when the file is missing,
    unreadable or has another suffix, and :class:`ConfigurationError` naming
    the plan key when its content is invalid.
    """
    path = Path(path)
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(field, str(path), "a plan file ending in .toml, .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(field, str(path), "an existing plan file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(field, str(path), f"a readable UTF-8 plan file ({error})") from error
    return parse_plan(text, fmt)
