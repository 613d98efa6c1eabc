"""The replay's inputs: action map, trust CSV, policies TOML, injected bots and the virtual clock."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from rampgate.core.defaults import default_policies
from rampgate.core.policies import Policy
from rampgate.errors import ConfigurationError, InvalidInput
from rampgate.simulate.actions import ActionMap
from rampgate.simulate.bots import BotSchedule, BotSpec
from rampgate.simulate.clock import VirtualClock
from rampgate.simulate.config import build_replay_settings
from rampgate.simulate.demo import DEMO_ACTIONS, DEMO_PLAN, DEMO_POLICIES
from rampgate.simulate.policies import load_policies, merge_policies
from rampgate.simulate.trust import load_trust

ACTION_MAP = """
default = "page_view"

[[rules]]
method = "GET"
path = "^/images/"
action = "media_view"

[[rules]]
path = "^/images/big"
action = "media_download"

[[rules]]
method = ["post", "PUT"]
action = "create_post"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- action map ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        ("GET /images/a.gif HTTP/1.0", "media_view"),
        ("GET /images/big.mpg HTTP/1.0", "media_view"),  # first match wins
        ("HEAD /images/big.mpg HTTP/1.0", "media_download"),
        ("POST /cgi-bin/form HTTP/1.0", "create_post"),
        ("put /upload HTTP/1.1", "create_post"),  # methods compare case-insensitively
        ("GET /index.html HTTP/1.0", "page_view"),
        ("-", "page_view"),  # a connection without a request
    ],
)
def test_action_map_first_match(tmp_path: Path, request_line: str, expected: str) -> None:
    action_map = ActionMap.load(write(tmp_path / "actions.toml", ACTION_MAP))

    assert action_map.action_for_request(request_line) == expected
    assert action_map.action_for_request(request_line) == expected  # cached


def test_action_map_default_api_call() -> None:
    action_map = ActionMap()

    assert action_map.action_for("GET", "/") == "api_call"
    assert action_map.actions == ("api_call",)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[rules]]\npath = "("\naction = "x"', "rules[1].path"),
        ('[[rules]]\npath = "^/"\naction = "Bad Action"', "rules[1].action"),
        ('[[rules]]\npath = "^/"\naction = "x"\nweight = 2', "rules[1] key"),
        ('[[rules]]\nmethod = 3\naction = "x"', "rules[1].method"),
        ('default = "x"\nrule = []', "action map key"),
    ],
)
def test_action_map_invalid_names_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        ActionMap.load(write(tmp_path / "actions.toml", text))

    assert error.value.field == field


def test_action_map_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as error:
        ActionMap.load(write(tmp_path / "actions.toml", "[[rules]\n"))

    assert error.value.field == "--actions"


# -- trust ------------------------------------------------------------------------------


