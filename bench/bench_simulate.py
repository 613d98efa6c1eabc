"""Trace replay speed: ``rampgate simulate`` lines per second, end to end, against its parts.

The trace is the bundled NASA KSC morning (13,200 requests) repeated on
consecutive days, gzip-compressed in a temporary file: 3 days (39,600 lines)
with ``quick``, 10 days (132,000 lines) otherwise. Every contender reads the
same file, so decompression is in every figure.

- ``replay, demo rollout``: what ``rampgate demo`` runs (plan, action map and
  policies of the demo) on the longer trace: reading, action mapping,
  deciding, the stage totals, the controller's checks and the recommendation
  search. The rollout rolls back on the first day, so most requests are
  decided in shadow mode.
- ``replay, --percentage 100``: every request enforced, no controller.
- ``parse only``: the same file through :class:`TraceReader`, nothing else.
- ``engine only``: the requests, parsed and mapped beforehand, through
  ``DecisionEngine.prepare``, ``MemoryCounterStore.consume`` and
  ``DecisionEngine.finish`` at 100 %: the production decision code alone.

Batches are timed in CPU time of the process. Run it alone with
``python -m bench.bench_simulate [--quick]``.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for ``bench``.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.runner import (
    Stats,
    add_table,
    add_target,
    cpu_time,
    measure,
    micros,
    new_result,
    rate,
    ratio,
    spread,
)

NAME = "simulate"
TITLE = "Trace replay, rampgate simulate"
TARGET_LINES_PER_SECOND = 100_000


def build_trace(directory: Path, days: int) -> Path:
    """Write the bundled trace ``days`` times, one day apart, to a gzip file; return its path."""
    from rampgate.simulate.demo import DEMO_TRACE

    with gzip.open(DEMO_TRACE, "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    path = directory / f"nasa-kennedy-{days}-days.log.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=6) as out:
        for day in range(days):
            stamp = f"{1 + day:02d}/Aug/1995"
            out.writelines(line.replace("01/Aug/1995", stamp, 1) for line in lines)
    return path


def replay_batch(path: Path, settings: Any, wall_rates: list[float]) -> tuple[int, float]:
    from rampgate.simulate.readers import TraceReader
    from rampgate.simulate.replay import replay_trace

    start = cpu_time()
    with TraceReader.open(path) as reader:
        report = replay_trace(reader, settings)
    elapsed = cpu_time() - start
    wall_rates.append(report.lines_per_second)
    return report.lines, elapsed


def parse_batch(path: Path) -> tuple[int, float]:
    from rampgate.simulate.readers import TraceReader

    start = cpu_time()
    with TraceReader.open(path) as reader:
        for _ in reader:
            pass
    elapsed = cpu_time() - start
    return reader.lines, elapsed


def engine_batch(requests: list[tuple[float, str, str, str]], snapshot: Any) -> tuple[int, float]:
    from rampgate.engine import CounterRequest, DecisionEngine
    from rampgate.simulate.clock import VirtualClock
    from rampgate.stores.memory import MemoryCounterStore

    clock = VirtualClock()
    store = MemoryCounterStore(clock=clock)
    engine = DecisionEngine()
    prepare, finish, consume = engine.prepare, engine.finish, store.consume

    start = cpu_time()
    for timestamp, actor_type, actor_id, action in requests:
        clock.now = max(clock.now, timestamp)
        prepared = prepare(snapshot, actor_type, actor_id, action, 1)
        if prepared.__class__ is CounterRequest:
            policy = prepared.policy
            finish(prepared, consume(prepared.key, policy.algorithm, policy.limit_value, policy.window_seconds, policy.capacity, prepared.units))
    elapsed = cpu_time() - start
    return len(requests), elapsed


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Measure the contenders; ``tiny`` (one day, one round) is for the benchmark package's smoke test."""
    from dataclasses import replace

    from rampgate.core.flags import ENFORCEMENT_FLAG, Flag
    from rampgate.core.snapshot import CatalogSnapshot
    from rampgate.simulate.config import build_replay_settings
    from rampgate.simulate.demo import DEMO_ACTIONS, DEMO_PLAN, DEMO_POLICIES
    from rampgate.simulate.readers import TraceReader

    days = 1 if tiny else 3 if quick else 10
    rounds = 1 if tiny else 3 if quick else 5
    result = new_result(NAME, TITLE)

    with tempfile.TemporaryDirectory(prefix="rampgate-bench-simulate-") as directory:
        path = build_trace(Path(directory), days)
        demo = build_replay_settings(plan=DEMO_PLAN, actions=DEMO_ACTIONS, policies=DEMO_POLICIES)
        enforced = replace(demo, percentage=100)

        with TraceReader.open(path) as reader:
            requests = [
                (timestamp, actor_type, actor_id, demo.action_map.action_for_request(request or ""))
                for timestamp, actor_type, actor_id, _, request in reader
            ]
        snapshot = CatalogSnapshot([Flag(ENFORCEMENT_FLAG, True, 100, {})], demo.policies)

        wall_demo: list[float] = []
        wall_enforced: list[float] = []
        stats: dict[str, Stats] = measure(
            {
                "replay, demo rollout": lambda: replay_batch(path, demo, wall_demo),
                "replay, --percentage 100": lambda: replay_batch(path, enforced, wall_enforced),
                "parse only": lambda: parse_batch(path),
                "engine only": lambda: engine_batch(requests, snapshot),
            },
            rounds=rounds,
        )

    parse = stats["parse only"].median
    rows = [
        [name, rate(figures.median), spread(figures.spread), micros(1 / figures.median), ratio(figures.median / parse)]
        for name, figures in stats.items()
    ]
    add_table(result, f"{len(requests):,} lines, {days} days of the bundled trace, gzip", ["contender", "lines/s", "spread", "per line", "vs parse only"], rows)

    replay_median = stats["replay, demo rollout"].median
    add_target(
        result,
        f"at least {TARGET_LINES_PER_SECOND:,} trace lines per second end to end on one core",
        f"{rate(replay_median)} (demo rollout), {rate(stats['replay, --percentage 100'].median)} (100 %)",
        replay_median >= TARGET_LINES_PER_SECOND,
    )

    per_line = 1 / stats["replay, --percentage 100"].median
    engine_share = (1 / stats["engine only"].median) / per_line
    parse_share = (1 / parse) / per_line
    result["notes"].append(
        f"At 100 % a line costs {micros(per_line)}: reading and parsing {parse_share:.0%}, the production "
        f"decision code (prepare, consume, finish) {engine_share:.0%}, the replay's own bookkeeping the rest."
    )
    result["notes"].append(
        "lines_per_second in the JSON report is wall time, including waits for a core: "
        f"{rate(max(wall_demo))} at best in these rounds."
    )
    result["data"] = {name: figures.as_dict() for name, figures in stats.items()}
    result["data"]["lines"] = len(requests)
    result["data"]["wall_lines_per_second"] = {"demo": wall_demo, "percentage_100": wall_enforced}
    return result


def main(argv: list[str]) -> int:
    from bench.report import format_text, normalise

    print(format_text(normalise(run("--quick" in argv), NAME, TITLE)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
