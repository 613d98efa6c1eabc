"""The ``rampgate`` command line."""

from rampgate.cli.app import app, main

__all__ = ["app", "main"]
