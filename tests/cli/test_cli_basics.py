"""The catalog commands and ``rampgate check`` through real ``rampgate`` processes."""

from __future__ import annotations

import json
import sqlite3

import pytest

from .conftest import Workspace

LONG_ID = "x" * 257


# -- the README scenario ------------------------------------------------------------


def test_readme_scenario(empty_workspace: Workspace) -> None:
    workspace = empty_workspace

    migrated = workspace.ok("migrate")
    assert "schema upgraded from empty" in migrated.stdout
    assert workspace.database.is_file(), "rampgate.db lands in the working directory"

    workspace.ok("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "100")
    checked = workspace.ok("check", "--actor", "user:u-1", "--action", "media_upload", "--count", "6", "--json")

    decisions = checked.json()
    assert [d["allowed"] for d in decisions] == [True] * 5 + [False]
    assert [d["remaining"] for d in decisions[:5]] == [4, 3, 2, 1, 0]
    sixth = decisions[5]
    assert (sixth["mode"], sixth["reason"], sixth["policy"]) == ("enforce", "limited", "tier:B:media_upload")
    assert 0 < sixth["retry_after"] <= 12
    assert sixth["message"].startswith("Too many requests. Try again in ")


def test_migrate_twice_noop(workspace: Workspace) -> None:
    """The template was migrated once, so a second migrate changes nothing."""
    before = workspace.dump()

    second = workspace.ok("migrate", "--json").json()

    assert second["from_revision"] == second["to_revision"]
    assert workspace.dump() == before


def test_migrate_seeds_contract(workspace: Workspace) -> None:
    with sqlite3.connect(workspace.database) as connection:
        assert connection.execute("pragma journal_mode").fetchone() == ("wal",)
        flags = connection.execute("select flag_name, enabled, rollout_percentage from feature_flags").fetchall()
        policies = connection.execute(
            "select tier, action, limit_value, window_seconds from rate_limit_configs where scope = 'tier'"
            " and algorithm = 'token_bucket' and burst is null and cost_per_action = 1 and fail_mode = 'open'"
        ).fetchall()

    assert flags == [("rate_limit_enforcement", 0, 0)]
    assert len(policies) == 24
    assert ("B", "media_upload", 5, 60) in policies
    assert ("D", "api_call", 2, 3600) in policies


def test_check_table_and_russian(workspace: Workspace) -> None:
    workspace.ok("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "100")

    table = workspace.ok("check", "--actor", "user:u-1", "--action", "media_upload", "--count", "6").stdout
    decisions = workspace.ok(
        "check", "--actor", "user:u-1", "--action", "media_upload", "--count", "6", "--lang", "ru", "--json"
    ).json()

    assert table.count("tier:B:media_upload") == 6, "names are printed whole in an 80-column table"
    assert "Too many requests. Try again in 12 seconds." in table
    assert decisions[5]["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."


# -- --json prints one document ----------------------------------------------------------


# Every other test parses the stdout of --json commands with json.loads, which
# fails on anything but exactly one document. These two add debug logging.
@pytest.mark.parametrize(
    "arguments",
    [
        ("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "10", "--json"),
        ("limits", "set", "--tier", "B", "--action", "media_upload", "--limit", "10", "--window", "60", "--json"),
    ],
)
def test_json_one_document_with_logs(workspace: Workspace, arguments: tuple[str, ...]) -> None:
    """Under --json stdout is exactly one JSON document, and the log lines go to stderr."""
    result = workspace.ok("--log-level", "DEBUG", *arguments)

    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    assert result.stderr != "", "debug logging writes to stderr"


# -- invalid input -------------------------------------------------------------------------


INVALID_INPUTS = [
    pytest.param(
        ("flag", "set", "rate_limit_enforcement", "--percentage", "101"),
        ("--percentage", "101", "0 to 100"), id="percentage-101",
    ),
    pytest.param(
        ("flag", "set", "rate_limit_enforcement", "--percentage", "half"),
        ("--percentage", "half", "0 to 100"), id="percentage-text",
    ),
    pytest.param(
        ("flag", "set", "rate_limit_enforcement", "--enabled", "--action-percentage", "media_upload=150"),
        ("--action-percentage media_upload", "150", "0 to 100"), id="action-percentage-150",
    ),
    pytest.param(
        ("limits", "set", "--tier", "B", "--action", "media_upload", "--limit", "0", "--window", "60"),
        ("--limit", "0", "1 to"), id="limit-0",
    ),
    pytest.param(
        ("limits", "set", "--tier", "E", "--action", "media_upload", "--limit", "5", "--window", "60"),
        ("--tier", "E", "A, B, C, D"), id="limits-unknown-tier",
    ),
    pytest.param(
        ("limits", "set", "--tier", "B", "--action", "Media Upload", "--limit", "5", "--window", "60"),
        ("--action", "Media Upload", "a-z 0-9 _ : . -"), id="limits-invalid-action",
    ),
    pytest.param(
        ("limits", "set", "--tier", "B", "--global", "--action", "media_upload", "--limit", "5", "--window", "60"),
        ("scope", "--tier --global", "exactly one of"), id="limits-two-scopes",
    ),
    pytest.param(
        ("trust", "set", "--actor", "user:" + LONG_ID, "--tier", "A"),
        ("--actor id", "xxxxxxxx", "1 to 256 characters"), id="trust-actor-id-257",
    ),
    pytest.param(
        ("check", "--actor", "u-42", "--action", "media_upload"),
        ("--actor", "u-42", "TYPE:ID"), id="check-actor-without-type",
    ),
]


@pytest.mark.parametrize(("arguments", "expected"), INVALID_INPUTS)
def test_invalid_input_rejected(workspace: Workspace, arguments: tuple[str, ...], expected: tuple[str, ...]) -> None:
    """Exit 2, one line naming the field, the value and what is allowed, and nothing written."""
    before = workspace.dump()

    result = workspace.run(*arguments)

    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    field, value, allowed = expected
    assert lines[0].startswith(f"error: invalid {field}: "), lines[0]
    assert value in lines[0]
    assert allowed in lines[0]
    assert workspace.dump() == before


def test_usage_error_one_line(workspace: Workspace) -> None:
    result = workspace.run("flag", "set")

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Missing argument" in lines[0]
    assert "rampgate flag set --help" in lines[0]


def test_unknown_flag_not_found(workspace: Workspace) -> None:
    result = workspace.run("flag", "show", "no_such_flag")

    assert result.returncode == 1
    assert "no_such_flag" in result.stderr
    assert result.stdout == ""


def test_missing_database_not_created(empty_workspace: Workspace) -> None:
    result = empty_workspace.run("flag", "show")

    assert result.returncode == 1
    assert "rampgate migrate" in result.stderr
    assert not empty_workspace.database.exists()


# -- flag ---------------------------------------------------------------------------------------


def test_flag_show(workspace: Workspace) -> None:
    text = workspace.ok("flag", "show", "rate_limit_enforcement").stdout
    every = workspace.ok("flag", "show", "--json").json()

    assert text.splitlines()[0] == "rate_limit_enforcement: disabled, 0 %"
    assert "actions: create_post, send_message, follow, media_upload, search, api_call" in text
    assert len(every) == 1
    document = every[0]
    assert document["name"] == "rate_limit_enforcement"
    assert (document["enabled"], document["percentage"], document["action_percentages"]) == (False, 0, {})


def test_flag_set_and_rollback(workspace: Workspace) -> None:
    workspace.ok("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "25",
                 "--action-percentage", "media_upload=50", "--action-percentage", "search=5")
    shown = workspace.ok("flag", "show", "rate_limit_enforcement", "--json").json()
    assert (shown["enabled"], shown["percentage"]) == (True, 25)
    assert shown["action_percentages"] == {"media_upload": 50, "search": 5}

    rolled_back = workspace.ok("flag", "rollback", "rate_limit_enforcement", "--json").json()

    assert (rolled_back["enabled"], rolled_back["percentage"], rolled_back["action_percentages"]) == (False, 0, {})
    assert rolled_back["config"]["actions"] == shown["config"]["actions"]
    assert workspace.ok("flag", "show", "rate_limit_enforcement", "--json").json() == rolled_back
    decision = workspace.ok("check", "--actor", "user:u-1", "--action", "media_upload", "--json").json()
    assert (decision["allowed"], decision["mode"]) == (True, "shadow")

    with sqlite3.connect(workspace.database) as connection:
        changes = connection.execute("select via, entity, entity_key, changed_by from config_changes").fetchall()
    assert len(changes) == 2
    assert all(change[:3] == ("cli", "flag", "rate_limit_enforcement") for change in changes)
    assert all(change[3].startswith("cli:") for change in changes)


# -- limits ------------------------------------------------------------------------------------


def test_limits_list(workspace: Workspace) -> None:
    rows = workspace.ok("limits", "list", "--json").json()
    text = workspace.ok("limits", "list").stdout

    assert len(rows) == 24
    assert {row["policy"] for row in rows} >= {"tier:B:media_upload", "tier:A:api_call", "tier:D:search"}
    for row in rows:
        assert row["policy"] in text, "names are printed whole, not cut to the width"


def test_limits_set_each_scope(workspace: Workspace) -> None:
    workspace.ok("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "100")

    tier = workspace.ok("limits", "set", "--tier", "A", "--action", "media_upload", "--limit", "30",
                        "--window", "1m", "--burst", "40", "--algorithm", "gcra", "--fail-mode", "closed",
                        "--json").json()
    actor = workspace.ok("limits", "set", "--actor", "user:vip", "--action", "media_upload", "--limit", "9",
                         "--window", "60", "--json").json()
    overall = workspace.ok("limits", "set", "--global", "--action", "export_data", "--limit", "2",
                           "--window", "1h", "--algorithm", "fixed_window", "--json").json()

    assert (tier["policy"], tier["limit"], tier["window_seconds"], tier["burst"]) == (
        "tier:A:media_upload", 30, 60, 40)
    assert (tier["algorithm"], tier["fail_mode"]) == ("gcra", "closed")
    assert (actor["policy"], actor["scope"], actor["actor_type"], actor["actor_id"]) == (
        "actor:user/vip:media_upload", "actor", "user", "vip")
    assert (overall["policy"], overall["window_seconds"], overall["algorithm"]) == (
        "global:*:export_data", 3600, "fixed_window")

    listed = {row["policy"] for row in workspace.ok("limits", "list", "--json").json()}
    assert {"tier:A:media_upload", "actor:user/vip:media_upload", "global:*:export_data"} <= listed
    assert len(listed) == 26

    vip = workspace.ok("check", "--actor", "user:vip", "--action", "media_upload", "--json").json()
    assert (vip["policy"], vip["limit"], vip["remaining"]) == ("actor:user/vip:media_upload", 9, 8)
    export = workspace.ok("check", "--actor", "user:u-1", "--action", "export_data", "--count", "3", "--json").json()
    assert [d["allowed"] for d in export] == [True, True, False]


def test_limits_set_updates_in_place(workspace: Workspace) -> None:
    workspace.ok("limits", "set", "--tier", "B", "--action", "media_upload", "--limit", "10", "--window", "60")

    rows = workspace.ok("limits", "list", "--tier", "B", "--action", "media_upload", "--json").json()

    assert [(r["policy"], r["limit"]) for r in rows] == [("tier:B:media_upload", 10)]


def test_names_printed_verbatim(workspace: Workspace) -> None:
    """Rich markup and emoji codes in actor ids are printed as they are."""
    names = []
    for actor in ("user:[bold]vip[/bold]", "user::smile:", "user:" + "a" * 120):
        printed = workspace.ok("limits", "set", "--actor", actor, "--action", "media_upload", "--limit", "9",
                               "--window", "60").stdout
        name = f"actor:user/{actor.removeprefix('user:')}:media_upload"
        assert printed.startswith(f"{name}: 9 per 60 s"), printed
        names.append(name)
    listed = workspace.ok("limits", "list", "--action", "media_upload").stdout
    for name in names:
        assert name in listed

    trusted = workspace.ok("trust", "set", "--actor", "user:[red]x[/red]", "--tier", "A").stdout
    assert trusted.strip() == "user:[red]x[/red]: tier A, level E0"


# -- trust -------------------------------------------------------------------------------------


def test_trust_set(workspace: Workspace) -> None:
    workspace.ok("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "100")

    trusted = workspace.ok("trust", "set", "--actor", "user:u-9", "--tier", "A", "--score", "95", "--json").json()
    assert (trusted["tier"], trusted["enforcement_level"], trusted["trust_score"]) == ("A", "E0", 95.0)
    decision = workspace.ok("check", "--actor", "user:u-9", "--action", "media_upload", "--json").json()
    assert (decision["tier"], decision["policy"], decision["limit"]) == ("A", "tier:A:media_upload", 20)

    suspended = workspace.ok("trust", "set", "--actor", "user:u-9", "--tier", "A", "--level", "E5", "--json").json()
    assert suspended["enforcement_level"] == "E5"
    assert suspended["trust_score"] == 95.0, "fields not given keep their values"
    blocked = workspace.ok("check", "--actor", "user:u-9", "--action", "media_upload", "--json").json()
    assert (blocked["allowed"], blocked["reason"], blocked["retry_after"]) == (False, "suspended", 3600.0)


def test_trust_set_invalid_level(workspace: Workspace) -> None:
    before = workspace.dump()

    result = workspace.run("trust", "set", "--actor", "user:u-9", "--tier", "A", "--level", "E9")

    assert result.returncode == 2
    assert "--level" in result.stderr
    assert "E9" in result.stderr
    assert workspace.dump() == before


def test_help_lists_commands(workspace: Workspace) -> None:
    text = workspace.ok("--help").stdout

    for command in ("migrate", "check", "flag", "limits", "trust"):
        assert command in text
