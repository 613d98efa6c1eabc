"""``rampgate serve``: the HTTP decision service on uvicorn (uvloop and httptools)."""

from __future__ import annotations

import importlib
import ipaddress
import os
import shutil
import tempfile
from typing import Any, Optional

import typer

from rampgate.catalog.database import check_schema, create_catalog_engine, current_revision, migrate
from rampgate.cli.app import app
from rampgate.cli.output import stderr
from rampgate.errors import InvalidInput
from rampgate.logs import check_log_level
from rampgate.settings import Settings, load_settings

# The service modules import FastAPI and prometheus_client, which every other
# command would pay for at start-up, so they are imported inside the functions.

APP_FACTORY = "rampgate.service.app:create_served_app"
MAX_WORKERS = 64
GRACEFUL_SHUTDOWN_SECONDS = 10


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; a non-loopback one needs the tokens set."),
    port: int = typer.Option(8080, "--port", help="TCP port, 1 to 65535."),
    workers: int = typer.Option(1, "--workers", help="Worker processes; more than 1 needs the redis or postgres counter store."),
    controller: bool = typer.Option(False, "--controller", help="Also run the rollout controller in this process."),
    log_level: Optional[str] = typer.Option(
        None, "--log-level", help="DEBUG adds one line per request; default RAMPGATE_LOG_LEVEL or INFO."
    ),
    forwarded_allow_ips: Optional[str] = typer.Option(
        None,
        "--forwarded-allow-ips",
        help="Comma-separated proxy addresses or networks whose X-Forwarded-For and X-Forwarded-Proto are trusted; "
        "the console's sign-in throttle then counts the original client. Default: trust none.",
    ),
) -> None:
    """Serve decisions, the admin API, appeals, the console and /metrics over HTTP.

    Logs are JSON lines on stderr. The server stops gracefully on SIGTERM or
    Ctrl-C, flushing the audit trail.
    """
    if log_level is not None:
        os.environ["RAMPGATE_LOG_LEVEL"] = check_log_level(log_level, "--log-level")
    settings = load_settings()
    check_log_level(settings.log_level)
    check_serve_options(settings, host, port, workers)
    trusted_proxies = check_forwarded_allow_ips(forwarded_allow_ips)
    _check_catalog(settings)

    from rampgate.service.app import configure_service_logging
    from rampgate.service.jwt_auth import JwtVerifier

    JwtVerifier(settings)  # a bad RAMPGATE_JWT_PUBLIC_KEY stops the start here, not in every worker

    configure_service_logging(settings)
    metrics_directory = _prepare_metrics_directory(workers)
    controller_handle = _start_controller(settings) if controller else None

    import uvicorn

    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=trusted_proxies is not None,
            forwarded_allow_ips=trusted_proxies,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    finally:
        # With one worker uvicorn ends by re-raising the SIGTERM it handled, so
        # this block runs only after a several-worker server or Ctrl-C.
        stop = getattr(controller_handle, "stop", None)
        if callable(stop):
            stop()
        if metrics_directory is not None:
            shutil.rmtree(metrics_directory, ignore_errors=True)


def check_forwarded_allow_ips(value: str | None) -> str | None:
    """Return the trusted proxies as uvicorn takes them, None to trust none; raise for an invalid entry."""
    if value is None:
        return None
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise InvalidInput("--forwarded-allow-ips", value, "addresses or networks separated by commas, such as 10.0.0.0/8,127.0.0.1")
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise InvalidInput(
                "--forwarded-allow-ips", entry, "an IP address or network such as 10.0.0.0/8, or * to trust every proxy"
            ) from None
    return ",".join(entries)


def check_serve_options(settings: Settings, host: str, port: int, workers: int) -> None:
    """Raise :class:`InvalidInput` for options that would give wrong decisions or an open API."""
    from rampgate.service.auth import is_admin_open, is_service_open

    if not 1 <= port <= 65535:
        raise InvalidInput("--port", port, "an integer from 1 to 65535")
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidInput("--workers", workers, f"an integer from 1 to {MAX_WORKERS}")
    if workers > 1 and settings.counter_store == "memory":
        raise InvalidInput(
            "--workers",
            workers,
            "1 with the memory counter store, which each worker keeps apart and so would admit the limit once per "
            "worker; for more workers set RAMPGATE_COUNTER_STORE=redis (with RAMPGATE_REDIS_URL) or "
            "RAMPGATE_COUNTER_STORE=postgres (with a postgresql:// RAMPGATE_DATABASE_URL)",
        )

    if is_loopback(host):
        return
    missing = []
    if is_service_open(settings):
        missing.append("RAMPGATE_SERVICE_TOKEN")
    if is_admin_open(settings):
        missing.append("RAMPGATE_ADMIN_TOKEN")
    if missing:
        raise InvalidInput(
            "--host",
            host,
            "a loopback address such as 127.0.0.1, because without "
            + " and ".join(missing)
            + " anyone who reaches the port can use the API; set "
            + " and ".join(missing)
            + " to listen on other addresses",
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_catalog(settings: Settings) -> None:
    """Create an empty SQLite catalog, and stop with exit status 2 when the schema is not current."""
    engine = create_catalog_engine(settings.database_url)
    try:
        if engine.dialect.name == "sqlite" and current_revision(engine) is None:
            migrate(engine)
        check_schema(engine)
    finally:
        engine.dispose()


def _prepare_metrics_directory(workers: int) -> str | None:
    """Give several workers a fresh, shared directory for prometheus_client's multiprocess mode; return it."""
    from rampgate.service.metrics import MULTIPROC_ENV

    if workers == 1:
        os.environ.pop(MULTIPROC_ENV, None)
        return None
    directory = tempfile.mkdtemp(prefix="rampgate-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def _start_controller(settings: Settings) -> Any:
    """Start the rollout controller thread in this process when the controller is installed."""
    try:
        module = importlib.import_module("rampgate.rollout.controller")
    except ModuleNotFoundError as error:
        if error.name not in ("rampgate.rollout", "rampgate.rollout.controller"):
            raise
        module = None
    run_controller_thread = getattr(module, "run_controller_thread", None)
    if run_controller_thread is None:
        stderr.print("the rollout controller is not available in this installation; serving without it")
        return None
    return run_controller_thread(settings)
