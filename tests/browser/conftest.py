"""Fixtures of the browser tests: a real ``rampgate serve`` and Debian's headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_helpers import (
    ADMIN_TOKEN,
    CHROMIUM,
    CHROMIUM_ARGS,
    JWT_SECRET,
    READONLY_TOKEN,
    SERVICE_TOKEN,
    ServerClient,
)
from e2e.server import rampgate_executable, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerClient]:
    """A fresh ``rampgate serve`` on its own SQLite catalog, migrated and seeded with the defaults."""
    env = {
        "RAMPGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "RAMPGATE_COUNTER_STORE": "memory",
        "RAMPGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAMPGATE_ADMIN_READONLY_TOKEN": READONLY_TOKEN,
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_JWT_SECRET": JWT_SECRET,
        "RAMPGATE_CONFIG": str(tmp_path / "absent.toml"),
    }
    migrated = subprocess.run(
        [rampgate_executable(), "migrate"],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, f"rampgate migrate failed:\n{migrated.stderr}"

    with start_server(env) as running:
        yield ServerClient(running.url, env["RAMPGATE_DATABASE_URL"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless and kept off the network, with a throw-away HOME and profile.

    Module scope, because Playwright's sync API keeps an asyncio event loop
    running in the main thread until it exits, and pytest-asyncio tests
    collected after the browser tests cannot start their own loop meanwhile.

    Playwright's ``launch`` creates the browser profile (the user data dir) in
    the driver's temporary folder, so TMPDIR points the driver at a folder of
    our own, removed afterwards together with HOME.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium chromium-driver'")
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="rampgate-chromium-"))
    (home / "tmp").mkdir()
    saved_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(home / "tmp")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                env={**os.environ, "HOME": str(home)},
                headless=True,
            )
            yield browser
            browser.close()
    finally:
        if saved_tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_tmpdir
        shutil.rmtree(home, ignore_errors=True)
