"""The rollout controller on PostgreSQL, judging traffic from 2,000 actors through real gates."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
import sqlalchemy as sa
from rollout_traffic import (
    Traffic,
    latest,
    open_migrated_catalog,
    scaled_default_plan,
    set_generous_limits,
    transition_rows,
    wait_for,
    wait_for_state,
)

from rampgate.catalog import schema
from rampgate.catalog.repository import Catalog
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import GateSpec, Stage
from rampgate.core.policies import Policy
from rampgate.rollout import metrics as metrics_module
from rampgate.rollout import telemetry
from rampgate.rollout.controller import RolloutController
from rampgate.rollout.metrics import run_sql_gate
from rampgate.rollout.operations import RolloutOperations
from rampgate.rollout.status import build_status
from rampgate.rollout.webhook import WebhookSender

pytestmark = pytest.mark.integration

FLAG = ENFORCEMENT_FLAG


@pytest.fixture
def catalog(postgres_url: str) -> Iterator[Catalog]:
    catalog = open_migrated_catalog(postgres_url)
    yield catalog
    catalog.engine.dispose()


class RunningController:
    """A :class:`RolloutController` looping in a thread until the block ends."""

    def __init__(self, controller: RolloutController) -> None:
        self.controller = controller
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=controller.run, args=(self.stop_event,), daemon=True)

    def __enter__(self) -> RolloutController:
        self.thread.start()
        return self.controller

    def __exit__(self, *exc_info: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


def _controller(catalog: Catalog, **options: object) -> RolloutController:
    options.setdefault("lease_seconds", 3.0)
    options.setdefault("tick_seconds", 0.2)
    return RolloutController(catalog, flag_name=FLAG, **options)  # type: ignore[arg-type]


def _operations(catalog: Catalog) -> RolloutOperations:
    return RolloutOperations(catalog)


def test_controller_completes_with_generous_limits(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    _operations(catalog).start(FLAG, scaled_default_plan(), changed_by="test", via="cli")
    before = telemetry.TRANSITIONS.labels(flag=FLAG, event="promoted")._value.get()

    with Traffic(postgres_url) as traffic, RunningController(_controller(catalog)):
        record = wait_for_state(catalog, {"completed", "rolled_back", "aborted"}, timeout=60)

    assert record.rollout.state == "completed", record.rollout.transitions
    assert traffic.blocked == 0
    flag = catalog.get_flag(FLAG)
    assert flag.enabled
    assert flag.percentage == 100

    events = [(t.event, t.percentage) for t in record.rollout.transitions]
    assert events == [
        ("started", 1),
        ("promoted", 10),
        ("promoted", 25),
        ("promoted", 50),
        ("promoted", 100),
        ("completed", 100),
    ]
    status = build_status(catalog, FLAG)
    assert [step["step"] for step in status["checklist"]] == [
        "enabled at 1 %",
        "ramped to 10 %",
        "ramped to 25 %",
        "ramped to 50 %",
        "ramped to 100 %",
    ]
    assert all(step["at"] is not None and step["at"].endswith("Z") for step in status["checklist"])
    assert status["rollout"]["state"] == "completed"
    assert telemetry.TRANSITIONS.labels(flag=FLAG, event="promoted")._value.get() - before == 4
    assert telemetry.STAGE.labels(flag=FLAG)._value.get() == 5


def test_controller_bakes_each_stage(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    plan = scaled_default_plan(bake_seconds=1.0)
    _operations(catalog).start(FLAG, plan, changed_by="test", via="cli")

    with Traffic(postgres_url), RunningController(_controller(catalog)):
        record = wait_for_state(catalog, {"completed", "rolled_back"}, timeout=60)

    times = [t.at for t in record.rollout.transitions]
    for earlier, later in zip(times[:4], times[1:5]):
        assert later - earlier >= 1.0


def test_controller_rolls_back_on_block_rate(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    catalog.set_policy(
        Policy(scope="tier", tier="B", action="api_call", limit_value=1, window_seconds=60), changed_by="test"
    )
    _operations(catalog).start(FLAG, scaled_default_plan(bake_seconds=30), changed_by="test", via="cli")

    with Traffic(postgres_url, actions=("api_call",)), RunningController(_controller(catalog)):
        record = wait_for_state(catalog, {"rolled_back", "completed"}, timeout=30)

    assert record.rollout.state == "rolled_back"
    assert record.rollout.stage == 1
    assert record.rollout.failed_gate is not None
    assert record.rollout.failed_gate["metric"] == "block_rate"
    assert record.rollout.failed_gate["value"] > 0.05
    assert record.rollout.failed_gate["max"] == 0.05
    assert [t.event for t in record.rollout.transitions] == ["started", "rolled_back"]
    flag = catalog.get_flag(FLAG)
    assert not flag.enabled
    assert flag.percentage == 0
    status = build_status(catalog, FLAG)
    assert status["rollout"]["failed_gate"]["metric"] == "block_rate"
    changes = [c for c in catalog.list_changes(entity="flag") if c["changed_by"] == "controller"]
    assert changes[0]["after"]["enabled"] is False


def test_controller_rolls_back_on_complaints(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    _operations(catalog).start(FLAG, scaled_default_plan(bake_seconds=30), changed_by="test", via="cli")

    with Traffic(postgres_url), RunningController(_controller(catalog)):
        time.sleep(1.0)
        assert latest(catalog).rollout.state == "running"
        with catalog.engine.begin() as connection:
            connection.execute(
                sa.insert(schema.appeals).values(
                    actor_type="user",
                    actor_id="u-0001",
                    action="send_message",
                    text="I was only replying to my friends",
                    status="open",
                    created_at=datetime.now(timezone.utc),
                )
            )
        record = wait_for_state(catalog, {"rolled_back"}, timeout=10)

    assert record.rollout.stage == 1
    assert record.rollout.failed_gate == {"metric": "complaints", "value": 1.0, "max": 0}
    assert not catalog.get_flag(FLAG).enabled


def test_controller_extends_stage_without_traffic(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    plan = scaled_default_plan(bake_seconds=1.0, min_decisions=10_000)
    _operations(catalog).start(FLAG, plan, changed_by="test", via="cli")

    with Traffic(postgres_url, actors=200), RunningController(_controller(catalog)):
        wait_for(
            lambda: any(t.event == "extended" for t in latest(catalog).rollout.transitions),
            timeout=15,
            message="an extended transition",
        )
        time.sleep(2.0)

    record = latest(catalog)
    assert record.rollout.state == "running"
    assert record.rollout.stage == 1
    assert [t.event for t in record.rollout.transitions] == ["started", "extended"]
    assert "of 10000 enforced decisions" in (record.rollout.transitions[1].reason or "")
    assert catalog.get_flag(FLAG).percentage == 1


def test_controller_aborts_on_sql_rollback(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    # A long check interval: the disable must still be seen within about a second.
    plan = scaled_default_plan(bake_seconds=60, check_interval_seconds=600)
    _operations(catalog).start(FLAG, plan, changed_by="test", via="cli")

    with RunningController(_controller(catalog, tick_seconds=1.0)):
        wait_for(lambda: latest(catalog).version > 1, timeout=10, message="the controller to attach")
        subprocess.run(
            [
                "psql",
                postgres_url,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                "update public.feature_flags set enabled = false, rollout_percentage = 0, updated_at = now() "
                "where flag_name = 'rate_limit_enforcement';",
            ],
            check=True,
            capture_output=True,
        )
        disabled_at = time.monotonic()
        record = wait_for_state(catalog, {"aborted"}, timeout=5)
        noticed_after = time.monotonic() - disabled_at

    assert noticed_after < 2.0
    assert [t.event for t in record.rollout.transitions] == ["started", "aborted"]
    assert record.rollout.transitions[-1].reason == "flag disabled outside the rollout"
    flag = catalog.get_flag(FLAG)
    assert not flag.enabled
    assert flag.percentage == 0


def test_controller_abort_command_allows_at_once(catalog: Catalog, postgres_url: str) -> None:
    catalog.set_policy(
        Policy(scope="tier", tier="B", action="media_upload", limit_value=1, window_seconds=3600), changed_by="test"
    )
    # One stage at 100 %, so that the test's actor is surely in the cohort.
    plan = scaled_default_plan(stages=(Stage(100, 60.0),))
    _operations(catalog).start(FLAG, plan, changed_by="test", via="cli")

    with Traffic(postgres_url, actors=0) as traffic:
        gate = traffic.gate
        gate.decide("user", "u-abort", "media_upload")
        assert not gate.decide("user", "u-abort", "media_upload").allowed

        _operations(catalog).abort(FLAG, reason="limits too tight", changed_by="test", via="cli")
        aborted_at = time.monotonic()
        wait_for(lambda: gate.decide("user", "u-abort", "media_upload").allowed, timeout=1.0, message="allowed again", interval=0.02)
        allowed_after = time.monotonic() - aborted_at

    assert allowed_after < 1.0
    record = latest(catalog)
    assert record.rollout.state == "aborted"
    assert record.rollout.transitions[-1].reason == "limits too tight"


def test_controller_pause_keeps_bake_and_percentage(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    plan = scaled_default_plan(bake_seconds=3.0)
    operations = _operations(catalog)
    operations.start(FLAG, plan, changed_by="test", via="cli")

    with Traffic(postgres_url), RunningController(_controller(catalog)):
        time.sleep(1.5)
        operations.pause(FLAG, changed_by="test", via="cli")
        paused = latest(catalog)
        time.sleep(4.0)
        still_paused = latest(catalog)
        operations.resume(FLAG, changed_by="test", via="cli")
        record = wait_for(
            lambda: latest(catalog).rollout.stage == 2 and latest(catalog), timeout=15, message="stage 2"
        )

    assert still_paused.rollout.state == "paused"
    assert still_paused.rollout.stage == 1
    assert still_paused.rollout.baked_seconds == pytest.approx(paused.rollout.baked_seconds)
    assert 0.5 < paused.rollout.baked_seconds < 3.0
    assert catalog.get_flag(FLAG).enabled
    events = [t.event for t in record.rollout.transitions]  # type: ignore[union-attr]
    assert events[:4] == ["started", "paused", "resumed", "promoted"]


def test_controller_manual_approval_waits(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    plan = scaled_default_plan(bake_seconds=1.0, approval="manual")
    operations = _operations(catalog)
    operations.start(FLAG, plan, changed_by="test", via="cli")

    with Traffic(postgres_url), RunningController(_controller(catalog)):
        time.sleep(3.0)
        waiting = latest(catalog)
        operations.advance(FLAG, changed_by="test", via="cli")
        promoted = latest(catalog)

    assert waiting.rollout.stage == 1
    assert waiting.rollout.state == "running"
    assert promoted.rollout.stage == 2
    assert promoted.rollout.transitions[-1].reason == "approved by an operator"


def test_controller_one_acts_at_a_time(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    _operations(catalog).start(FLAG, scaled_default_plan(bake_seconds=1.0), changed_by="test", via="cli")
    first = _controller(catalog, holder="first")
    second = _controller(catalog, holder="second")

    with Traffic(postgres_url), RunningController(first), RunningController(second):
        record = wait_for_state(catalog, {"completed", "rolled_back"}, timeout=60)

    assert record.rollout.state == "completed"
    rows = transition_rows(catalog)
    events = Counter((row.event, row.percentage) for row in rows)
    assert all(count == 1 for count in events.values()), events
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    holders = {first._leases[FLAG].held, second._leases[FLAG].held}
    assert holders == {False}  # both released on the way out


def test_controller_standby_takes_over(catalog: Catalog) -> None:
    _operations(catalog).start(FLAG, scaled_default_plan(bake_seconds=60), changed_by="test", via="cli")
    first = _controller(catalog, holder="first")
    second = _controller(catalog, holder="second")

    assert first.tick_flag(FLAG) is not None
    assert second.tick_flag(FLAG) is None
    version = latest(catalog).version
    assert second.tick_flag(FLAG) is None
    assert latest(catalog).version == version

    first.release()

    assert second.tick_flag(FLAG) is not None
    assert first.tick_flag(FLAG) is None


def test_controller_refuses_second_start(catalog: Catalog) -> None:
    operations = _operations(catalog)
    operations.start(FLAG, scaled_default_plan(), changed_by="test", via="cli")

    with pytest.raises(Exception, match="already has a running rollout"):
        operations.start(FLAG, scaled_default_plan(), changed_by="test", via="cli")

    assert len(transition_rows(catalog)) == 1


class _Receiver(BaseHTTPRequestHandler):
    documents: list[dict[str, object]] = []
    failures_left = 0

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        type(self).documents.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"documents": [], "failures_left": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/rollout", handler
    server.shutdown()
    server.server_close()


def test_controller_posts_transitions_to_webhook(
    catalog: Catalog, postgres_url: str, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    handler.failures_left = 2
    set_generous_limits(catalog)
    webhook = WebhookSender(url, backoff_seconds=0.05)
    RolloutOperations(catalog, webhook=webhook).start(
        FLAG, scaled_default_plan(bake_seconds=0.5), changed_by="test", via="cli"
    )

    with Traffic(postgres_url), RunningController(_controller(catalog, webhook=webhook)):
        wait_for_state(catalog, {"completed", "rolled_back"}, timeout=60)
    webhook.close(drain_seconds=5)

    events = [(d["event"], d["percentage"], d["seq"]) for d in handler.documents]
    assert events == [
        ("started", 1, 1),
        ("promoted", 10, 2),
        ("promoted", 25, 3),
        ("promoted", 50, 4),
        ("promoted", 100, 5),
        ("completed", 100, 6),
    ]
    assert handler.documents[0]["flag"] == FLAG
    assert str(handler.documents[0]["at"]).endswith("Z")
    assert webhook.delivered == 6


def test_controller_not_stalled_by_dead_webhook(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    # Nothing listens on port 9 of the loopback address, so every post is refused.
    webhook = WebhookSender("http://127.0.0.1:9/hook", attempts=3, backoff_seconds=5.0)
    _operations(catalog).start(FLAG, scaled_default_plan(bake_seconds=0.5), changed_by="test", via="cli")

    started = time.monotonic()
    with Traffic(postgres_url), RunningController(_controller(catalog, webhook=webhook)):
        record = wait_for_state(catalog, {"completed", "rolled_back"}, timeout=60)
    elapsed = time.monotonic() - started
    webhook.close(drain_seconds=0)

    assert record.rollout.state == "completed"
    # Five transitions with two 5 s backoffs each would take 50 s if posting blocked the loop.
    assert elapsed < 30
    assert webhook.delivered == 0


def test_controller_custom_sql_gate(catalog: Catalog, postgres_url: str) -> None:
    set_generous_limits(catalog)
    plan = scaled_default_plan(
        bake_seconds=30,
        gates=(
            GateSpec(
                "sql",
                max=5,
                query="select count(*) from rate_limit_audits where created_at >= :since and action = 'search'",
            ),
        ),
    )
    _operations(catalog).start(FLAG, plan, changed_by="test", via="cli")

    with Traffic(postgres_url, actions=("search",)), RunningController(_controller(catalog)):
        record = wait_for_state(catalog, {"rolled_back"}, timeout=30)

    assert record.rollout.failed_gate is not None
    assert record.rollout.failed_gate["metric"].startswith("sql:")
    assert record.rollout.failed_gate["value"] > 5


def test_controller_sql_gate_runs_read_only(catalog: Catalog) -> None:
    since = datetime.now(timezone.utc)

    value = run_sql_gate(catalog.engine, "delete from feature_flags returning 1", FLAG, since)

    assert value is None
    assert catalog.get_flag(FLAG).name == FLAG


def test_controller_sql_gate_times_out(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "SQL_GATE_TIMEOUT_MS", 200)
    since = datetime.now(timezone.utc)

    assert run_sql_gate(catalog.engine, "select 1 from pg_sleep(0.01)", FLAG, since) == 1.0
    assert run_sql_gate(catalog.engine, "select 1 from pg_sleep(3)", FLAG, since) is None


def test_status_bake_stops_without_controller(catalog: Catalog) -> None:
    from rampgate.rollout.lease import ControllerLease

    record = _operations(catalog).start(FLAG, scaled_default_plan(bake_seconds=3600), changed_by="test", via="cli")
    started = record.rollout.stage_started_at
    assert started is not None

    unwatched = build_status(catalog, FLAG, now=started + 600)["rollout"]["bake_left_seconds"]
    lease = ControllerLease(catalog.engine, FLAG, "watcher", lease_seconds=3600, clock=lambda: started)
    assert lease.acquire()
    watched = build_status(catalog, FLAG, now=started + 600)["rollout"]["bake_left_seconds"]
    lease.release()

    assert unwatched == 3600
    assert watched == 3000
