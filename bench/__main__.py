"""Run the side-by-side benchmarks: ``python -m bench [--quick] [--only NAME,…]``.

Each comparison runs in its own child process, so one comparison's threads,
garbage and caches do not touch the next. ``--quick`` prints the tables and
finishes in under two minutes. A full run (no ``--quick``, no ``--only``)
also rewrites BENCHMARKS.md at the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.machine import describe_machine
from bench.report import format_markdown, format_text, normalise
from bench.runner import Skip, skipped_result

ROOT = Path(__file__).resolve().parents[1]

# (name, module, title), in the order of the page.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("decisions", "bench.bench_decisions", "In-process decisions per second, memory store"),
    ("redis", "bench.bench_redis", "Redis-backed decisions per second"),
    ("flags", "bench.bench_flags", "Flag evaluations per second"),
    ("http", "bench.bench_http", "HTTP /v1/check requests per second"),
    ("database", "bench.bench_database", "Per-request PostgreSQL, the approach rampgate replaces"),
    ("audit", "bench.bench_audit", "Audit ingestion into PostgreSQL"),
    ("memory", "bench.bench_memory", "Memory per tracked actor, memory store"),
    ("simulate", "bench.bench_simulate", "Trace replay, rampgate simulate"),
)

# Maximum seconds a child may run before it is stopped and reported as failed.
TIMEOUT_SECONDS = {True: 300, False: 3600}

INTRODUCTION = """
rampgate measured side by side with the libraries and the approach it is
chosen against, on one machine in one run. The machine is shared and noisy,
so compare the ratios in a table, which come from interleaved rounds of the
same run, rather than absolute figures across runs or machines. Each figure
is the median of several timed rounds after a warm-up round; "spread" is
half the range of the rounds as a share of the median.

Regenerate this page with `python -m bench` from the repository root (about
10 minutes); `python -m bench --quick` prints a shorter run without writing
it. `python -m bench --only NAME` runs one comparison; the names are
decisions, redis, flags, http, database, audit, memory and simulate. Servers:
Redis and PostgreSQL on 127.0.0.1 (`RAMPGATE_BENCH_REDIS_URL`,
`RAMPGATE_BENCH_POSTGRES_URL`); each comparison uses its own key prefix or
database and removes it afterwards, and skips with a message when its server
or module is missing.
"""


def run_child(name: str, quick: bool) -> None:
    """Run one comparison in this process and print its result as JSON on stdout."""
    module_name, title = next((module, title) for key, module, title in COMPARISONS if key == name)
    real_stdout = sys.stdout
    # Libraries may print; only the JSON document goes to stdout.
    with contextlib.redirect_stdout(sys.stderr):
        result = _run_module(name, module_name, title, quick)
    real_stdout.write(json.dumps(result))
    real_stdout.flush()


def _run_module(name: str, module_name: str, title: str, quick: bool) -> dict[str, Any]:
    if importlib.util.find_spec(module_name) is None:
        return skipped_result(name, title, f"{module_name.replace('.', '/')}.py is not present")
    try:
        module = importlib.import_module(module_name)
        result = module.run(quick)
    except Skip as skip:
        return skipped_result(name, title, str(skip))
    except ModuleNotFoundError as error:
        return skipped_result(name, title, f"module {error.name!r} is not installed; install rampgate[bench]")
    result = normalise(result, name, title)
    findings = getattr(module, "FINDINGS", "")
    if findings:
        result["findings"] = findings
    return result


def run_in_child(name: str, title: str, quick: bool) -> dict[str, Any]:
    """Run one comparison in a child process; a crash or timeout becomes a skipped result naming it."""
    command = [sys.executable, "-m", "bench", "--child", name] + (["--quick"] if quick else [])
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=TIMEOUT_SECONDS[quick], check=False
        )
    except subprocess.TimeoutExpired:
        return skipped_result(name, title, f"did not finish within {TIMEOUT_SECONDS[quick]} s")
    if completed.returncode != 0:
        return skipped_result(
            name, title, f"failed with exit status {completed.returncode}; its traceback is on stderr above"
        )
    result = json.loads(completed.stdout)
    result["seconds"] = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds; print only")
    parser.add_argument("--only", help="comma-separated comparison names to run (default: all)")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="page a full run writes (default: BENCHMARKS.md at the repository root)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)

    if arguments.child:
        run_child(arguments.child, arguments.quick)
        return 0

    names = [name for name, _, _ in COMPARISONS]
    selected = names if not arguments.only else [name.strip() for name in arguments.only.split(",")]
    unknown = [name for name in selected if name not in names]
    if unknown:
        parser.error(f"unknown comparison {', '.join(unknown)}; choose from {', '.join(names)}")

    started = time.monotonic()
    machine = describe_machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['python']}, "
          f"Redis {machine['redis'] or 'not reachable'}, PostgreSQL {machine['postgresql'] or 'not reachable'}",
          flush=True)

    results = []
    for name, _, title in COMPARISONS:
        if name not in selected:
            continue
        print(f"\nrunning {name} ...", file=sys.stderr, flush=True)
        result = run_in_child(name, title, arguments.quick)
        results.append(result)
        print(format_text(result), flush=True)
        if "seconds" in result:
            print(f"({result['seconds']:.0f} s)", flush=True)

    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if not arguments.quick and not arguments.only:
        command = " ".join(["python -m bench", *(shlex.quote(arg) for arg in (argv or sys.argv[1:]))])
        page = format_markdown(results, machine, command, INTRODUCTION)
        arguments.output.write_text(page, encoding="utf-8")
        print(f"wrote {os.path.relpath(arguments.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
