"""The replay loop against production code: Gate.decide equivalence, the rollout, bots and recommendations."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.gates import PASS, StageMetrics, evaluate_gate
from rampgate.core.plans import Plan, plan_from_dict
from rampgate.core.policies import Policy
from rampgate.core.trust import TrustProfile
from rampgate.gate import Gate, memory_gate
from rampgate.simulate.actions import ActionMap
from rampgate.simulate.bots import BotSpec
from rampgate.simulate.clock import VirtualClock
from rampgate.simulate.config import build_replay_settings
from rampgate.simulate.demo import DEMO_ACTIONS, DEMO_PLAN, DEMO_POLICIES, DEMO_TRACE
from rampgate.simulate.readers import TraceReader
from rampgate.simulate.replay import ReplaySettings, replay_trace
from rampgate.simulate.report import SimulationReport, report_to_document

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()


def clf_line(at: float, host: str, path: str = "/", method: str = "GET") -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'{host} - - [{stamp}] "{method} {path} HTTP/1.0" 200 100'


def write_trace(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replay(path: Path, settings: ReplaySettings, fmt: str | None = None) -> SimulationReport:
    with TraceReader.open(path, fmt) as reader:
        return replay_trace(reader, settings)


def plan(**document: object) -> Plan:
    return plan_from_dict(dict(document))


def tier_policy(action: str, limit: int, window: int, algorithm: str = "token_bucket", tier: str = "B") -> Policy:
    return Policy("tier", action, limit, window, algorithm, tier=tier)


def settings_with(policies: Iterable[Policy], **changes: object) -> ReplaySettings:
    base = build_replay_settings()
    merged = {p.name: p for p in base.policies}
    merged.update({p.name: p for p in policies})
    return replace(base, policies=tuple(merged.values()), **changes)  # type: ignore[arg-type]


def without_speed(report: SimulationReport) -> dict[str, object]:
    document = report_to_document(report, include_top_blocked=True)
    document.pop("lines_per_second")
    return document


def gate_for(clock: VirtualClock, settings: ReplaySettings) -> Gate:
    """Return a memory gate whose catalog contains the replay's policies and trust profiles, with the flag at 100 %."""
    gate = memory_gate(clock=clock, watch=False, audit=False)
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, config={})
    for policy in settings.policies:
        gate.catalog.set_policy(policy)
    for profile in settings.trust:
        gate.catalog.set_trust(profile.actor_type, profile.actor_id, tier=profile.risk_tier, level=profile.enforcement_level)
    gate.refresh()
    return gate


def decide_with_gate(path: Path, settings: ReplaySettings, until: float | None = None) -> dict[str, int]:
    """Feed the trace's lines one by one to Gate.decide; return the blocked count per actor."""
    clock = VirtualClock()
    gate = gate_for(clock, settings)
    blocked: dict[str, int] = {}
    try:
        with TraceReader.open(path) as reader:
            for timestamp, actor_type, actor_id, action, request in reader:
                if until is not None and timestamp >= until:
                    break
                clock.advance_to(timestamp)
                if action is None:
                    action = settings.action_map.action_for_request(request or "")
                decision = gate.decide(actor_type, actor_id, action)
                if not decision.allowed:
                    blocked[f"{actor_type}:{actor_id}"] = blocked.get(f"{actor_type}:{actor_id}", 0) + 1
    finally:
        gate.close()
    return blocked


# -- the bundled trace ----------------------------------------------------------------


def test_replay_bundled_trace_whole() -> None:
    report = replay(DEMO_TRACE, build_replay_settings())

    assert report.lines == 13_200
    assert report.malformed == 0
    assert report.decisions + report.malformed == report.lines
    assert report.bot_decisions == 0


def test_replay_default_plan_trace_ended() -> None:
    # At 1 % the morning gives fewer than the 100 decisions a stage needs.
    report = replay(DEMO_TRACE, build_replay_settings())

    assert report.outcome.state == "trace_ended"
    assert report.outcome.stage == 1
    assert report.outcome.percentage == 1
    assert report.stages[0].decisions < 100
    assert report.stages[0].verdict == "trace_ended"


