"""rampgate: trust-aware rate limiting, rolled out safely."""

from rampgate.core.decision import Decision
from rampgate.errors import (
    ConfigurationError,
    Conflict,
    InternalError,
    InvalidInput,
    NotFound,
    RampgateError,
    StoreError,
    StoreTimeout,
)
from rampgate.gate import AsyncGate, Gate

__version__ = "0.1.0"

__all__ = [
    "AsyncGate",
    "ConfigurationError",
    "Conflict",
    "Decision",
    "Gate",
    "InternalError",
    "InvalidInput",
    "NotFound",
    "RampgateError",
    "StoreError",
    "StoreTimeout",
    "__version__",
]
