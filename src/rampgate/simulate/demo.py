"""The bundled demo: the NASA Kennedy Space Center morning trace with a plan, action map and policies tuned to it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DATA = Path(str(resources.files("rampgate.simulate") / "data"))
DEMO_TRACE = DATA / "nasa-kennedy-1995-08-01-morning.log.gz"
DEMO_PLAN = DATA / "demo-plan.toml"
DEMO_ACTIONS = DATA / "demo-actions.toml"
DEMO_POLICIES = DATA / "demo-policies.toml"


def demo_command_line() -> str:
    """Return the ``rampgate simulate`` command that replays exactly what ``rampgate demo`` does."""
    return (
        f"rampgate simulate --trace {DEMO_TRACE} --plan {DEMO_PLAN} "
        f"--actions {DEMO_ACTIONS} --policies {DEMO_POLICIES}"
    )
