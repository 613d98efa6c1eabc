"""Exceptions raised by rampgate.

The tree has three roots, split by who has to act::

    RampgateError
    ├── InvalidInput          the caller passed a bad value (exit status 2, HTTP 4xx)
    │   └── ConfigurationError  a setting or a plan file is wrong; the operator fixes it
    ├── StoreError            Redis, PostgreSQL or SQLite failed (chained with ``from``)
    │   └── StoreTimeout        a store call exceeded its time budget
    ├── NotFound              a named flag, policy, rollout or appeal does not exist
    ├── Conflict              a concurrent writer changed the same row first
    └── InternalError         a bug in rampgate
"""

from __future__ import annotations


class RampgateError(Exception):
    """Base of every exception that rampgate raises on purpose."""


class InvalidInput(RampgateError, ValueError):
    """A value given by the caller is outside what is allowed.

    ``field`` names the input, ``value`` repeats what was given and ``allowed``
    describes what would have been accepted, so the message can be shown as it is.
    """

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {field}: {shown}; expected {allowed}")


class ConfigurationError(InvalidInput):
    """A setting, plan or policy file is invalid; fix it and start again."""


class StoreError(RampgateError):
    """A counter or catalog store failed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class StoreTimeout(StoreError):
    """A store call took longer than its time budget."""


class NotFound(RampgateError, LookupError):
    """A named object does not exist."""


class Conflict(RampgateError):
    """Another writer changed the object first; read it again and retry."""


class InternalError(RampgateError):
    """A bug in rampgate: please report it with the traceback."""
