"""The decision service: the FastAPI application that ``rampgate serve`` runs.

Each worker process holds one :class:`rampgate.AsyncGate`, opened at startup
and closed at shutdown, which flushes the audit trail. The application
serves ``/v1/check``, the two protected examples, appeals, the admin API,
``/metrics``, ``/healthz`` and ``/readyz``, plus the rollout, report and
console routers when those modules are installed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from contextlib import asynccontextmanager, suppress
from typing import Any, AsyncIterator

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from rampgate import __version__
from rampgate.catalog.appeals import AppealRepository
from rampgate.gate import AsyncGate
from rampgate.service import routes_admin, routes_appeals, routes_check, routes_protected
from rampgate.service.auth import is_admin_open, is_service_open, require_admin_read
from rampgate.service.body_limit import BodyLimitMiddleware
from rampgate.service.check_endpoint import CheckEndpoint
from rampgate.service.errors import install_error_handlers
from rampgate.service.jwt_auth import JwtVerifier
from rampgate.service.metrics import CONTENT_TYPE, ServiceMetrics
from rampgate.service.request_log import RequestLogMiddleware
from rampgate.service.schemas import ERROR_RESPONSES, HealthBody, ReadinessBody
from rampgate.settings import Settings, load_settings

logger = logging.getLogger(__name__)

# Routers that other parts of rampgate add; each is included when its module exists.
OPTIONAL_ROUTERS = (
    "rampgate.service.routes_rollouts",
    "rampgate.service.routes_reports",
    "rampgate.service.console",
)
METRICS_SYNC_SECONDS = 5.0
# The largest request body any route reads, far above the largest valid one
# (a direct message of 10,000 characters); larger bodies get 413 unread.
MAX_BODY_BYTES = 1024 * 1024
READINESS_TIMEOUT_SECONDS = 2.0


def create_app(settings: Settings | None = None, gate: AsyncGate | None = None) -> FastAPI:
    """Build the application.

    ``settings`` default to the environment's (``RAMPGATE_*`` or
    ``rampgate.toml``). Without ``gate`` the application opens its own
    :class:`AsyncGate` from the settings at startup and closes it at
    shutdown; a gate passed in stays open, for its owner to close.
    """
    settings = settings or load_settings()

    app = FastAPI(
        title="rampgate",
        version=__version__,
        summary="Trust-aware rate-limit decisions, admin API and appeals.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.gate = gate
    app.state.owns_gate = gate is None
    app.state.appeals = AppealRepository(gate.engine) if gate is not None else None
    app.state.metrics = ServiceMetrics()
    app.state.jwt_verifier = JwtVerifier(settings)

    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestLogMiddleware)
    # Outermost of the two: it serves most checks before routing starts.
    app.add_middleware(CheckEndpoint)

    app.include_router(_health_router())
    app.include_router(routes_check.router)
    app.include_router(routes_protected.router)
    app.include_router(routes_appeals.router)
    app.include_router(routes_admin.router)
    for module_name in OPTIONAL_ROUTERS:
        _include_optional(app, module_name)
    _document_mapped_errors(app)
    return app


def _document_mapped_errors(app: FastAPI) -> None:
    """Add to the OpenAPI schema the statuses that the app-wide exception handlers can give any route.

    An operation with path parameters can raise NotFound (404), and one that
    changes something can raise Conflict (409), whichever router defines it.
    """
    generate = app.openapi
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                if "{" in path:
                    responses.setdefault("404", {"description": "not found", "content": error_body})
                if method not in ("get", "head"):
                    responses.setdefault("409", {"description": "conflicts with the current state", "content": error_body})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _include_optional(app: FastAPI, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        logger.debug("service.router_absent", extra={"module": module_name})
        return
    app.include_router(module.router)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if app.state.gate is None:
        app.state.gate = AsyncGate(settings=settings)
        app.state.appeals = AppealRepository(app.state.gate.engine)
    gate: AsyncGate = app.state.gate
    # uvicorn accepts requests only after the lifespan startup, so no decision waits for a connection.
    await gate.warm()
    _log_startup(app, settings, gate)
    sync_task = asyncio.create_task(_sync_metrics(app))

    try:
        yield
    finally:
        sync_task.cancel()
        with suppress(asyncio.CancelledError):
            await sync_task
        if app.state.owns_gate:
            await gate.aclose()
            app.state.gate = None
        logger.info("service.stopped")


def _log_startup(app: FastAPI, settings: Settings, gate: AsyncGate) -> None:
    logger.info(
        "service.started",
        extra={
            "version": __version__,
            "catalog": gate.engine.dialect.name,
            "counter_store": settings.counter_store,
            "end_user_tokens": app.state.jwt_verifier.algorithm or "not configured",
        },
    )
    if is_service_open(settings):
        logger.warning("auth.open", extra={"surface": "/v1/check", "hint": "set RAMPGATE_SERVICE_TOKEN"})
    if is_admin_open(settings):
        logger.warning("auth.open", extra={"surface": "admin API", "hint": "set RAMPGATE_ADMIN_TOKEN"})


async def _sync_metrics(app: FastAPI) -> None:
    """Copy the gate's audit and flag numbers into the metrics every few seconds."""
    while True:
        gate = app.state.gate
        if gate is not None:
            try:
                app.state.metrics.sync_from_gate(gate)
            except Exception:
                logger.exception("metrics.sync_failed")
        await asyncio.sleep(METRICS_SYNC_SECONDS)


