"""Names, flags, policies, durations and decision numbers: the value rules of rampgate.core."""

from __future__ import annotations

from typing import Any

import pytest

from rampgate.core.decision import Decision, header_seconds, round_up_ms
from rampgate.core.durations import format_duration, parse_duration
from rampgate.core.flags import Flag, check_flag_config
from rampgate.core.names import (
    check_action,
    check_actor_id,
    check_actor_type,
    check_cost,
    check_level,
    check_percentage,
    check_tier,
    is_valid_action,
    parse_actor,
)
from rampgate.core.policies import Policy, PolicyTable, check_policy
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.core.trust import TrustProfile
from rampgate.errors import InvalidInput

# -- names ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["a", "send_message", "a" * 64, "v2.media:upload-fast_1", "0"])
def test_action_valid(action: str) -> None:
    assert check_action(action) == action
    assert is_valid_action(action)


@pytest.mark.parametrize("action", ["", "a" * 65, "Send", "send message", "send/message", "send\n", "é", None, 5])
def test_action_invalid(action: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_action(action)
    assert raised.value.field == "action"
    assert "a-z 0-9 _ : . -" in str(raised.value)
    assert not is_valid_action(action)


def test_actor_id_length_in_characters() -> None:
    assert check_actor_id("ж" * 256) == "ж" * 256
    for invalid in ("", "x" * 257, None, 42):
        with pytest.raises(InvalidInput, match="1 to 256 characters"):
            check_actor_id(invalid)


@pytest.mark.parametrize(
    ("check", "valid", "invalid"),
    [
        (check_actor_type, ["user", "device", "ip", "org", "service"], ["User", "bot", "", None, ["user"]]),
        (check_tier, ["A", "B", "C", "D"], ["a", "E", "", None, ["A"]]),
        (check_level, ["E0", "E5"], ["E6", "e5", "", None, ["E0"]]),
        (check_percentage, [0, 1, 100], [-1, 101, True, 50.0, "50", None]),
        (check_cost, [1, 1_000_000], [0, -1, 1_000_001, True, 1.0, "1", None]),
    ],
)
def test_value_checks(check: Any, valid: list[Any], invalid: list[Any]) -> None:
    for value in valid:
        assert check(value) == value
    for value in invalid:
        with pytest.raises(InvalidInput):
            check(value)


def test_parse_actor() -> None:
    assert parse_actor("user:u-42") == ("user", "u-42")
    assert parse_actor("ip:2001:db8::1") == ("ip", "2001:db8::1")


@pytest.mark.parametrize(
    ("text", "field"),
    [("u-42", "actor"), ("robot:u-42", "actor type"), ("user:", "actor id"), ("user:" + "x" * 257, "actor id")],
)
def test_parse_actor_invalid(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_actor(text)
    assert raised.value.field == field


def test_invalid_input_message() -> None:
    error = InvalidInput("--percentage", 101, "an integer from 0 to 100")
    assert str(error) == "invalid --percentage: 101; expected an integer from 0 to 100"
    long_error = InvalidInput("actor id", "x" * 10_000, "a string of 1 to 256 characters")
    assert len(str(long_error)) < 200


# -- flags ---------------------------------------------------------------------------


def test_flag_defaults() -> None:
    flag = Flag("rollout", True, 30)
    assert flag.actions is None
    assert flag.governs("anything")
    assert flag.group == "rollout"
    assert flag.shadow
    assert flag.percentage_for("anything") == 30


def test_flag_config_fields() -> None:
    flag = Flag(
        "rollout", True, 10,
        {"actions": ["a", "b"], "action_percentages": {"b": 50}, "group": "g", "shadow": False},
    )
    assert flag.governs("a")
    assert not flag.governs("c")
    assert flag.percentage_for("a") == 10
    assert flag.percentage_for("b") == 50
    assert flag.group == "g"
    assert not flag.shadow
    assert Flag("rollout", False, 100, {"action_percentages": {"b": 50}}).percentage_for("b") == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ([], "config"),
        ({"actions": "send_message"}, "config.actions"),
        ({"actions": ["Send"]}, "config.actions"),
        ({"action_percentages": [50]}, "config.action_percentages"),
        ({"action_percentages": {"Send": 50}}, "config.action_percentages"),
        ({"action_percentages": {"send": 101}}, "config.action_percentages.send"),
        ({"group": ""}, "config.group"),
        ({"group": 7}, "config.group"),
        ({"shadow": "false"}, "config.shadow"),
    ],
)
def test_flag_config_invalid(config: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_flag_config(config)
    assert raised.value.field == field


def test_flag_config_valid() -> None:
    assert check_flag_config(None) == {}
    config = {"actions": ["a"], "action_percentages": {"a": 0}, "group": "g", "shadow": True, "owner": "x"}
    assert check_flag_config(config) == config


# -- policies ------------------------------------------------------------------------


def test_policy_names() -> None:
    assert Policy(scope="tier", tier="B", action="media_upload", limit_value=5, window_seconds=60).name == (
        "tier:B:media_upload"
    )
    assert Policy(scope="global", action="search", limit_value=5, window_seconds=60).name == "global:*:search"
    actor = Policy(scope="actor", actor_type="user", actor_id="u-1", action="follow", limit_value=5, window_seconds=60)
    assert actor.name == "actor:user/u-1:follow"


@pytest.mark.parametrize(
    ("algorithm", "burst", "capacity"),
    [
        ("token_bucket", None, 5),
        ("token_bucket", 8, 8),
        ("gcra", 2, 2),
        ("fixed_window", 8, 5),
        ("sliding_window", 8, 5),
    ],
)
def test_policy_capacity(algorithm: str, burst: int | None, capacity: int) -> None:
    policy = Policy(scope="global", action="a", limit_value=5, window_seconds=60, algorithm=algorithm, burst=burst)
    assert policy.capacity == capacity


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scope": "team"}, "scope"),
        ({"action": "Bad Name"}, "action"),
        ({"scope": "tier", "tier": "E"}, "tier"),
        ({"scope": "actor", "actor_type": "bot", "actor_id": "x"}, "actor_type"),
        ({"scope": "actor", "actor_type": "user", "actor_id": ""}, "actor_id"),
        ({"algorithm": "leaky"}, "algorithm"),
        ({"limit_value": 0}, "limit"),
        ({"limit_value": 1_000_000_001}, "limit"),
        ({"window_seconds": 0}, "window"),
        ({"window_seconds": 366 * 86400 + 1}, "window"),
        ({"burst": 0}, "burst"),
        ({"cost_per_action": 0}, "cost_per_action"),
        ({"fail_mode": "ajar"}, "fail_mode"),
    ],
)
def test_check_policy_invalid(fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"scope": "global", "action": "a", "limit_value": 5, "window_seconds": 60}
    values.update(fields)
    with pytest.raises(InvalidInput) as raised:
        check_policy(Policy(**values))
    assert raised.value.field == field


