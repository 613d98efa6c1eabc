"""Prometheus series of rollouts, registered once per process in the default registry.

The decision service adds :data:`COLLECTORS` to its own registry, so
``/metrics`` shows them too. Under ``rampgate serve --workers N`` the values
go to prometheus_client's multiprocess files like the service's own series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter(
    "rampgate_rollout_transitions",
    "Rollout transitions recorded by this process, by flag and event.",
    ["flag", "event"],
)
STAGE = Gauge(
    "rampgate_rollout_stage",
    "Current stage of the flag's newest rollout, counted from 1 (0 once it was rolled back or aborted).",
    ["flag"],
    multiprocess_mode="mostrecent",
)
PERCENTAGE = Gauge(
    "rampgate_rollout_percentage",
    "Percentage the flag's newest rollout enforces now (0 once it was rolled back or aborted).",
    ["flag"],
    multiprocess_mode="mostrecent",
)
COLLECTORS = (TRANSITIONS, STAGE, PERCENTAGE)


def count_transition(flag_name: str, event: str) -> None:
    TRANSITIONS.labels(flag=flag_name, event=event).inc()


def show_stage(flag_name: str, stage: int, percentage: int) -> None:
    STAGE.labels(flag=flag_name).set(stage)
    PERCENTAGE.labels(flag=flag_name).set(percentage)
