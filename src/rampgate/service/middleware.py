"""Rate limiting inside a Starlette or FastAPI app: a pure ASGI middleware and a route decorator.

Both decide each governed request with a :class:`rampgate.Gate` or
:class:`rampgate.AsyncGate` in the app's own process and respond to a
blocked request exactly as the decision service does: status 429, ``Retry-After``
(left out when the request can never pass), the ``RateLimit-Policy`` and
``RateLimit`` headers, and the JSON body
``{"error": "rate_limited", "action", "tier", "retryAfter", "limit", "windowSeconds", "message"}``
with ``message`` in the request's ``Accept-Language``.

The callables that pick the actor, the action and the cost receive a
:class:`starlette.requests.Request` and may be plain or ``async`` functions.
In the middleware they run before routing, so they can read the method, path,
query, headers, client address and ``scope["user"]`` set by an
authentication middleware that runs earlier, but neither the body nor the
path parameters.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeAlias, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rampgate.core.decision import ENFORCE, Decision
from rampgate.core.messages import negotiate_language
from rampgate.core.names import ACTOR_TYPES, check_action, check_cost
from rampgate.errors import ConfigurationError, InvalidInput
from rampgate.service.errors import error_body
from rampgate.service.responses import blocked_body, blocked_headers, ratelimit_headers
from rampgate.service.routes_protected import REQUEST_ID_HEADER, request_id_of

logger = logging.getLogger(__name__)

Actor: TypeAlias = tuple[str, str]
ActorResolver: TypeAlias = Callable[[Request], "Actor | None | Awaitable[Actor | None]"]
ActionResolver: TypeAlias = Callable[[Request], "str | None | Awaitable[str | None]"]
CostResolver: TypeAlias = Callable[[Request], "int | Awaitable[int]"]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

# Attribute of ``app.state`` that contains the gate when none is passed, so
# that an app can open its gate in its lifespan handler.
GATE_STATE_ATTRIBUTE = "rampgate_gate"

HTTP_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")

# Names of the parameters that the decorator adds to a FastAPI endpoint's
# signature, so that FastAPI passes the request and its sub-response.
_REQUEST_PARAMETER = "_rampgate_request"
_RESPONSE_PARAMETER = "_rampgate_response"


class DecidingGate(Protocol):
    """Anything with the ``decide`` method of :class:`rampgate.Gate` (sync) or :class:`rampgate.AsyncGate`."""

    def decide(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        *,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Any: ...


class RouteActions:
    """A table from route patterns to actions; the first pattern that matches a request wins.

    A pattern is ``"METHOD /path"`` or ``"/path"`` (every method), where the
    path uses Starlette's syntax: ``/items/{item_id}`` or ``/files/{name:path}``.
    A ``GET`` pattern also matches ``HEAD``.
    """

    def __init__(self, routes: Mapping[str, str]) -> None:
        if not isinstance(routes, Mapping) or not routes:
            raise ConfigurationError("action", routes, "a callable or a non-empty mapping of route patterns to actions")

        self._routes: list[tuple[str | None, re.Pattern[str], str]] = []
        for pattern, action in routes.items():
            method, path = _parse_route_pattern(pattern)
            _check_configured_action(action, f"action of route {pattern!r}")
            self._routes.append((method, _compile_route_path(pattern, path), action))

    def __call__(self, request: Request) -> str | None:
        return self.match(request.method, request.scope["path"])

    def match(self, method: str, path: str) -> str | None:
        """Return the action of the first pattern that matches ``method`` and ``path``, or None."""
        for route_method, regex, action in self._routes:
            method_matches = route_method in (None, method) or (route_method == "GET" and method == "HEAD")
            if method_matches and regex.match(path):
                return action
        return None


class RateLimitMiddleware:
    """Pure ASGI middleware that rate-limits the requests it governs.

    ``actor`` returns ``(actor_type, actor_id)`` for a request, or None to let
    it through undecided. ``action`` is a callable returning the action (None
    lets the request through) or a mapping of route patterns to actions (see
    :class:`RouteActions`). ``cost`` is an integer from 1 to 1,000,000 or a
    callable returning one. ``gate`` is a :class:`rampgate.AsyncGate`, or a
    :class:`rampgate.Gate` whose decisions then run in the thread pool; when it
    is None the middleware reads ``app.state.rampgate_gate`` on each request.

    A blocked request gets the service's 429 and never reaches the app. An
    allowed, enforced request reaches the app, and its response gets the
    ``RateLimit-Policy`` and ``RateLimit`` headers. A request whose actor id or
    cost is invalid gets 422 naming the field. WebSocket and lifespan scopes
    pass through. Raises :class:`ConfigurationError` for invalid arguments.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        gate: DecidingGate | None = None,
        actor: ActorResolver,
        action: ActionResolver | Mapping[str, str],
        cost: int | CostResolver = 1,
    ) -> None:
        self.app = app
        self.limiter = RequestLimiter(gate=gate, actor=actor, cost=cost, via="middleware")
        if callable(action):
            self.action: ActionResolver = action
        else:
            self.action = RouteActions(action)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request = Request(scope)
        action = await _resolve(self.action(request))
        if action is None:
            await self.app(scope, receive, send)
            return
        _check_resolved_action(action)

        outcome = await self.limiter.decide(request, action)
        if isinstance(outcome, Response):
            await outcome(scope, receive, send)
            return
        if outcome is None:
            await self.app(scope, receive, send)
            return

        headers = allowed_headers(outcome)
        if not headers:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    response_headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def rate_limited(
    action: str,
    *,
    actor: ActorResolver,
    gate: DecidingGate | None = None,
    cost: int | CostResolver = 1,
) -> Callable[[Endpoint], Endpoint]:
    """Rate-limit one Starlette or FastAPI endpoint under ``action``.

    Put it below the route decorator (``@app.post(...)`` first, then
    ``@rate_limited(...)``). ``actor``, ``gate`` and ``cost`` mean what they
    mean for :class:`RateLimitMiddleware`. A blocked request gets the
    service's 429 and the endpoint does not run. An allowed, enforced request
    runs the endpoint, sync or async, and its response gets the RateLimit
    headers. Raises :class:`ConfigurationError` for invalid arguments.

    For FastAPI the wrapper declares two extra keyword-only parameters, a
    :class:`Request` and a :class:`Response`, which FastAPI fills and the
    endpoint never receives. A Starlette endpoint receives its request as usual.
    """
    _check_configured_action(action, "action")
    limiter = RequestLimiter(gate=gate, actor=actor, cost=cost, via="decorator")

    def decorate(endpoint: Endpoint) -> Endpoint:
        if not callable(endpoint):
            raise ConfigurationError("endpoint", endpoint, "a function or method")
        is_async = inspect.iscoroutinefunction(inspect.unwrap(endpoint))
        signature, request_parameter, response_parameter = _signature_with_request(endpoint)

        @functools.wraps(endpoint)
        async def limited_endpoint(*args: Any, **kwargs: Any) -> Any:
            request = _take_argument(kwargs, request_parameter)
            sub_response = _take_argument(kwargs, response_parameter)
            if request is None:
                request = _find_request(endpoint, args, kwargs)

            outcome = await limiter.decide(request, action)
            if isinstance(outcome, Response):
                return outcome

            if is_async:
                result = await endpoint(*args, **kwargs)
            else:
                result = await run_in_threadpool(endpoint, *args, **kwargs)

            headers = allowed_headers(outcome) if outcome is not None else {}
            target = result if isinstance(result, Response) else sub_response
            if headers and target is not None:
                for name, value in headers.items():
                    target.headers.append(name, value)
            return result

        limited_endpoint.__signature__ = signature  # type: ignore[attr-defined]
        return limited_endpoint  # type: ignore[return-value]

    return decorate


