"""Invalid options, settings and unreachable stores through real ``rampgate`` processes.

Each case must end with one ``error:`` line on stderr and the documented exit
status (2 for invalid input, 1 for other failures), never a traceback.
"""

from __future__ import annotations

import pytest

from .conftest import Result, Workspace

CHECK = ("check", "--actor", "user:a", "--action", "search")


def assert_one_line_error(result: Result, status: int, *parts: str) -> None:
    assert result.returncode == status, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for part in parts:
        assert part in lines[0]


@pytest.mark.parametrize(
    "arguments",
    [("--log-level", "LOUD", "status"), ("serve", "--log-level", "bogus")],
    ids=["global", "serve"],
)
def test_log_level_option_invalid(workspace: Workspace, arguments: tuple[str, ...]) -> None:
    result = workspace.run(*arguments)

    assert_one_line_error(result, 2, "--log-level", arguments[arguments.index("--log-level") + 1], "WARNING")


def test_log_level_env_invalid(workspace: Workspace) -> None:
    workspace.env["RAMPGATE_LOG_LEVEL"] = "LOUD"

    result = workspace.run("status")

    assert_one_line_error(result, 2, "RAMPGATE_LOG_LEVEL", "'LOUD'", "WARNING")


def test_log_level_lower_case_accepted(workspace: Workspace) -> None:
    workspace.ok("--log-level", "info", "status")


@pytest.mark.parametrize("report", ["top-blocked", "by-action", "by-hour", "recent"])
def test_report_since_over_100_years(workspace: Workspace, report: str) -> None:
    result = workspace.run("report", report, "--since", "99999999999d")

    assert_one_line_error(result, 2, "--since", "99999999999d", "at most 100 years")


@pytest.mark.parametrize("limit", ["100000000000000000000000", "100001", "0"])
def test_report_limit_out_of_range(workspace: Workspace, limit: str) -> None:
    result = workspace.run("report", "top-blocked", "--limit", limit)

    assert_one_line_error(result, 2, "--limit", limit, "from 1 to 100000")


def test_report_limit_maximum_accepted(workspace: Workspace) -> None:
    workspace.ok("report", "top-blocked", "--limit", "100000", "--json")


def test_audits_prune_older_than_over_100_years(workspace: Workspace) -> None:
    before = workspace.dump()

    result = workspace.run("audits", "prune", "--older-than", "99999999999d")

    assert_one_line_error(result, 2, "--older-than", "99999999999d", "at most 100 years")
    assert workspace.dump() == before


@pytest.mark.parametrize("port", ["notaport", "99999"])
def test_redis_url_port_invalid(workspace: Workspace, port: str) -> None:
    workspace.env["RAMPGATE_COUNTER_STORE"] = "redis"
    workspace.env["RAMPGATE_REDIS_URL"] = f"redis://user:hunter2@127.0.0.1:{port}/0"

    result = workspace.run(*CHECK)

    assert_one_line_error(result, 2, "RAMPGATE_REDIS_URL", f"127.0.0.1:{port}", "1 to 65535")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("arguments", [CHECK, ("serve",), ("status",), ("migrate",)], ids=["check", "serve", "status", "migrate"])
def test_catalog_unreachable(workspace: Workspace, arguments: tuple[str, ...]) -> None:
    # Nothing listens on port 1 of the loopback address, so the connection is refused at once.
    workspace.env["RAMPGATE_DATABASE_URL"] = "postgresql://nobody:hunter2@127.0.0.1:1/nodb"

    result = workspace.run(*arguments)

    assert_one_line_error(
        result, 1, "cannot reach the catalog database at 127.0.0.1:1", "check RAMPGATE_DATABASE_URL"
    )
    assert "hunter2" not in result.stderr
