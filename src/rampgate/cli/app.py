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
from rampgate.errors import InvalidInput, RampgateError
from rampgate.logs import check_log_level, configure_logging

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
    context: typer.Context,
    log_level: str = typer.Option(
        "WARNING",
        "--log-level",
        envvar="RAMPGATE_LOG_LEVEL",
        help="Level of the log lines written to stderr: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    ),
) -> None:
    source = context.get_parameter_source("log_level")
    field = "RAMPGATE_LOG_LEVEL" if source is not None and source.name == "ENVIRONMENT" else "--log-level"
    configure_logging(check_log_level(log_level, field))


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    for module in OPTIONAL_COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """Return click's exception class ``name`` and Typer's copy of it.

    Typer 0.29 and later carry their own copy of click, whose exceptions are
    not click's classes; older Typer raises click's own.
    """
    classes = {getattr(click.exceptions, name)}
    classes.update(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)
    return tuple(classes)


_EXIT: tuple[type[BaseException], ...] = (typer.Exit, *_click_classes("Exit"))
_ABORT: tuple[type[BaseException], ...] = (typer.Abort, *_click_classes("Abort"))
_USAGE_ERROR = _click_classes("UsageError")
_CLICK_ERROR = _click_classes("ClickException")


def main() -> None:
    """Run the CLI and map exceptions to the documented exit statuses."""
    _load_commands()
    try:
        code = app(standalone_mode=False)
    except _EXIT as done:
        sys.exit(getattr(done, "exit_code", 0))
    except _ABORT:
        stderr.print("aborted", markup=False, highlight=False)
        sys.exit(1)
    except _USAGE_ERROR as error:
        if error.__class__.__name__ == "NoArgsIsHelpError":
            error.show()  # type: ignore[attr-defined]
        else:
            stderr.print(f"error: {_usage_message(error)}", markup=False, highlight=False)
        sys.exit(2)
    except _CLICK_ERROR as error:
        stderr.print(f"error: {error.format_message()}", markup=False, highlight=False)  # type: ignore[attr-defined]
        sys.exit(getattr(error, "exit_code", 1))
    except InvalidInput as error:
        stderr.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(2)
    except RampgateError as error:
        stderr.print(f"error: {error}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


def _usage_message(error: BaseException) -> str:
    """One line: click's message and where the command's options are listed."""
    message = " ".join(error.format_message().split())  # type: ignore[attr-defined]
    context = getattr(error, "ctx", None)
    if context is None:
        return message
    return f"{message} (see `{context.command_path} --help`)"
