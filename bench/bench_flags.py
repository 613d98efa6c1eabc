"""Comparison 3: flag evaluations per second, rampgate's cohort check against Unleash, GrowthBook and OpenFeature.

Every contender decides "is this actor in the 50 % rollout of the flag?" for
10,000 actors taken in turn. rampgate decides with
:func:`rampgate.core.bucketing.is_in_cohort` and with
``CatalogSnapshot.is_in_cohort`` (the route read from the snapshot's cache,
as ``Gate.decide`` reads it). The baseline is a bare ``mmh3.hash`` call on
the same strings, prebuilt.

The peers run offline and never open a socket. UnleashClient is bootstrapped
from a dict and never initialised, so no registration, polling, metrics or
scheduler thread exists. GrowthBook gets its features as a dict and no API
host or client key, and OpenFeature uses its in-memory provider. A guard
replaces the socket functions for the whole comparison and fails it on any
attempt to connect or resolve a name.
"""

from __future__ import annotations

import socket
import tempfile
from typing import Any, Callable

from bench.runner import Stats, add_table, add_target, cpu_time, measure, micros, new_result, rate, ratio, size_of_run
from bench.runner import spread

NAME = "flags"
TITLE = "Flag evaluations per second"
FLAG = "rate_limit_enforcement"
ACTION = "api_call"
PERCENTAGE = 50
ACTORS = 10_000

TARGETS = (
    ("UnleashClient, offline", 20.0, "at least"),
    ("GrowthBook", 3.0, "at least"),
)
BARE_HASH_MAX_SLOWDOWN = 3.0
# (rounds, passes over the actors per round, actors) by size of run.
SIZES = {"tiny": (1, 1, 200), "quick": (7, 1, ACTORS), "full": (15, 5, ACTORS)}


class NetworkGuard:
    """Make every connect and name lookup in this process fail, and count the attempts."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> "NetworkGuard":
        def refuse(name: str) -> Callable[..., Any]:
            def refused(*args: Any, **kwargs: Any) -> Any:
                self.attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
                raise OSError(f"the flag comparison runs offline; {name} was called")
            return refused

        self._saved = {
            "connect": socket.socket.connect,
            "connect_ex": socket.socket.connect_ex,
            "getaddrinfo": socket.getaddrinfo,
            "create_connection": socket.create_connection,
        }
        socket.socket.connect = refuse("socket.connect")  # type: ignore[method-assign]
        socket.socket.connect_ex = refuse("socket.connect_ex")  # type: ignore[method-assign]
        socket.getaddrinfo = refuse("getaddrinfo")
        socket.create_connection = refuse("create_connection")
        return self

    def __exit__(self, *exc_info: object) -> None:
        socket.socket.connect = self._saved["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = self._saved["connect_ex"]  # type: ignore[method-assign]
        socket.getaddrinfo = self._saved["getaddrinfo"]
        socket.create_connection = self._saved["create_connection"]


# -- contenders: each returns a function of an actor id ----------------------------


def rampgate_core() -> Callable[[str], bool]:
    from rampgate.core.bucketing import is_in_cohort

    def evaluate(actor_id: str) -> bool:
        return is_in_cohort(FLAG, actor_id, PERCENTAGE)

    return evaluate


def rampgate_snapshot() -> tuple[Callable[[str], bool], Any]:
    from rampgate.core.flags import ENFORCEMENT_FLAG
    from rampgate.gate import memory_gate

    gate = memory_gate(watch=False, audit=False)
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=PERCENTAGE, changed_by="bench")
    snapshot = gate.refresh()
    snapshot_is_in_cohort = snapshot.is_in_cohort

    def evaluate(actor_id: str) -> bool:
        return snapshot_is_in_cohort(ACTION, actor_id)

    return evaluate, gate


def unleash(cache_directory: str) -> tuple[Callable[[str], bool], Any]:
    """UnleashClient bootstrapped with a flexible rollout of the same group, stickiness and percentage."""
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    features = {
        "version": 1,
        "features": [
            {
                "name": FLAG,
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {"rollout": str(PERCENTAGE), "stickiness": "userId", "groupId": FLAG},
                    }
                ],
            }
        ],
    }
    cache = FileCache("rampgate-bench", directory=cache_directory)
    cache.bootstrap_from_dict(features)
    # initialize_client() is never called: it would register, poll and send
    # metrics. The URL points at a closed local port all the same.
    client = UnleashClient(
        url="http://127.0.0.1:9/api",
        app_name="rampgate-bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    is_enabled = client.is_enabled

    def evaluate(actor_id: str) -> bool:
        return is_enabled(FLAG, {"userId": actor_id})

    return evaluate, client


def growthbook() -> tuple[Callable[[str], bool], Any]:
    """GrowthBook with a 50 % coverage rule on the ``id`` attribute, one instance reused."""
    from growthbook import GrowthBook

    features = {
        FLAG: {"defaultValue": False, "rules": [{"force": True, "coverage": PERCENTAGE / 100, "hashAttribute": "id"}]}
    }
    client = GrowthBook(features=features, attributes={"id": "u-0"})
    set_attributes = client.set_attributes
    is_on = client.is_on

    def evaluate(actor_id: str) -> bool:
        set_attributes({"id": actor_id})
        return is_on(FLAG)

    return evaluate, client


def openfeature() -> Callable[[str], bool]:
    """OpenFeature's in-memory provider with a context evaluator doing the same 50 % bucketing."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from rampgate.core.bucketing import is_in_cohort

    def rollout(flag: InMemoryFlag[bool], context: EvaluationContext) -> FlagResolutionDetails[bool]:
        enabled = is_in_cohort(FLAG, context.targeting_key or "", PERCENTAGE)
        return FlagResolutionDetails(value=enabled, reason=Reason.TARGETING_MATCH)

    flag = InMemoryFlag("off", {"on": True, "off": False}, context_evaluator=rollout)
    api.set_provider(InMemoryProvider({FLAG: flag}))
    get_boolean_value = api.get_client().get_boolean_value

    def evaluate(actor_id: str) -> bool:
        return bool(get_boolean_value(FLAG, False, EvaluationContext(targeting_key=actor_id)))

    return evaluate


