"""Run the installed ``rampgate`` command in a subprocess, in a temporary working directory."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The console script installed next to the interpreter that runs the tests.
RAMPGATE = Path(sys.executable).with_name("rampgate")


@dataclass(frozen=True)
class Result:
    """What one ``rampgate`` process printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Parse stdout, which must be exactly one JSON document."""
        return json.loads(self.stdout)


class Workspace:
    """A working directory whose ``rampgate.db`` the commands use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.database = directory / "rampgate.db"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("RAMPGATE_")}
        self.env["RAMPGATE_DATABASE_URL"] = "sqlite:///rampgate.db"
        self.env["COLUMNS"] = "80"  # the narrow terminal width Rich assumes without a terminal

    def run(self, *arguments: str) -> Result:
        completed = subprocess.run(
            [str(RAMPGATE), *arguments],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *arguments: str) -> Result:
        """Run a command that must succeed."""
        result = self.run(*arguments)
        assert result.returncode == 0, f"rampgate {' '.join(arguments)}: {result}"
        return result

    def dump(self) -> list[str]:
        """Every row of every table, to compare the database before and after a command."""
        with sqlite3.connect(self.database) as connection:
            return list(connection.iterdump())


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a database that ``rampgate migrate`` created, copied by each test."""
    directory = tmp_path_factory.mktemp("template")
    Workspace(directory).ok("migrate")
    return directory


@pytest.fixture
def workspace(tmp_path: Path, migrated_template: Path) -> Workspace:
    """A working directory with a freshly migrated catalog."""
    for path in migrated_template.iterdir():
        shutil.copy2(path, tmp_path / path.name)
    return Workspace(tmp_path)


@pytest.fixture
def empty_workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)

