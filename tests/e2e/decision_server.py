"""A real ``rampgate serve`` set up for the client and JavaScript tests.

The catalog is a fresh SQLite file with the shipped defaults and enforcement
at 100 %. ``follow`` is at 0 %, so it is decided in shadow mode. The actor
``user:u-suspended`` is at enforcement level E5, and the actor
``user:u-retry`` may send one ``send_message`` per second.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from e2e.server import rampgate_executable, start_server

SERVICE_TOKEN = "service-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"
SUSPENDED_ACTOR = "u-suspended"
SHADOW_ACTION = "follow"
RETRY_ACTOR = "u-retry"


@dataclass(frozen=True)
class DecisionServer:
    """Where the server listens and the tokens it accepts."""

    url: str
    service_token: str
    admin_token: str


def _run_cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [rampgate_executable(), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rampgate {' '.join(args)} failed with {result.returncode}:\n{result.stderr}")


@contextmanager
def decision_server(directory: Path) -> Iterator[DecisionServer]:
    """Migrate a catalog in ``directory``, configure it as described in the module docstring, and serve it."""
    env = {
        "RAMPGATE_DATABASE_URL": f"sqlite:///{directory / 'catalog.db'}",
        "RAMPGATE_COUNTER_STORE": "memory",
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAMPGATE_JWT_SECRET": JWT_SECRET,
    }
    _run_cli(env, "migrate")
    _run_cli(
        env, "flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "100",
        "--action-percentage", f"{SHADOW_ACTION}=0",
    )
    _run_cli(env, "trust", "set", "--actor", f"user:{SUSPENDED_ACTOR}", "--tier", "B", "--level", "E5")
    _run_cli(
        env, "limits", "set", "--actor", f"user:{RETRY_ACTOR}", "--action", "send_message",
        "--limit", "1", "--window", "1",
    )

    with start_server(env) as server:
        yield DecisionServer(server.url, SERVICE_TOKEN, ADMIN_TOKEN)
