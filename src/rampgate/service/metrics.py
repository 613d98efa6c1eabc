"""Prometheus metrics of the decision service; every series is named ``rampgate_...``.

With one worker the series live in the application's own registry. With
several (``rampgate serve --workers N``), serve points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh temporary directory before the
workers start: each worker writes its values to files there, and a scrape of
``/metrics`` on any worker merges the files of all of them
(prometheus_client's multiprocess mode), so one scrape sees the whole
server. Counters and the latency histogram add up across workers, the audit
queue depth is summed over live workers, and a flag's gauges show the value
most recently written by any worker.

The audit and flag series are copied from the gate (its recorder's
``queue_depth``, ``dropped``, ``written`` and ``write_errors``, and its
catalog snapshot) every few seconds and on each scrape.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector

from rampgate.core.decision import STORE_ERROR, Decision

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Label of the decisions whose action has no policy: any valid name may be
# sent, so an unbounded set of names must not become unbounded series.
OTHER_ACTION = "_other"
# The ``*_created`` timestamp series double the output and no dashboard reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def is_multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def decision_outcome(decision: Decision) -> str:
    """Return ``blocked``, ``would_block`` (allowed outside the cohort, blocked if enforced) or ``allowed``."""
    if not decision.allowed:
        return "blocked"
    if decision.would_block:
        return "would_block"
    return "allowed"


class ServiceMetrics:
    """The series of one application; :meth:`render` returns the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry

        self.decisions = Counter(
            "rampgate_decisions", "Decisions made, by action, mode and outcome.",
            ["action", "mode", "outcome"], registry=registry,
        )
        self.decision_seconds = Histogram(
            "rampgate_decision_duration_seconds", "Time to decide one request, counter store included.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.store_errors = Counter(
            "rampgate_store_errors", "Decisions whose counter store failed or timed out.",
            ["store"], registry=registry,
        )
        self.http_responses = Counter(
            "rampgate_http_responses", "HTTP responses, by route template and status.",
            ["route", "status"], registry=registry,
        )
        self.audit_queue_depth = Gauge(
            "rampgate_audit_queue_depth", "Audit rows and decision counts waiting to be written.",
            registry=registry, multiprocess_mode="livesum",
        )
        self.audit_dropped = Counter(
            "rampgate_audit_dropped", "Audit rows dropped because the buffer was full.", registry=registry,
        )
        self.audit_written = Counter(
            "rampgate_audit_written", "Audit rows written to the catalog database.", registry=registry,
        )
        self.audit_write_errors = Counter(
            "rampgate_audit_write_errors", "Failed attempts to write a batch of audit rows.", registry=registry,
        )
        self.flag_percentage = Gauge(
            "rampgate_flag_percentage", "Enforced percentage of each flag (0 while disabled).",
            ["flag"], registry=registry, multiprocess_mode="livemostrecent",
        )
        self.flag_enabled = Gauge(
            "rampgate_flag_enabled", "1 when the flag is enabled, else 0.",
            ["flag"], registry=registry, multiprocess_mode="livemostrecent",
        )

        # The rollout controller's series, which it keeps in the default registry.
        from rampgate.rollout.telemetry import COLLECTORS

        for collector in COLLECTORS:
            registry.register(collector)

        # Recorder totals already added to the counters, so each sync adds the difference.
        self._copied = {"dropped": 0, "written": 0, "write_errors": 0}
        self._flags: set[str] = set()
        # Labelled children of the per-request series, looked up once per label set:
        # ``labels()`` validates and locks on every call. Both sets are bounded,
        # by the catalog's actions and by the routes and statuses.
        self._decision_series: dict[tuple[str, str, str], Any] = {}
        self._response_series: dict[tuple[str, int], Any] = {}

    def observe_decision(self, decision: Decision, seconds: float, store_name: str) -> None:
        action = decision.action if decision.policy is not None else OTHER_ACTION
        labels = (action, decision.mode, decision_outcome(decision))
        series = self._decision_series.get(labels)
        if series is None:
            series = self._decision_series[labels] = self.decisions.labels(*labels)
        series.inc()
        self.decision_seconds.observe(seconds)
        if decision.reason == STORE_ERROR:
            self.store_errors.labels(store_name).inc()

    def observe_response(self, route: str, status: int) -> None:
        labels = (route, status)
        series = self._response_series.get(labels)
        if series is None:
            series = self._response_series[labels] = self.http_responses.labels(route, str(status))
        series.inc()

    def sync_from_gate(self, gate: Any) -> None:
        """Copy the audit writer's numbers and the flags of the snapshot into the series."""
        recorder = getattr(gate, "recorder", None)
        depth = getattr(recorder, "queue_depth", None)
        if isinstance(depth, int):
            self.audit_queue_depth.set(depth)
        for attribute, counter in (
            ("dropped", self.audit_dropped),
            ("written", self.audit_written),
            ("write_errors", self.audit_write_errors),
        ):
            total = getattr(recorder, attribute, None)
            if isinstance(total, int) and total > self._copied[attribute]:
                counter.inc(total - self._copied[attribute])
                self._copied[attribute] = total

        flags = gate.snapshot.flags
        for name, flag in flags.items():
            self.flag_percentage.labels(name).set(flag.percentage if flag.enabled else 0)
            self.flag_enabled.labels(name).set(1 if flag.enabled else 0)
        for name in self._flags - set(flags):
            # NOTE: in multiprocess mode the value of a deleted flag stays in
            # the workers' files until they restart.
            self.flag_percentage.remove(name)
            self.flag_enabled.remove(name)
        self._flags = set(flags)

    def render(self) -> bytes:
        """Return the exposition text of every series (of every worker in multiprocess mode)."""
        if is_multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