# -- health, readiness and metrics --------------------------------------------


def _health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=HealthBody)
    async def healthz() -> dict[str, str]:
        """Return ``ok`` while the process is up."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        response_model=ReadinessBody,
        responses={503: {"model": ReadinessBody, "description": "the catalog or the counter store is unreachable"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """Return 200 when the catalog and the counter store are reachable, 503 otherwise."""
        gate: AsyncGate | None = request.app.state.gate
        catalog = "unreachable"
        store = "unreachable"
        if gate is not None:
            catalog = "ok" if await _is_catalog_reachable(gate) else "unreachable"
            store = "ok" if await _is_store_reachable(gate) else "unreachable"

        ready = catalog == "ok" and store == "ok"
        body = {"status": "ready" if ready else "unavailable", "catalog": catalog, "counter_store": store}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={
            **{status: ERROR_RESPONSES[status] for status in (401, 403)},
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        },
        dependencies=[Depends(require_admin_read)],
    )
    def metrics(request: Request) -> Response:
        """Return every ``rampgate_...`` series in the Prometheus text format (admin or read-only token)."""
        service_metrics: ServiceMetrics = request.app.state.metrics
        gate = request.app.state.gate
        if gate is not None:
            service_metrics.sync_from_gate(gate)
        return Response(service_metrics.render(), media_type=CONTENT_TYPE)

    return router


async def _is_catalog_reachable(gate: AsyncGate) -> bool:
    def ping() -> None:
        with gate.engine.connect() as connection:
            connection.execute(sa.text("select 1"))

    try:
        await asyncio.wait_for(asyncio.to_thread(ping), READINESS_TIMEOUT_SECONDS)
    except (sa.exc.SQLAlchemyError, asyncio.TimeoutError) as error:
        logger.warning("readiness.catalog_unreachable", extra={"error": type(error).__name__})
        return False
    return True


async def _is_store_reachable(gate: AsyncGate) -> bool:
    """Ask the counter store's ``aping``, or ``ping`` in a thread; a store with neither (memory) is reachable."""
    store: Any = gate.store
    try:
        if hasattr(store, "aping"):
            await asyncio.wait_for(store.aping(), READINESS_TIMEOUT_SECONDS)
        elif hasattr(store, "ping"):
            await asyncio.wait_for(asyncio.to_thread(store.ping), READINESS_TIMEOUT_SECONDS)
    except Exception as error:  # any failure of a store of another developer's making means "not ready"
        logger.warning("readiness.store_unreachable", extra={"store": gate.settings.counter_store, "error": type(error).__name__})
        return False
    return True


def configure_service_logging(settings: Settings) -> None:
    """Send rampgate's and uvicorn's records to stderr as JSON lines (``RAMPGATE_LOG_FORMAT=console`` for text)."""
    from rampgate.logs import configure_logging

    configure_logging(settings.log_level, "console" if settings.log_format == "console" else "json")
    handlers = logging.getLogger("rampgate").handlers
    for handler in handlers:
        handler.addFilter(_drop_color_message)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = list(handlers)
        uvicorn_logger.setLevel(settings.log_level.upper())
        uvicorn_logger.propagate = False


def _drop_color_message(record: logging.LogRecord) -> bool:
    """Remove the ANSI-coloured copy of the message that uvicorn attaches to its records."""
    record.__dict__.pop("color_message", None)
    return True


def create_served_app() -> FastAPI:
    """Build the application of ``rampgate serve`` with its logging set up.

    uvicorn calls this factory in every worker process, so each one
    configures its own logging from the environment's settings.
    """
    settings = load_settings()
    configure_service_logging(settings)
    return create_app(settings)
