"""Measurement helpers shared by the comparisons: interleaved rounds, medians, results, skips.

Every comparison measures all its contenders in the same process and run,
round-robin: a warm-up batch each, then in every round one timed batch per
contender, in a rotated order. A round's figure is operations per second of
that batch, timed by CPU time (in-process work) or wall time (servers). The result of a contender is the median over the rounds and the
spread, ``(max - min) / 2`` as a share of the median. The machine is shared
and noisy, so the pages compare ratios measured in one run, never absolute
figures from different runs.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

# A contender runs one batch and returns (operations, seconds timed). The
# callable times itself, so per-round set-up and tear-down (clearing a store,
# flushing an audit queue) stay outside the timed region.
Batch = Callable[[], tuple[int, float]]


class Skip(Exception):
    """A comparison cannot run here because a server or a module is missing; the message names it."""


@dataclass
class Stats:
    """Operations per second of one contender over the rounds."""

    rounds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def spread(self) -> float:
        """Half the range of the rounds, as a share of the median."""
        if len(self.rounds) < 2 or self.median == 0:
            return 0.0
        return (max(self.rounds) - min(self.rounds)) / 2 / self.median

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "spread": self.spread, "rounds": self.rounds}


# CPU time of this process, all threads included. In-process comparisons time
# their batches with it: on a shared machine, wall time also counts the moments
# the process waited for a core, which vary from batch to batch. A contender's
# own background threads (an expiry timer, a leak thread) run on this process's
# CPU time, so they are counted against it.
cpu_time = time.process_time

# Wall time, for comparisons that wait on servers or sockets.
wall_time = time.perf_counter


def measure(
    contenders: dict[str, Batch], rounds: int, warmup: int = 1, collect_garbage: bool = True
) -> dict[str, Stats]:
    """Run every contender's batch ``warmup`` times untimed, then ``rounds`` times, interleaved.

    The order rotates every round, so no contender always runs right after
    the same neighbour (a neighbour's garbage or cache state would then bias
    it). With ``collect_garbage``, ``gc.collect()`` runs before every batch,
    outside the timing, so one contender's garbage is not collected on
    another's time.
    """
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            if collect_garbage:
                gc.collect()
            contenders[name]()

    stats = {name: Stats() for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            if collect_garbage:
                gc.collect()
            operations, seconds = contenders[name]()
            stats[name].rounds.append(operations / seconds if seconds > 0 else 0.0)
    return stats


# -- results -------------------------------------------------------------------
#
# A comparison's run(quick) returns a plain dict, so that it crosses process
# boundaries as JSON:
#   name, title     the comparison's id and heading
#   tables          [{"title", "columns", "rows"}], cells already formatted
#   targets         [{"target", "measured", "met"}], met is True, False or None (not measured)
#   notes           sentences printed under the tables
#   skipped         None, or the reason the comparison did not run
#   data            raw figures (medians, spreads, counts) for other tools


def size_of_run(quick: bool, tiny: bool) -> str:
    """Return the size of a run, ``tiny``, ``quick`` or ``full``: the key of each comparison's SIZES table."""
    if tiny:
        return "tiny"
    return "quick" if quick else "full"


def new_result(name: str, title: str) -> dict[str, Any]:
    """Return an empty result dict with every expected key."""
    return {"name": name, "title": title, "tables": [], "targets": [], "notes": [], "skipped": None, "data": {}}


def skipped_result(name: str, title: str, reason: str) -> dict[str, Any]:
    result = new_result(name, title)
    result["skipped"] = reason
    return result


def add_table(result: dict[str, Any], title: str, columns: list[str], rows: list[list[str]]) -> None:
    result["tables"].append({"title": title, "columns": columns, "rows": rows})


def add_target(result: dict[str, Any], target: str, measured: str, met: bool | None) -> None:
    result["targets"].append({"target": target, "measured": measured, "met": met})


def rate(value: float) -> str:
    """Format operations per second: ``412,300/s``."""
    return f"{value:,.0f}/s"


def spread(value: float) -> str:
    return f"±{value * 100:.0f} %"


def ratio(value: float) -> str:
    return f"{value:.2f}×"


def micros(value: float) -> str:
    """Format seconds per operation in microseconds."""
    return f"{value * 1e6:.2f} µs"


def stats_rows(stats: dict[str, Stats], reference: str | None = None) -> list[list[str]]:
    """Rows ``name, median/s, spread, µs per op[, ratio to reference]`` for a rate table."""
    rows = []
    for name, figures in stats.items():
        row = [name, rate(figures.median), spread(figures.spread), micros(1 / figures.median)]
        if reference is not None:
            row.append(ratio(figures.median / stats[reference].median))
        rows.append(row)
    return rows