def test_trust_rows(tmp_path: Path) -> None:
    text = "actor_type,actor_id,tier,enforcement_level\nip,h1.example.com,A\nip,h2.example.com,C,E5\n\nip,h1.example.com,D\n"

    profiles = load_trust(write(tmp_path / "trust.csv", text))

    found = {(p.actor_id, p.risk_tier, p.enforcement_level) for p in profiles}
    assert found == {("h1.example.com", "D", "E0"), ("h2.example.com", "C", "E5")}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("ip,h1,Z", "--trust line 1 tier"),
        ("robot,h1,A", "--trust line 1 actor_type"),
        ("ip,h1,A,E9", "--trust line 1 enforcement_level"),
        ("ip,h1", "--trust line 1"),
    ],
)
def test_trust_invalid_row_names_line(tmp_path: Path, row: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_trust(write(tmp_path / "trust.csv", row + "\n"))

    assert error.value.field == field


# -- policies ---------------------------------------------------------------------------


def test_policies_override_and_add(tmp_path: Path) -> None:
    text = """
[[policies]]
action = "media_upload"
tier = "B"
limit = 10
window = "1m"

[[policies]]
action = "media_view"
actor = "ip:h1.example.com"
limit = 3
window = 10
algorithm = "sliding_window"

[[policies]]
action = "search"
limit = 1000
window = "1h"
burst = 50
"""
    overrides = load_policies(write(tmp_path / "policies.toml", text))

    merged = {p.name: p for p in merge_policies(default_policies(), overrides)}

    assert merged["tier:B:media_upload"].limit_value == 10
    assert merged["tier:B:media_upload"].window_seconds == 60
    assert merged["actor:ip/h1.example.com:media_view"].algorithm == "sliding_window"
    assert merged["global:*:search"].burst == 50
    assert merged["global:*:search"].window_seconds == 3600
    assert len(merged) == len(default_policies()) + 2


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('action = "x"\ntier = "B"\nwindow = "1m"', "policies[1].limit"),
        ('action = "x"\ntier = "B"\nlimit = 1', "policies[1].window"),
        ('action = "x"\ntier = "B"\nlimit = 0\nwindow = "1m"', "policies[1].limit"),
        ('action = "x"\ntier = "Q"\nlimit = 1\nwindow = "1m"', "policies[1].tier"),
        ('action = "x"\ntier = "B"\nlimit = 1\nwindow = "1.5s"', "policies[1].window"),
        ('action = "x"\ntier = "B"\nlimit = 1\nwindow = "1m"\nalgorithm = "leaky"', "policies[1].algorithm"),
        ('action = "x"\ntier = "B"\nactor = "ip:h"\nlimit = 1\nwindow = "1m"', "policies[1]"),
        ('action = "x"\ntier = "B"\nscope = "global"\nlimit = 1\nwindow = "1m"', "policies[1].scope"),
        ('action = "x"\nlimit = 1\nwindow = "1m"\ncolour = "red"', "policies[1] key"),
    ],
)
def test_policies_invalid_names_field(tmp_path: Path, table: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        load_policies(write(tmp_path / "policies.toml", "[[policies]]\n" + table + "\n"))

    assert error.value.field == field


def test_policies_duplicate_rejected(tmp_path: Path) -> None:
    table = '[[policies]]\naction = "x"\ntier = "B"\nlimit = 1\nwindow = "1m"\n'

    with pytest.raises(ConfigurationError) as error:
        load_policies(write(tmp_path / "policies.toml", table * 2))

    assert error.value.field == "policies[2]"


def test_demo_files_load() -> None:
    settings = build_replay_settings(plan=DEMO_PLAN, actions=DEMO_ACTIONS, policies=DEMO_POLICIES)

    names = {p.name: p for p in settings.policies}
    assert names["tier:B:media_view"] == Policy("tier", "media_view", 20, 60, "sliding_window", tier="B")
    assert settings.plan.min_decisions == 50
    assert [s.percentage for s in settings.plan.stages] == [5, 10, 25, 50, 100]
    assert settings.action_map.action_for("GET", "/images/ksclogo-medium.gif") == "media_view"
    assert settings.action_map.action_for("GET", "/shuttle/countdown/") == "page_view"
    assert settings.action_map.action_for("GET", "/htbin/wais.pl") == "search"


def test_settings_percentage_out_of_range() -> None:
    with pytest.raises(InvalidInput) as error:
        build_replay_settings(percentage=101)

    assert error.value.field == "--percentage"


# -- bots and clock -----------------------------------------------------------------------


def take(schedule: BotSchedule, until: float) -> list[tuple[float, str]]:
    sent = []
    while schedule.next_time() <= until:
        sent.append(schedule.pop())
    return sent


def test_bots_deterministic_under_seed() -> None:
    first = take(BotSchedule(BotSpec(3, 2.0, seed=7), 1000.0), 1010.0)
    again = take(BotSchedule(BotSpec(3, 2.0, seed=7), 1000.0), 1010.0)
    other = take(BotSchedule(BotSpec(3, 2.0, seed=8), 1000.0), 1010.0)

    assert first == again
    assert first != other


def test_bots_rate_and_order() -> None:
    schedule = BotSchedule(BotSpec(4, 0.5, seed=1), 0.0)

    sent = take(schedule, 100.0)

    times = [at for at, _ in sent]
    assert times == sorted(times)
    assert len(sent) == 4 * 50  # 0.5 per second for 100 s, phases within the first interval
    assert len(set(schedule.actor_ids)) == 4
    for bot_id in schedule.actor_ids:
        own = [at for at, sender in sent if sender == bot_id]
        assert all(abs(b - a - 2.0) < 1e-9 for a, b in pairwise(own))


@pytest.mark.parametrize(("count", "rate", "field"), [(0, 1.0, "--inject-bots"), (2, 0.0, "--bot-rate"), (2, -1.0, "--bot-rate")])
def test_bots_invalid_names_option(count: int, rate: float, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        BotSpec(count, rate)

    assert error.value.field == field


def test_virtual_clock_never_goes_back() -> None:
    clock = VirtualClock(100.0)

    assert clock.advance_to(150.0) == 150.0
    assert clock.advance_to(120.0) == 150.0
    assert clock() == 150.0
