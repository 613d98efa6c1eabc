"""``rampgate simulate`` and ``rampgate demo`` as a user runs them: the real command in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.server import rampgate_executable
from rampgate.cli.app import main
from rampgate.simulate.demo import DEMO_ACTIONS, DEMO_PLAN, DEMO_POLICIES, DEMO_TRACE

pytestmark = pytest.mark.e2e

DEMO_OPTIONS = ["--plan", str(DEMO_PLAN), "--actions", str(DEMO_ACTIONS), "--policies", str(DEMO_POLICIES)]


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [rampgate_executable(), *arguments], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False
    )


def stage_rows(table_text: str) -> list[list[str]]:
    """The body rows of the Stages table, as cell texts."""
    section = table_text.split("Stages", 1)[1].split("Outcome:", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


@pytest.fixture(scope="module")
def demo_json() -> dict[str, Any]:
    result = run_cli("simulate", "--trace", str(DEMO_TRACE), *DEMO_OPTIONS, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_simulate_bundled_trace_json(demo_json: dict[str, Any]) -> None:
    assert demo_json["lines"] == 13_200
    assert demo_json["malformed"] == 0
    assert demo_json["malformed_examples"] == []
    assert demo_json["decisions"] + demo_json["malformed"] == demo_json["lines"]
    assert demo_json["outcome"]["state"] == "rolled_back"
    assert demo_json["lines_per_second"] > 0


def test_simulate_table_agrees_with_json(demo_json: dict[str, Any]) -> None:
    result = run_cli("simulate", "--trace", str(DEMO_TRACE), *DEMO_OPTIONS)
    assert result.returncode == 0, result.stderr

    rows = stage_rows(result.stdout)
    assert len(rows) == len(demo_json["stages"])
    for cells, stage in zip(rows, demo_json["stages"]):
        assert int(cells[0]) == stage["stage"]
        assert cells[1] == f"{stage['percentage']} %"
        assert int(cells[2]) == stage["actors_enforced"]
        assert int(cells[3]) == stage["decisions"]
        assert int(cells[4]) == stage["blocked"]
        assert float(cells[5]) == round(stage["block_rate"], 4)
        assert float(cells[6]) == round(stage["false_positive_rate"], 4)
        assert int(cells[7]) == stage["complaints"]
        assert cells[8].split()[0] == stage["verdict"]

    outcome = demo_json["outcome"]
    assert f"{outcome['state']} at stage {outcome['stage']} ({outcome['percentage']} %)" in result.stdout
    assert f"gate {outcome['failed_gate']['metric']} = {outcome['failed_gate']['value']:.4f}" in result.stdout
    for item in demo_json["recommendations"]:
        assert f"--action {item['action']} --limit {item['limit']} --window {item['window_seconds']}" in result.stdout
    assert f"{demo_json['lines']} lines, {demo_json['decisions']} decisions, {demo_json['malformed']} malformed" in result.stdout


def test_simulate_same_replay_same_report(demo_json: dict[str, Any]) -> None:
    result = run_cli("simulate", "--trace", str(DEMO_TRACE), *DEMO_OPTIONS, "--json")
    again = json.loads(result.stdout)

    again.pop("lines_per_second")
    first = dict(demo_json)
    first.pop("lines_per_second")
    assert again == first


def test_simulate_stdin_gzip_with_bots() -> None:
    arguments = ["simulate", "--trace", "-", "--percentage", "100", "--inject-bots", "2", "--bot-rate", "0.1", "--seed", "4", "--json"]
    result = subprocess.run(
        [rampgate_executable(), *arguments], input=DEMO_TRACE.read_bytes(), capture_output=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["decisions"] == 13_200
    assert 2 * 2870 <= document["bot_decisions"] <= 2 * 2880  # 0.1 per second for 7 h 59 m 58 s


def test_demo_json_shows_blocked_hosts() -> None:
    result = run_cli("demo", "--json")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["outcome"]["state"] == "rolled_back"
    hosts = [actor["actor"] for actor in document["top_blocked_actors"]]
    assert "ip:h0440.ctp.com" in hosts
    assert "ip:h0317.dfrc.nasa.gov" in hosts


def test_demo_table() -> None:
    result = run_cli("demo")

    assert result.returncode == 0, result.stderr
    assert "Top blocked actors" in result.stdout
    assert "h0440.ctp.com" in result.stdout
    assert "rolled_back at stage 4 (50 %)" in result.stdout
    assert "rampgate limits set --tier B --action media_view" in result.stdout


# -- invalid options: exit status 2 and a message naming the option and the value ----------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--percentage", "101"], "invalid --percentage: 101"),
        (["--format", "xml"], "invalid --format: 'xml'"),
        (["--bot-rate", "2"], "invalid --bot-rate: 2.0"),
        (["--inject-bots", "0"], "invalid --inject-bots: 0"),
        (["--inject-bots", "2", "--bot-rate", "0"], "invalid --bot-rate: 0.0"),
        (["--plan", "/nonexistent/plan.toml"], "invalid --plan: '/nonexistent/plan.toml'"),
        (["--top", "-1"], "invalid --top: -1"),
    ],
)
def test_simulate_invalid_option_exit_2(
    arguments: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["rampgate", "simulate", "--trace", str(DEMO_TRACE), *arguments])

    with pytest.raises(SystemExit) as done:
        main()

    assert done.value.code == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert captured.out == ""


def test_simulate_missing_trace_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.log"
    monkeypatch.setattr(sys, "argv", ["rampgate", "simulate", "--trace", str(missing)])

    with pytest.raises(SystemExit) as done:
        main()

    assert done.value.code == 2
    assert f"invalid --trace: '{missing}'" in capsys.readouterr().err


def test_simulate_progress_only_on_stderr(tmp_path: Path) -> None:
    # Long enough for several progress updates; stderr is a terminal, stdout a pipe.
    with gzip.open(DEMO_TRACE, "rt") as handle:
        lines = handle.readlines()
    trace = tmp_path / "three-days.log"
    trace.write_text("".join(line.replace("01/Aug", f"0{day}/Aug", 1) for day in (1, 2, 3) for line in lines))
    primary, secondary = pty.openpty()

    process = subprocess.Popen(
        [rampgate_executable(), "simulate", "--trace", str(trace), "--percentage", "10", "--json"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        stdin=subprocess.DEVNULL,
    )
    os.close(secondary)
    output, _ = process.communicate(timeout=120)
    terminal = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        terminal += chunk
    os.close(primary)

    assert process.returncode == 0
    assert json.loads(output)["lines"] == 3 * 13_200
    assert b"replaying" in terminal


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        (
            "trace.csv",
            [
                "timestamp,actor_type,actor_id,action",
                "1767603600,user,u-1,search",
                "1e24,user,u-1,search",
                "1767603601000,user,u-2,search",
                "1767603602,user,u-1,search",
            ],
        ),
        (
            "trace.jsonl",
            [
                '{"timestamp": 1767603600, "actor_type": "user", "actor_id": "u-1", "action": "search"}',
                '{"timestamp": 1e24, "actor_type": "user", "actor_id": "u-1", "action": "search"}',
                '{"timestamp": 1767603601000, "actor_type": "user", "actor_id": "u-2", "action": "search"}',
                '{"timestamp": 1767603602, "actor_type": "user", "actor_id": "u-1", "action": "search"}',
            ],
        ),
    ],
)
def test_simulate_out_of_range_timestamps_malformed(tmp_path: Path, name: str, rows: list[str]) -> None:
    trace = tmp_path / name
    trace.write_text("\n".join(rows) + "\n")
    first_bad_line = 3 if name.endswith(".csv") else 2

    result = run_cli("simulate", "--trace", str(trace), "--json")
    table = run_cli("simulate", "--trace", str(trace))

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["decisions"] == 2
    assert report["malformed"] == 2
    assert [example["line"] for example in report["malformed_examples"]] == [first_bad_line, first_bad_line + 1]
    assert table.returncode == 0, table.stderr
    assert f"malformed line {first_bad_line}:" in table.stdout