# -- the comparison ------------------------------------------------------------------


def _batch(evaluate: Callable[[str], bool], actor_ids: list[str], counts: dict[str, int], name: str) -> Callable[[], tuple[int, float]]:
    def batch() -> tuple[int, float]:
        enabled = 0
        start = cpu_time()
        for actor_id in actor_ids:
            if evaluate(actor_id):
                enabled += 1
        elapsed = cpu_time() - start
        counts[name] = enabled
        return len(actor_ids), elapsed

    return batch


def _bare_hash_batch(keys: list[str], counts: dict[str, int], name: str) -> Callable[[], tuple[int, float]]:
    import mmh3

    hash_ = mmh3.hash

    def batch() -> tuple[int, float]:
        enabled = 0
        start = cpu_time()
        for key in keys:
            if hash_(key, 0, False) % 100 < PERCENTAGE:
                enabled += 1
        elapsed = cpu_time() - start
        counts[name] = enabled
        return len(keys), elapsed

    return batch


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """Measure every contender on 10,000 actors; return the result dict.

    ``tiny`` runs one round on 200 actors, for tests of the benchmark itself.
    """
    result = new_result(NAME, TITLE)
    rounds, repeats, actors = SIZES[size_of_run(quick, tiny)]
    actor_ids = [f"u-{number}" for number in range(actors)] * repeats
    keys = [f"{FLAG}:{actor_id}" for actor_id in actor_ids]

    counts: dict[str, int] = {}
    closers: list[Callable[[], Any]] = []
    with NetworkGuard() as guard, tempfile.TemporaryDirectory(prefix="rampgate-bench-unleash-") as cache_directory:
        try:
            snapshot_evaluate, gate = rampgate_snapshot()
            closers.append(gate.close)
            # The Unleash client was never initialised, so it has no thread or
            # scheduler to stop; its destroy() would only log that.
            unleash_evaluate, _ = unleash(cache_directory)
            growthbook_evaluate, growthbook_client = growthbook()
            closers.append(growthbook_client.destroy)

            contenders = {
                "rampgate is_in_cohort": _batch(rampgate_core(), actor_ids, counts, "rampgate is_in_cohort"),
                "rampgate CatalogSnapshot.is_in_cohort": _batch(
                    snapshot_evaluate, actor_ids, counts, "rampgate CatalogSnapshot.is_in_cohort"
                ),
                "UnleashClient, offline": _batch(unleash_evaluate, actor_ids, counts, "UnleashClient, offline"),
                "GrowthBook": _batch(growthbook_evaluate, actor_ids, counts, "GrowthBook"),
                "OpenFeature, in-memory provider": _batch(
                    openfeature(), actor_ids, counts, "OpenFeature, in-memory provider"
                ),
                "bare mmh3.hash": _bare_hash_batch(keys, counts, "bare mmh3.hash"),
            }
            stats = measure(contenders, rounds=rounds, warmup=1)
            agreement = _agreement(rampgate_core(), unleash_evaluate, actors)
        finally:
            for close in closers:
                close()

    _report(result, stats, counts, actors, len(actor_ids), agreement, guard.attempts)
    result["notes"].append(
        f"Each round evaluates {len(actor_ids):,} times per contender ({actors:,} actors); {rounds} rounds after "
        "one warm-up round, timed in CPU time. 'in rollout' counts the evaluations that returned true in the "
        "last round. The bare hash runs on prebuilt 'group:actor' strings with the same percentage test, so it "
        "is the floor of any cohort check."
    )
    result["notes"].append(
        f"rampgate and Unleash agree on {agreement:.2%} of the {actors:,} actors: both take MurmurHash3 of "
        "'group:actor' % 100 + 1. GrowthBook hashes with FNV-1a, so it picks another half. OpenFeature's "
        "in-memory provider has no rollout rule; its context evaluator calls rampgate's is_in_cohort, so its row "
        "is the SDK's overhead on top of the same hash."
    )
    result["notes"].append(
        f"Network attempts during the comparison: {len(guard.attempts)} (every connect and name lookup fails)."
    )
    return result


