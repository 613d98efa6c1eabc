"""Render comparison results as terminal text and as the BENCHMARKS.md page."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

MET = {True: "met", False: "**missed**", None: "not measured"}
MET_TEXT = {True: "met", False: "MISSED", None: "not measured"}


def normalise(result: dict[str, Any], name: str, title: str) -> dict[str, Any]:
    """Fill in the keys a comparison left out; a flat dict becomes a two-column table."""
    if "tables" in result:
        for key, default in (("targets", []), ("notes", []), ("skipped", None), ("data", {})):
            result.setdefault(key, default)
        result.setdefault("name", name)
        result.setdefault("title", title)
        return result

    rows = [[str(key), _format_value(value)] for key, value in result.items()]
    return {
        "name": name,
        "title": title,
        "tables": [{"title": "", "columns": ["figure", "value"], "rows": rows}],
        "targets": [],
        "notes": [],
        "skipped": None,
        "data": result,
    }


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# -- terminal ------------------------------------------------------------------


def format_text(result: dict[str, Any]) -> str:
    """Return one comparison as aligned plain-text tables, targets and notes."""
    lines = [f"== {result['title']} =="]
    if result["skipped"]:
        lines.append(f"skipped: {result['skipped']}")
        return "\n".join(lines)

    for table in result["tables"]:
        if table["title"]:
            lines.append(f"-- {table['title']}")
        lines.extend(_aligned([table["columns"], *table["rows"]]))
    for target in result["targets"]:
        lines.append(f"target: {target['target']}: {target['measured']} ({MET_TEXT[target['met']]})")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[column])) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


# -- BENCHMARKS.md ---------------------------------------------------------------


def format_markdown(
    results: list[dict[str, Any]],
    machine: dict[str, Any],
    command: str,
    introduction: str,
) -> str:
    """Return the whole BENCHMARKS.md page."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmarks", "", introduction.strip(), ""]

    lines += ["## How this page was made", ""]
    lines.append(f"Command: `{command}`, run {now}.")
    lines.append("")
    lines += _machine_lines(machine)

    lines += ["", "## Targets", "", "| comparison | target | measured | |", "| --- | --- | --- | --- |"]
    for result in results:
        if result["skipped"]:
            lines.append(f"| {result['title']} | – | skipped: {_cell(result['skipped'])} | not measured |")
            continue
        for target in result["targets"]:
            lines.append(
                f"| {result['title']} | {_cell(target['target'])} | {target['measured']} | {MET[target['met']]} |"
            )

    for number, result in enumerate(results, start=1):
        lines += ["", f"## {number}. {result['title']}", ""]
        if result["skipped"]:
            lines.append(f"Skipped: {result['skipped']}")
            continue
        for table in result["tables"]:
            if table["title"]:
                lines += [f"**{table['title']}**", ""]
            lines.append("| " + " | ".join(table["columns"]) + " |")
            lines.append("|" + " --- |" * len(table["columns"]))
            for row in table["rows"]:
                lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
            lines.append("")
        for target in result["targets"]:
            lines.append(f"- Target: {target['target']}: **{target['measured']}**, {MET[target['met']]}.")
        if result["targets"]:
            lines.append("")
        for note in result["notes"]:
            lines.append(note)
            lines.append("")
        finding = result.get("findings")
        if finding:
            lines += [finding.strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    cores = machine["cores"]
    if machine.get("usable_cores") not in (None, cores):
        cores = f"{cores} ({machine['usable_cores']} usable)"
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    return [
        "| | |",
        "| --- | --- |",
        f"| CPU | {machine['cpu']} |",
        f"| cores | {cores} |",
        f"| load average at start (1, 5, 15 min) | {_load(machine.get('load_average'))} |",
        f"| Python | {machine['python']} |",
        f"| platform | {machine['platform']} |",
        f"| Redis server | {machine['redis'] or 'not reachable'} |",
        f"| PostgreSQL server | {machine['postgresql'] or 'not reachable'} |",
        f"| packages | {packages} |",
    ]


def _load(load_average: Any) -> str:
    if not load_average:
        return "unknown"
    return ", ".join(f"{value:.2f}" for value in load_average)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
