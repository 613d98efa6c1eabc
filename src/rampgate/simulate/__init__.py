"""Traffic replay: a recorded trace through the real decision engine and rollout machine on a virtual clock."""

from rampgate.simulate.config import build_replay_settings, load_plan
from rampgate.simulate.readers import FORMATS, TraceReader
from rampgate.simulate.replay import ReplaySettings, replay_trace
from rampgate.simulate.report import SimulationReport, report_to_document

__all__ = [
    "FORMATS",
    "ReplaySettings",
    "SimulationReport",
    "TraceReader",
    "build_replay_settings",
    "load_plan",
    "replay_trace",
    "report_to_document",
]