def test_replay_twice_identical() -> None:
    settings = build_replay_settings(plan=DEMO_PLAN, actions=DEMO_ACTIONS, policies=DEMO_POLICIES, bots=BotSpec(2, 0.2, 5))

    first = replay(DEMO_TRACE, settings)
    second = replay(DEMO_TRACE, settings)

    assert without_speed(first) == without_speed(second)


def test_replay_demo_rolls_back_on_false_positives() -> None:
    report = replay(DEMO_TRACE, build_replay_settings(plan=DEMO_PLAN, actions=DEMO_ACTIONS, policies=DEMO_POLICIES))

    assert [row.verdict for row in report.stages] == ["promoted", "promoted", "promoted", "rolled_back"]
    assert report.outcome.state == "rolled_back"
    assert report.outcome.failed_gate is not None
    assert report.outcome.failed_gate["metric"] == "false_positive_rate"
    assert [(r.tier, r.action) for r in report.recommendations] == [("B", "media_view")]


def test_replay_percentage_100_matches_gate(tmp_path: Path) -> None:
    trust_rows = [
        TrustProfile("ip", "h0868.ksc.nasa.gov", "A"),
        TrustProfile("ip", "h0922.atk.com", "C"),
        TrustProfile("ip", "h0317.dfrc.nasa.gov", "B", "E5"),
    ]
    settings = replace(
        build_replay_settings(percentage=100, actions=DEMO_ACTIONS, policies=DEMO_POLICIES, top_blocked=2000),
        trust=tuple(trust_rows),
    )

    report = replay(DEMO_TRACE, settings)
    expected = decide_with_gate(DEMO_TRACE, settings)

    assert report.stages[0].blocked == sum(expected.values())
    assert sum(expected.values()) > 0
    assert {a.actor_type + ":" + a.actor_id: a.blocked for a in report.top_blocked} == expected


def test_replay_shuffled_and_truncated(tmp_path: Path) -> None:
    with gzip.open(DEMO_TRACE, "rt") as handle:
        lines = [next(handle).rstrip("\n") for _ in range(2000)]
    random.Random(3).shuffle(lines)
    lines[-1] = lines[-1][:60]  # cut inside the request
    path = write_trace(tmp_path / "shuffled.log", lines)
    settings = settings_with([tier_policy("api_call", 3, 60)], percentage=100, top_blocked=2000)

    report = replay(path, settings)
    expected = decide_with_gate(path, settings)

    assert report.lines == 2000
    assert report.malformed == 1
    assert report.decisions == 1999
    assert report.malformed_examples[0].line == 2000
    assert report.stages[0].decisions == 1999
    assert report.stages[0].blocked == sum(expected.values())
    assert report.stages[0].blocked > 0


# -- the rollout on a virtual clock -------------------------------------------------------


def steady_traffic(hosts: int, start: float, seconds: int, every: int = 1) -> list[str]:
    """One request per ``every`` seconds, cycling through ``hosts`` hosts."""
    return [clf_line(start + t, f"host{t // every % hosts}.example") for t in range(0, seconds, every)]


def test_rollout_rolls_back_at_first_check_after_block(tmp_path: Path) -> None:
    lines = steady_traffic(50, START, 600)  # 1 blocked actor in 51 is a false-positive rate of 0.0196
    burst = [clf_line(START + 300, "burst.example")] * 5
    path = write_trace(tmp_path / "trace.log", sorted(lines + burst, key=lambda line: line[line.index("[") :]))
    settings = settings_with(
        [tier_policy("api_call", 3, 60)],
        plan=plan(min_decisions=50, stages=[{"percentage": 100, "bake": "2h"}], gates=[{"metric": "false_positive_rate", "max": 0.01}]),
    )

    report = replay(path, settings)

    assert report.outcome.state == "rolled_back"
    assert report.outcome.at == START + 360  # the check after the burst, long before the bake ends
    assert report.stages[0].blocked == 2


def test_rollout_gap_of_days_promotes_once_bake_ends(tmp_path: Path) -> None:
    lines = [clf_line(START, "a.example"), clf_line(START + 10 * 86400, "b.example")]
    path = write_trace(tmp_path / "trace.log", lines)
    settings = settings_with(
        [], plan=plan(min_decisions=0, stages=[{"percentage": 10, "bake": "1h"}, {"percentage": 100}], gates=[])
    )

    report = replay(path, settings)

    assert report.outcome.state == "completed"
    assert report.outcome.at == START + 3600
    assert [row.verdict for row in report.stages] == ["promoted", "completed"]
    assert report.stages[1].decisions == 1  # the last stage counts to the end of the trace


