"""The package surface: what rampgate exports, what rampgate.core may import, and the type checks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import rampgate
import rampgate.errors

SOURCE = Path(rampgate.__file__).resolve().parent
REPOSITORY = SOURCE.parents[1]

# Libraries that do I/O (databases, networks, web frameworks, terminals), which core must not load.
IO_MODULES = frozenset(
    {
        "aiohttp", "alembic", "asyncio", "asyncpg", "click", "fastapi", "http", "httpx", "jinja2", "jwt",
        "prometheus_client", "psycopg", "psycopg_pool", "pydantic_settings", "redis", "requests", "rich",
        "select", "selectors", "socket", "sqlalchemy", "sqlite3", "ssl", "starlette", "structlog",
        "subprocess", "typer", "urllib", "uvicorn",
    }
)
# Third-party packages core may use: hashing, and parsing plan files (text, no I/O).
CORE_THIRD_PARTY = frozenset({"mmh3", "yaml"})


def test_all_sorted() -> None:
    assert rampgate.__all__ == sorted(rampgate.__all__)


def test_all_complete() -> None:
    """Every public name of the package is in __all__, and every name in __all__ exists."""
    public = {
        name
        for name, value in vars(rampgate).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(rampgate.__all__)


def test_all_exports_every_error() -> None:
    errors = {
        name
        for name, value in vars(rampgate.errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == "rampgate.errors"
    }
    assert errors <= set(rampgate.__all__)


def test_core_imports_statically() -> None:
    """Every import statement in rampgate/core names the standard library, mmh3, yaml or core itself."""
    for path in sorted((SOURCE / "core").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                where = f"{path.name}:{node.lineno} imports {name}"
                if root == "rampgate":
                    assert name.startswith("rampgate.core") or name == "rampgate.errors", where
                else:
                    assert root in sys.stdlib_module_names or root in CORE_THIRD_PARTY, where
                    assert root not in IO_MODULES, where


def test_core_loads_no_io_library() -> None:
    """Importing every core module, without the package's __init__, loads no I/O library."""
    script = """
import importlib, importlib.util, json, pkgutil, sys, types
spec = importlib.util.find_spec("rampgate")
package = types.ModuleType("rampgate")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["rampgate"] = package
import rampgate.core
for module in pkgutil.iter_modules(rampgate.core.__path__):
    importlib.import_module("rampgate.core." + module.name)
print(json.dumps(sorted(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)

    assert sorted({name.split(".")[0] for name in loaded} & IO_MODULES) == []
    outside_core = [
        name for name in loaded
        if name.startswith("rampgate.") and not name.startswith("rampgate.core") and name != "rampgate.errors"
    ]
    assert outside_core == []


def test_mypy_strict_core() -> None:
    """mypy, with the strict settings pyproject.toml gives rampgate.core, finds nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "src/rampgate/core"],
        cwd=REPOSITORY, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_marked_typed() -> None:
    """The PEP 561 marker exists and pyproject.toml ships it, so type checkers read rampgate's annotations."""
    import tomllib

    package_data = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]

    assert (SOURCE / "py.typed").is_file()
    assert "py.typed" in package_data["rampgate"]