def _agreement(first: Callable[[str], bool], second: Callable[[str], bool], actors: int) -> float:
    same = sum(first(f"u-{number}") == second(f"u-{number}") for number in range(actors))
    return same / actors


def _report(
    result: dict[str, Any],
    stats: dict[str, Stats],
    counts: dict[str, int],
    actors: int,
    evaluations: int,
    agreement: float,
    attempts: list[str],
) -> None:
    ours = "rampgate is_in_cohort"
    rows = []
    for name, figures in stats.items():
        rows.append([
            name,
            rate(figures.median),
            spread(figures.spread),
            micros(1 / figures.median),
            ratio(stats[ours].median / figures.median),
            f"{counts.get(name, 0):,} of {evaluations:,}",
        ])
    add_table(
        result,
        f"{actors:,} actors, flag at {PERCENTAGE} %",
        ["contender", "evaluations/s (median)", "spread", "per evaluation", "rampgate is_in_cohort is", "in rollout"],
        rows,
    )
    result["data"] = {name: figures.as_dict() for name, figures in stats.items()}
    result["data"]["agreement_with_unleash"] = agreement
    result["data"]["network_attempts"] = attempts

    for peer, goal, _ in TARGETS:
        value = stats[ours].median / stats[peer].median
        add_target(result, f"is_in_cohort ≥ {goal:g}× {peer}", ratio(value), value >= goal)
    slowdown = stats["bare mmh3.hash"].median / stats[ours].median
    add_target(
        result,
        f"is_in_cohort within {BARE_HASH_MAX_SLOWDOWN:g}× of a bare mmh3.hash",
        f"{slowdown:.2f}× slower",
        slowdown <= BARE_HASH_MAX_SLOWDOWN,
    )
    snapshot_slowdown = stats["bare mmh3.hash"].median / stats["rampgate CatalogSnapshot.is_in_cohort"].median
    add_target(
        result,
        f"CatalogSnapshot.is_in_cohort within {BARE_HASH_MAX_SLOWDOWN:g}× of a bare mmh3.hash",
        f"{snapshot_slowdown:.2f}× slower",
        snapshot_slowdown <= BARE_HASH_MAX_SLOWDOWN,
    )