def test_rollout_pause_plan_ends_with_trace(tmp_path: Path) -> None:
    lines = steady_traffic(50, START, 600)
    burst = [clf_line(START + 120, "burst.example")] * 5
    path = write_trace(tmp_path / "trace.log", sorted(lines + burst, key=lambda line: line[line.index("[") :]))
    settings = settings_with(
        [tier_policy("api_call", 3, 60)],
        plan=plan(on_failure="pause", min_decisions=10, stages=[{"percentage": 100, "bake": "1h"}], gates=[{"metric": "false_positive_rate", "max": 0.01}]),
    )

    report = replay(path, settings)

    assert report.outcome.state == "trace_ended"
    assert report.outcome.failed_gate is not None
    assert report.outcome.failed_gate["metric"] == "false_positive_rate"
    assert report.stages[0].verdict == "paused"


def test_rollout_manual_approval_promotes(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "trace.log", steady_traffic(50, START, 3000, every=5))
    settings = settings_with(
        [],
        plan=plan(approval="manual", min_decisions=5, stages=[{"percentage": 50, "bake": "10m"}, {"percentage": 100}], gates=[]),
    )

    report = replay(path, settings)

    assert report.outcome.state == "completed"
    assert report.outcome.at == START + 600


def test_rollout_stage_extended_without_evidence(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "trace.log", steady_traffic(20, START, 3000, every=60))
    settings = settings_with([], plan=plan(min_decisions=1000, stages=[{"percentage": 100, "bake": "10m"}], gates=[]))

    report = replay(path, settings)

    assert report.outcome.state == "trace_ended"
    assert report.stages[0].extended is True


def test_replay_empty_trace(tmp_path: Path) -> None:
    report = replay(write_trace(tmp_path / "empty.log", []), build_replay_settings())

    assert report.lines == 0
    assert report.stages == []
    assert report.outcome.state == "trace_ended"
    assert report.outcome.stage == 0


def test_replay_csv_actor_types(tmp_path: Path) -> None:
    rows = ["timestamp,actor_type,actor_id,action"]
    rows += [f"{START + n},user,u-1,media_upload" for n in range(8)]
    rows += [f"{START + n},device,u-1,media_upload" for n in range(2)]
    path = write_trace(tmp_path / "trace.csv", rows)

    report = replay(path, build_replay_settings(percentage=100))

    assert report.stages[0].actors_enforced == 2  # user:u-1 and device:u-1 are two actors
    assert report.stages[0].blocked == 3  # tier B media_upload: 5 per 60 s, no burst
    assert report.top_blocked[0].actor_type == "user"


# -- bots ------------------------------------------------------------------------------------


def test_bots_are_the_abusers(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "trace.log", steady_traffic(100, START, 600, every=2))
    settings = settings_with(
        [tier_policy("api_call", 30, 60)], percentage=100, bots=BotSpec(2, 1.0, seed=11), top_blocked=5
    )

    report = replay(path, settings)

    assert report.decisions == 300
    assert 2 * 598 <= report.bot_decisions <= 2 * 599
    assert report.stages[0].blocked > 0
    assert report.stages[0].false_positive_rate == 0.0  # only bots were blocked
    assert report.stages[0].legitimate_actors == 100
    assert all(actor.is_bot for actor in report.top_blocked)


def test_bots_seed_changes_bots(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "trace.log", steady_traffic(10, START, 120))

    ids = []
    for seed in (1, 1, 2):
        settings = settings_with([tier_policy("api_call", 5, 60)], percentage=100, bots=BotSpec(1, 1.0, seed=seed))
        report = replay(path, settings)
        ids.append(report.top_blocked[0].actor_id)

    assert ids[0] == ids[1]
    assert ids[0] != ids[2]


# -- recommendations ------------------------------------------------------------------------


def gate_passes(metric: str, maximum: float, blocked: dict[str, int], decisions: int, actors: int) -> bool:
    metrics = StageMetrics(
        decisions=decisions,
        blocked=sum(blocked.values()),
        actors=actors,
        blocked_actors=len(blocked),
        legitimate_actors=actors,
        legitimate_blocked_actors=len(blocked),
    )
    return evaluate_gate(plan(gates=[{"metric": metric, "max": maximum}]).gates[0], metrics, 0).status == PASS