class RequestLimiter:
    """The steps that the middleware and the decorator share: resolve the actor and cost, decide, respond."""

    def __init__(
        self,
        *,
        gate: DecidingGate | None,
        actor: ActorResolver,
        cost: int | CostResolver,
        via: str,
    ) -> None:
        if gate is not None and not callable(getattr(gate, "decide", None)):
            raise ConfigurationError("gate", gate, "a rampgate.Gate or rampgate.AsyncGate, or None for app.state")
        if not callable(actor):
            raise ConfigurationError("actor", actor, "a callable taking the request and returning (actor_type, actor_id) or None")
        if not callable(cost):
            _check_configured_cost(cost)

        self.gate = gate
        self.actor = actor
        self.cost = cost
        self.via = via

    async def decide(self, request: Request, action: str) -> Decision | Response | None:
        """Decide the request under ``action``.

        Return None when the actor callable returns None, the decision when
        the request may go on, or the response to send instead: the 429 of a
        blocked request, or a 422 when the actor id or cost is invalid. The
        decision is recorded under the request's ``X-Request-ID`` when it has
        a usable one (printable, at most 128 characters), else under a new
        random id, which the 429 carries in ``X-Request-ID``.
        """
        actor = await _resolve(self.actor(request))
        if actor is None:
            return None
        actor_type, actor_id = _check_resolved_actor(actor)
        gate = self.gate if self.gate is not None else gate_from_state(request)
        request_id = request_id_of(request)

        try:
            cost = await _resolve(self.cost(request)) if callable(self.cost) else self.cost
            decision = await self._decide(gate, request, actor_type, actor_id, action, cost, request_id)
        except ConfigurationError:
            raise
        except InvalidInput as error:
            logger.info(
                "middleware.invalid_input",
                extra={"field": error.field, "action": action, "path": request.url.path, "via": self.via},
            )
            return invalid_input_response(error)

        if decision.allowed:
            return decision

        logger.debug(
            "middleware.blocked",
            extra={"action": action, "reason": decision.reason, "policy": decision.policy, "via": self.via},
        )
        return blocked_response(decision, request.headers.get("accept-language"), request_id)

    @staticmethod
    async def _decide(
        gate: DecidingGate,
        request: Request,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int,
        request_id: str,
    ) -> Decision:
        context = {"method": request.method, "path": request.url.path}

        if inspect.iscoroutinefunction(gate.decide):
            decision: Decision = await gate.decide(
                actor_type, actor_id, action, cost, request_id=request_id, context=context
            )
        else:
            decision = await run_in_threadpool(
                gate.decide, actor_type, actor_id, action, cost, request_id=request_id, context=context
            )
        return decision


