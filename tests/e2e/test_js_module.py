"""js/rampgate.mjs under Node's test runner against a real ``rampgate serve``, and its messages against Python's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.decision_server import JWT_SECRET, decision_server
from rampgate.core.messages import blocked_message, negotiate_language

JS_DIRECTORY = Path(__file__).resolve().parents[2] / "js"
NODE_TIMEOUT_SECONDS = 240

# Waits that cross the unit boundaries and every Russian plural form.
WAITS = [0.001, 0.5, 1, 1.2, 2, 4, 5, 11, 12, 14, 21, 22, 25, 59, 59.5, 60, 61, 119, 121, 1260, 3599, 3600, 3601, 7200, None]
REASONS = ["limited", "suspended", "store_error", "exceeds_capacity"]
ACCEPT_LANGUAGES = [
    "ru-RU,ru;q=0.9,en;q=0.8",
    "en;q=0.5, ru;q=0.6",
    "de-DE",
    "*",
    "ru;q=0",
    "",
    "RU",
    "de, *;q=0.5",
    "ru;q=0, *",
    "en;q=0.8, ru;q=0.8",
    "ru;q=0.8, en;q=0.8",
    "ru;q=1.5, en;q=0.1",
    "ru;q=abc, en",
    "ru-RU;Q=0.9, en;q=0.1",
    " , ru",
    "ru;q=0.",
    "ru;level=1;q=0.7, en;q=0.6",
]


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js 18 or later is needed for the JavaScript module's tests; install the nodejs package")
    return node


def run_node(arguments: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node_executable(), *arguments],
        env={**os.environ, **(env or {})},
        cwd=JS_DIRECTORY.parent,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.mark.e2e
def test_js_module_against_server(tmp_path: Path) -> None:
    """Every test in js/test passes against a real server."""
    test_files = sorted(str(path) for path in (JS_DIRECTORY / "test").glob("*.test.mjs"))
    assert test_files, f"no *.test.mjs files in {JS_DIRECTORY / 'test'}"

    with decision_server(tmp_path) as service:
        env = {
            "RAMPGATE_TEST_URL": service.url,
            "RAMPGATE_TEST_SERVICE_TOKEN": service.service_token,
            "RAMPGATE_TEST_ADMIN_TOKEN": service.admin_token,
            "RAMPGATE_TEST_JWT_SECRET": JWT_SECRET,
        }
        result = run_node(["--test", *test_files], env)

    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert result.returncode == 0, f"node --test failed:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    assert "# fail 0" in summary
    assert not any(line.startswith("# tests 0") for line in summary)


def test_js_messages_match_python() -> None:
    """blockedMessage and negotiateLanguage return what the Python core returns, case by case."""
    cases = [[reason, wait, language] for reason in REASONS for wait in WAITS for language in ("en", "ru")]
    script = (
        "import {blockedMessage, negotiateLanguage} from './js/rampgate.mjs';"
        "const input = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify({"
        "messages: input.cases.map(([r, w, l]) => blockedMessage(r, w, l)),"
        "languages: input.headers.map((h) => negotiateLanguage(h))}));"
    )

    result = run_node(
        ["--input-type=module", "-e", script, json.dumps({"cases": cases, "headers": ACCEPT_LANGUAGES})]
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)

    for (reason, wait, language), message in zip(cases, output["messages"], strict=True):
        assert message == blocked_message(reason, wait, language), (reason, wait, language)
    for header, language in zip(ACCEPT_LANGUAGES, output["languages"], strict=True):
        assert language == negotiate_language(header), header
