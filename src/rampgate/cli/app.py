"""The Typer application and the error handling shared by every command.

Exit status: 0 on success (a blocked decision is a successful answer), 2 on
invalid input (the message names the field, the value and what is allowed,
and nothing is written), 1 on any other failure.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from rampgate.cli.output import stderr
from rampgate.errors import InvalidInput, NotFound, RampgateError
from rampgate.logs import configure_logging

app = typer.Typer(
    name="rampgate",
    help="Trust-aware rate limiting, rolled out to a growing cohort and rolled back by itself.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module adds its commands to ``app`` when imported.
COMMAND_MODULES = (
    "rampgate.cli.catalog_commands",
    "rampgate.cli.check_command",
)
OPTIONAL_COMMAND_MODULES = (
    "rampgate.cli.serve_command",
    "rampgate.cli.rollout_commands",
    "rampgate.cli.report_commands",
    "rampgate.cli.simulate_command",
    "rampgate.cli.demo_command",
    "rampgate.cli.audit_commands",
    "rampgate.cli.appeal_commands",
)


@app.callback()
def _configure(
    log_level: str = typer.Option("WARNING", "--log-level", envvar="RAMPGATE_LOG_LEVEL", help="Level of the log lines written to stderr."),
) -> None:
    configure_logging(log_level)


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    for module in OPTIONAL_COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def main() -> None:
    """Run the CLI and map exceptions to the documented exit statuses."""
    _load_commands()
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        stderr.print("aborted")
        sys.exit(1)
    except click.ClickException as error:
        error.show()
        sys.exit(2 if isinstance(error, click.UsageError) else 1)
    except InvalidInput as error:
        stderr.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(2)
    except NotFound as error:
        stderr.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(1)
    except RampgateError as error:
        stderr.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