def count_until(path: Path, until: float) -> tuple[int, int]:
    decisions = 0
    actors = set()
    with TraceReader.open(path) as reader:
        for timestamp, _, actor_id, _, _ in reader:
            if timestamp >= until:
                break
            decisions += 1
            actors.add(actor_id)
    return decisions, len(actors)


def test_recommendation_passes_false_positive_gate() -> None:
    settings = replace(
        build_replay_settings(actions=DEMO_ACTIONS, policies=DEMO_POLICIES),
        plan=plan(min_decisions=50, stages=[{"percentage": 100, "bake": "8h"}], gates=[{"metric": "false_positive_rate", "max": 0.001}]),
    )
    report = replay(DEMO_TRACE, settings)
    assert report.outcome.state == "rolled_back"
    assert report.outcome.at is not None
    assert report.recommendations
    decisions, actors = count_until(DEMO_TRACE, report.outcome.at)

    recommended = {r.policy: r.limit for r in report.recommendations}
    applied = [replace(p, limit_value=recommended.get(p.name, p.limit_value)) for p in settings.policies]
    one_less = [replace(p, limit_value=recommended.get(p.name, p.limit_value + 1) - 1) for p in settings.policies]

    blocked = decide_with_gate(DEMO_TRACE, replace(settings, policies=tuple(applied)), until=report.outcome.at)
    blocked_below = decide_with_gate(DEMO_TRACE, replace(settings, policies=tuple(one_less)), until=report.outcome.at)
    assert gate_passes("false_positive_rate", 0.001, blocked, decisions, actors)
    assert not gate_passes("false_positive_rate", 0.001, blocked_below, decisions, actors)


def test_recommendations_pass_block_rate_gate_together(tmp_path: Path) -> None:
    lines = steady_traffic(10, START, 1200)
    lines += [clf_line(START + t, "host0.example", "/images/a.gif") for t in range(0, 1200, 3)]
    path = write_trace(tmp_path / "trace.log", sorted(lines, key=lambda line: line[line.index("[") :]))
    actions = ActionMap.from_document({"rules": [{"path": "^/images/", "action": "media_view"}]})
    settings = settings_with(
        [tier_policy("api_call", 4, 60), tier_policy("media_view", 5, 60, "sliding_window")],
        action_map=actions,
        plan=plan(min_decisions=100, stages=[{"percentage": 100, "bake": "1h"}], gates=[{"metric": "block_rate", "max": 0.02}]),
    )

    report = replay(path, settings)
    assert report.outcome.state == "rolled_back"
    assert report.outcome.at is not None
    assert {r.action for r in report.recommendations} == {"api_call", "media_view"}

    recommended = {r.policy: r.limit for r in report.recommendations}
    applied = [replace(p, limit_value=recommended.get(p.name, p.limit_value)) for p in settings.policies]
    blocked = decide_with_gate(path, replace(settings, policies=tuple(applied)), until=report.outcome.at)
    decisions, actors = count_until(path, report.outcome.at)
    assert gate_passes("block_rate", 0.02, blocked, decisions, actors)


def test_recommendation_none_without_failure() -> None:
    report = replay(DEMO_TRACE, build_replay_settings(percentage=100))

    assert report.outcome.failed_gate is None
    assert report.recommendations == []


def test_report_json_keys() -> None:
    report = replay(DEMO_TRACE, build_replay_settings(percentage=50, actions=DEMO_ACTIONS, policies=DEMO_POLICIES))

    document = report_to_document(report)

    assert list(document) == [
        "lines", "decisions", "bot_decisions", "malformed", "malformed_examples", "stages", "outcome",
        "recommendations", "lines_per_second",
    ]
    assert list(document["stages"][0]) == [
        "stage", "percentage", "actors_enforced", "decisions", "blocked", "block_rate", "false_positive_rate",
        "complaints", "verdict",
    ]
    assert list(document["outcome"]) == ["state", "stage", "percentage", "failed_gate"]
    assert document["outcome"]["state"] == "trace_ended"
    assert document["stages"][0]["verdict"] in ("passed", "failed", "pending")
