"""The benchmark package: every module imports, tiny runs return complete results, pages render.

Only the shape of the results is checked, never a timing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.__main__ import COMPARISONS, INTRODUCTION  # noqa: E402
from bench.machine import describe_machine  # noqa: E402
from bench.report import format_markdown, format_text, normalise  # noqa: E402
from bench.runner import Stats, measure  # noqa: E402

RESULT_KEYS = {"name", "title", "tables", "targets", "notes", "skipped", "data"}
# Comparisons that need no server, so a tiny run works anywhere.
OFFLINE = ("decisions", "flags", "memory", "simulate")


@pytest.mark.parametrize(("name", "module_name"), [(name, module) for name, module, _ in COMPARISONS])
def test_bench_module_imports(name: str, module_name: str) -> None:
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} is not written yet")
    module = importlib.import_module(module_name)
    assert callable(module.run)


def check_result(result: dict[str, Any], name: str) -> None:
    assert RESULT_KEYS <= set(result)
    assert result["name"] == name
    assert result["skipped"] is None
    assert result["tables"]
    for table in result["tables"]:
        assert table["rows"]
        for row in table["rows"]:
            assert len(row) == len(table["columns"])
    assert result["targets"]
    for target in result["targets"]:
        assert set(target) == {"target", "measured", "met"}
        assert target["met"] in (True, False)


@pytest.fixture(scope="module")
def tiny_results() -> dict[str, dict[str, Any]]:
    """One tiny run of each offline comparison, shared by the tests below."""
    results = {}
    for name in OFFLINE:
        module_name = next(module for key, module, _ in COMPARISONS if key == name)
        if importlib.util.find_spec(module_name) is None:
            continue
        results[name] = importlib.import_module(module_name).run(quick=True, tiny=True)
    return results


@pytest.mark.parametrize("name", OFFLINE)
def test_bench_tiny_run_result(tiny_results: dict[str, dict[str, Any]], name: str) -> None:
    if name not in tiny_results:
        pytest.skip(f"the {name} comparison is not written yet")
    check_result(tiny_results[name], name)


def test_bench_decisions_allow_same_count(tiny_results: dict[str, dict[str, Any]]) -> None:
    """With one actor and 500 requests, every limiter allows the 200 of its limit."""
    one_actor = tiny_results["decisions"]["tables"][0]

    allowed = {row[0]: int(row[-1].replace(",", "")) for row in one_actor["rows"]}

    for contender, count in allowed.items():
        assert 200 <= count <= 201, contender


def test_bench_flags_offline(tiny_results: dict[str, dict[str, Any]]) -> None:
    data = tiny_results["flags"]["data"]

    assert data["network_attempts"] == []
    assert data["agreement_with_unleash"] == 1.0


def test_measure_runs_every_round() -> None:
    calls = {"a": 0, "b": 0}

    def batch(name: str) -> Any:
        def run() -> tuple[int, float]:
            calls[name] += 1
            return 10, 0.5

        return run

    stats = measure({"a": batch("a"), "b": batch("b")}, rounds=3, warmup=1, collect_garbage=False)

    assert calls == {"a": 4, "b": 4}
    assert stats["a"].rounds == [20.0, 20.0, 20.0]
    assert Stats([10.0, 20.0, 30.0]).spread == 0.5


def test_bench_page_renders(tiny_results: dict[str, dict[str, Any]]) -> None:
    flags = dict(tiny_results["flags"], findings="A finding.")
    skipped = normalise({"name": "redis", "title": "Redis", "tables": [], "skipped": "no server"}, "redis", "Redis")
    flat = normalise({"lines_per_second": 1234.5, "lines": 10}, "simulate", "Trace replay")
    machine = describe_machine()

    page = format_markdown([flags, skipped, flat], machine, "python -m bench", INTRODUCTION)

    assert page.startswith("# Benchmarks")
    assert "`python -m bench`" in page
    assert "A finding." in page
    assert "Skipped: no server" in page
    assert "| lines_per_second | 1,234.50 |" in page
    assert machine["cpu"] in page
    assert "skipped: no server" in format_text(skipped)