def gate_from_state(request: Request) -> DecidingGate:
    """Return the gate stored as ``app.state.rampgate_gate``; raise :class:`ConfigurationError` when it is missing."""
    app = request.scope.get("app")
    gate = getattr(getattr(app, "state", None), GATE_STATE_ATTRIBUTE, None)
    if gate is None or not callable(getattr(gate, "decide", None)):
        raise ConfigurationError(
            f"app.state.{GATE_STATE_ATTRIBUTE}", gate, "a rampgate.Gate or rampgate.AsyncGate, or pass gate="
        )
    return gate  # type: ignore[no-any-return]


def allowed_headers(decision: Decision) -> dict[str, str]:
    """Return the RateLimit headers that an allowed response carries.

    Only enforced decisions get them. In shadow mode the counters describe a
    limit that does not apply to the actor yet, and a client that paces itself
    by ``r`` and ``t`` would slow down before the rollout reaches it.
    """
    if decision.mode != ENFORCE:
        return {}
    return ratelimit_headers(decision)


def blocked_response(decision: Decision, accept_language: str | None, request_id: str | None = None) -> JSONResponse:
    """Build the 429 that the decision service sends for a blocked decision."""
    language = negotiate_language(accept_language)
    headers = blocked_headers(decision)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(blocked_body(decision, language), status_code=429, headers=headers)


def invalid_input_response(error: InvalidInput) -> JSONResponse:
    """Build the 422 that names the invalid field, with the service's error body."""
    return JSONResponse(error_body("invalid_input", str(error), error.field, error.value), status_code=422)


# -- helpers ---------------------------------------------------------------


