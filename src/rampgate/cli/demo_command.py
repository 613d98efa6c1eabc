"""``rampgate demo``: a whole rollout rehearsed on the bundled trace, with no set-up."""

from __future__ import annotations

from rich.text import Text

from rampgate.cli.app import app
from rampgate.cli.catalog_commands import JSON_OPTION
from rampgate.cli.output import print_json
from rampgate.cli.simulate_command import (
    TOP_OPTION,
    check_top,
    print_report,
    report_console,
    run_replay,
)
from rampgate.simulate.config import build_replay_settings
from rampgate.simulate.demo import (
    DEMO_ACTIONS,
    DEMO_PLAN,
    DEMO_POLICIES,
    DEMO_TRACE,
    demo_command_line,
)
from rampgate.simulate.report import report_to_document


@app.command("demo")
def demo_command(top: int = TOP_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Rehearse a rollout on eight hours of real web traffic (NASA KSC, 1 August 1995).

    No database or server is needed: the catalog is the shipped defaults in
    memory plus the bundled demo policies. The output shows each stage, where
    the rollout ended and why, the limits that would have passed, and the real
    hosts the limits hit. Under --json the report carries one more key than
    `rampgate simulate --json`: top_blocked_actors.
    """
    check_top(top)
    settings = build_replay_settings(
        plan=DEMO_PLAN, actions=DEMO_ACTIONS, policies=DEMO_POLICIES, top_blocked=max(top, 20)
    )
    report = run_replay(DEMO_TRACE, "clf", settings)

    if as_json:
        print_json(report_to_document(report, include_top_blocked=True))
        return

    console = report_console()
    console.print(
        Text(
            "Rehearsing the rollout of tier-B limits for page views, images, searches and downloads on a real "
            "web server log. Every client of the log counts as legitimate, so every client blocked is a "
            "false positive.\n"
            f"The same replay: {demo_command_line()}\n",
            style="dim",
        )
    )
    print_report(report, top)