def test_policy_table_resolution() -> None:
    table = PolicyTable(
        [
            Policy(scope="global", action="a", limit_value=1, window_seconds=60),
            Policy(scope="tier", tier="B", action="a", limit_value=2, window_seconds=60),
            Policy(scope="actor", actor_type="user", actor_id="vip", action="a", limit_value=3, window_seconds=60),
            Policy(scope="tier", tier="C", action="a", limit_value=4, window_seconds=60, enabled=False),
        ]
    )

    def limit_of(tier: str, actor_type: str, actor_id: str, action: str = "a") -> int | None:
        policy = table.resolve(action, tier, actor_type, actor_id)
        return None if policy is None else policy.limit_value

    assert limit_of("B", "user", "vip") == 3
    assert limit_of("B", "user", "other") == 2
    assert limit_of("A", "user", "other") == 1
    assert limit_of("C", "user", "other") == 1
    assert limit_of("B", "device", "vip") == 2
    assert limit_of("B", "user", "vip", action="b") is None


# -- snapshot ------------------------------------------------------------------------


def test_snapshot_route_prefers_listing_flag() -> None:
    snapshot = CatalogSnapshot(
        flags=[
            Flag("rate_limit_enforcement", True, 10),
            Flag("b_listing", True, 20, {"actions": ["upload"]}),
            Flag("a_listing", True, 30, {"actions": ["upload"]}),
            Flag("another_unlisted", True, 40),
        ]
    )
    upload = snapshot.route("upload")
    other = snapshot.route("search")
    assert upload is not None
    assert other is not None
    assert (upload.flag.name, upload.percentage) == ("a_listing", 30)
    assert (other.flag.name, other.percentage) == ("rate_limit_enforcement", 10)
    assert CatalogSnapshot(flags=[Flag("f", True, 5, {"actions": ["x"]})]).route("y") is None


def test_snapshot_trust_defaults_to_b() -> None:
    snapshot = CatalogSnapshot(trust=[TrustProfile("user", "u-1", "A", "E2")])
    assert snapshot.trust_of("user", "u-1") == ("A", "E2")
    assert snapshot.trust_of("user", "u-2") == ("B", "E0")
    assert snapshot.trust_of("device", "u-1") == ("B", "E0")


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("500ms", 0.5),
        ("1h30m", 5400), ("1h 30m", 5400), ("1.5h", 5400), (" 2h ", 7200), ("45", 45), (45, 45), (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", " ", "abc", "10x", "-5s", "h", "1hh", "s1", -1, True, None, float("inf"), [1]])
def test_parse_duration_invalid(text: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_duration(text, "bake")
    assert raised.value.field == "bake"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (59.6, "1m"), (60, "1m"), (90, "1m 30s"), (3600, "1h"), (5400, "1h 30m"), (86400, "24h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- decision numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "rounded"),
    [(0, 0.0), (-1, 0.0), (0.0004, 0.001), (11.9995, 12.0), (12.0, 12.0), (12.0001, 12.001),
     (12.000000000001, 12.0), (3600.0, 3600.0)],
)
def test_round_up_ms(seconds: float, rounded: float) -> None:
    assert round_up_ms(seconds) == rounded


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.001, 1), (0.5, 1), (1.0, 1), (1.0000000001, 1), (1.001, 2), (11.95, 12), (12.0, 12), (3600.0, 3600)],
)
def test_header_seconds(seconds: float, header: int) -> None:
    assert header_seconds(seconds) == header


def test_decision_fields() -> None:
    """to_dict carries exactly the public decision fields."""
    decision = Decision(
        False, "enforce", True, "limited", "media_upload", "B", "tier:B:media_upload", 5, 60, 0,
        60.0, 11.95, "user", "u-1", True,
    )
    assert list(decision.to_dict()) == [
        "allowed", "mode", "would_block", "reason", "action", "tier", "policy", "limit", "window_seconds",
        "remaining", "reset_after", "retry_after", "message",
    ]
    assert decision.retry_after_header == 12
    assert decision.to_dict("ru")["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."


@pytest.mark.parametrize("text", ["99999999999d", "5300w", "36525.1d", "9" * 400, 64_000_000_000, 1e300])
def test_parse_duration_over_100_years(text: Any) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_duration(text, "since")
    assert raised.value.field == "since"
    assert "at most 100 years" in str(raised.value)


def test_parse_duration_100_years_allowed() -> None:
    assert parse_duration("36525d") == 100 * 365.25 * 86400