async def _resolve(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _parse_route_pattern(pattern: object) -> tuple[str | None, str]:
    if not isinstance(pattern, str):
        raise ConfigurationError("route pattern", pattern, 'a string such as "POST /v1/media/upload" or "/items/{item_id}"')
    method_text, _, path = pattern.strip().rpartition(" ")
    method = method_text.strip().upper() or None
    if method is not None and method not in HTTP_METHODS:
        raise ConfigurationError("route pattern", pattern, "an optional method (" + ", ".join(HTTP_METHODS) + ") and a path")
    if not path.startswith("/"):
        raise ConfigurationError("route pattern", pattern, "a path that starts with /")
    return method, path


def _compile_route_path(pattern: str, path: str) -> re.Pattern[str]:
    try:
        regex, _, _ = compile_path(path)
    except (AssertionError, ValueError) as error:
        raise ConfigurationError("route pattern", pattern, f"a Starlette path ({error})") from None
    return regex


def _check_configured_action(action: object, field: str) -> None:
    try:
        check_action(action, field)
    except InvalidInput as error:
        raise ConfigurationError(error.field, error.value, error.allowed) from None


def _check_configured_cost(cost: object) -> None:
    try:
        check_cost(cost)
    except InvalidInput as error:
        raise ConfigurationError(error.field, error.value, error.allowed + " or a callable returning one") from None


def _check_resolved_action(action: object) -> None:
    # The action callable is the app's code, so a bad name is a bug there and
    # raises, rather than a 4xx blaming the client.
    _check_configured_action(action, "action returned by the action callable")


def _check_resolved_actor(actor: object) -> Actor:
    if not isinstance(actor, (tuple, list)) or len(actor) != 2:
        raise ConfigurationError("actor returned by the actor callable", actor, "(actor_type, actor_id) or None")
    actor_type, actor_id = actor
    if actor_type not in ACTOR_TYPES:
        raise ConfigurationError("actor_type returned by the actor callable", actor_type, "one of " + ", ".join(ACTOR_TYPES))

    # A string of the wrong length usually comes from the client (a header or a
    # token claim), so the gate rejects it and the client gets a 422. Any other
    # type is a bug in the callable.
    if not isinstance(actor_id, str):
        raise ConfigurationError("actor_id returned by the actor callable", actor_id, "a string of 1 to 256 characters")
    return actor_type, actor_id


def _find_request(endpoint: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Request):
            return value
    raise ConfigurationError(
        "endpoint",
        getattr(endpoint, "__qualname__", endpoint),
        "an endpoint called with a Request: put @rate_limited below the route decorator",
    )


def _signature_with_request(endpoint: Callable[..., Any]) -> tuple[inspect.Signature, str, str]:
    """Return the wrapper's signature and the names of its request and response parameters.

    FastAPI fills one parameter annotated :class:`Request` and one annotated
    :class:`Response` per endpoint, so an endpoint's own parameters of those
    types are shared with the wrapper. Otherwise the wrapper declares hidden
    keyword-only parameters, which it removes before calling the endpoint.
    """
    try:
        # FastAPI evaluates string annotations the same way.
        signature = inspect.signature(endpoint, eval_str=True)
    except NameError:
        signature = inspect.signature(endpoint)
    parameters = list(signature.parameters.values())

    request_parameter = _parameter_of_type(parameters, Request)
    response_parameter = _parameter_of_type(parameters, Response)
    hidden = []
    if request_parameter is None:
        request_parameter = _REQUEST_PARAMETER
        hidden.append(inspect.Parameter(_REQUEST_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=Request))
    if response_parameter is None:
        response_parameter = _RESPONSE_PARAMETER
        hidden.append(inspect.Parameter(_RESPONSE_PARAMETER, inspect.Parameter.KEYWORD_ONLY, annotation=Response))

    # Keyword-only parameters go before **kwargs, which must stay last.
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        parameters[-1:-1] = hidden
    else:
        parameters.extend(hidden)
    return signature.replace(parameters=parameters), request_parameter, response_parameter


def _parameter_of_type(parameters: list[inspect.Parameter], cls: type) -> str | None:
    for parameter in parameters:
        if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, cls):
            return parameter.name
    return None


def _take_argument(kwargs: dict[str, Any], name: str) -> Any:
    """Return the argument ``name``, removing it when the wrapper added that parameter itself."""
    if name in (_REQUEST_PARAMETER, _RESPONSE_PARAMETER):
        return kwargs.pop(name, None)
    return kwargs.get(name)
