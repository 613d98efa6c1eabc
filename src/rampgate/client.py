"""HTTP client of the rampgate decision service, and helpers for the 429s of protected endpoints.

:class:`RampgateClient` and :class:`AsyncRampgateClient` call ``POST /v1/check``
with the service token and return a :class:`CheckResult`.
:func:`parse_rate_limited` reads a 429 from an endpoint that rampgate
protects, and :func:`send_with_retry` / :func:`asend_with_retry` repeat a
request after the ``Retry-After`` it was given, within a bound on the total
wait. All times are in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from math import ceil
from typing import Any, Literal, Self

import httpx

from rampgate.core.decision import ENFORCE, FAIL_OPEN, STORE_ERROR, STORE_ERROR_RETRY_AFTER
from rampgate.core.messages import blocked_message, negotiate_language
from rampgate.core.names import check_action, check_actor_id, check_actor_type, check_cost
from rampgate.errors import ConfigurationError, InvalidInput, RampgateError

logger = logging.getLogger(__name__)

OnError = Literal["open", "closed", "raise"]
ON_ERROR_CHOICES: tuple[str, ...] = ("open", "closed", "raise")

DEFAULT_TIMEOUT_SECONDS = 1.0
CHECK_PATH = "/v1/check"
TOKEN_ENVIRONMENT_VARIABLE = "RAMPGATE_SERVICE_TOKEN"

# One WARNING per this many seconds when the service fails, with the count of
# failures since the previous line, so that an outage does not flood the log.
FAILURE_LOG_INTERVAL_SECONDS = 10.0


class ServiceError(RampgateError):
    """The decision service could not be reached, timed out or returned an unexpected status.

    ``status_code`` is None when no response arrived. ``retryable`` is true for
    timeouts, connection failures and 5xx statuses.
    """

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class Unauthorized(ServiceError):
    """The service rejected the token (401 or 403): check ``RAMPGATE_SERVICE_TOKEN`` on both sides."""


class RejectedInput(InvalidInput):
    """The service rejected an argument with 400 or 422; ``field`` names it and the message is the service's."""

    def __init__(self, field: str, value: object, message: str) -> None:
        self.field = field
        self.value = value
        self.allowed = message
        RampgateError.__init__(self, message)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The decision of ``POST /v1/check``, with the RateLimit headers the service sent.

    The fields mean what they mean in a decision. ``tier``, ``policy``,
    ``limit`` and ``window_seconds`` are None when no policy applies or when
    the result was made up because the service failed; then ``error`` gives
    the reason, ``reason`` is ``store_error`` and ``mode`` is ``fail_open`` (allowed)
    or ``enforce`` (blocked for one second).
    """

    allowed: bool
    mode: str
    would_block: bool
    reason: str
    action: str
    tier: str | None
    policy: str | None
    limit: int | None
    window_seconds: int | None
    remaining: int | None
    reset_after: float
    retry_after: float | None
    message: str | None
    ratelimit_policy: str | None = None
    ratelimit: str | None = None
    error: str | None = None

    @classmethod
    def from_response(cls, response: httpx.Response) -> CheckResult:
        """Build the result from a 200 of ``POST /v1/check``; raise :class:`ServiceError` for another body."""
        try:
            body = response.json()
            return cls(
                allowed=bool(body["allowed"]),
                mode=body["mode"],
                would_block=bool(body["would_block"]),
                reason=body["reason"],
                action=body["action"],
                tier=body.get("tier"),
                policy=body.get("policy"),
                limit=body.get("limit"),
                window_seconds=body.get("window_seconds"),
                remaining=body.get("remaining"),
                reset_after=float(body.get("reset_after") or 0.0),
                retry_after=None if body.get("retry_after") is None else float(body["retry_after"]),
                message=body.get("message"),
                ratelimit_policy=response.headers.get("RateLimit-Policy"),
                ratelimit=response.headers.get("RateLimit"),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ServiceError(
                f"invalid decision from {response.request.url}: {error!r}; expected the decision fields as JSON",
                status_code=response.status_code,
                retryable=False,
            ) from error

    @classmethod
    def failed(cls, action: str, on_error: OnError, error: str, language: str = "en") -> CheckResult:
        """Build the result that replaces a failed call: allowed for ``open``, blocked for one second for ``closed``.

        Both mirror what the service itself decides when its counter store fails.
        """
        if on_error == "open":
            return cls(
                allowed=True, mode=FAIL_OPEN, would_block=False, reason=STORE_ERROR, action=action, tier=None,
                policy=None, limit=None, window_seconds=None, remaining=None, reset_after=0.0, retry_after=0.0,
                message=None, error=error,
            )
        return cls(
            allowed=False, mode=ENFORCE, would_block=True, reason=STORE_ERROR, action=action, tier=None,
            policy=None, limit=None, window_seconds=None, remaining=0, reset_after=STORE_ERROR_RETRY_AFTER,
            retry_after=STORE_ERROR_RETRY_AFTER, message=blocked_message(STORE_ERROR, STORE_ERROR_RETRY_AFTER, language),
            error=error,
        )

    @property
    def retry_after_header(self) -> int | None:
        """``Retry-After`` of a blocked result in whole seconds (at least 1), None when allowed or it can never pass."""
        if self.allowed or self.retry_after is None:
            return None
        return max(1, ceil(self.retry_after - 1e-9))


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The contents of a 429 from a rampgate-protected endpoint.

    ``retry_after`` is the whole seconds of ``Retry-After``, None when the
    request can never pass (or the header is missing). The other fields come
    from the JSON body and are None when the body is not rampgate's.
    """

    retry_after: int | None
    action: str | None
    tier: str | None
    message: str | None
    limit: int | None
    window_seconds: int | None


def parse_rate_limited(response: httpx.Response) -> RateLimited:
    """Read a 429 response; raise :class:`InvalidInput` when the status is not 429.

    ``Retry-After`` wins over the body's ``retryAfter`` when both are present,
    as the IETF RateLimit header draft (-10) requires of clients.
    """
    if response.status_code != 429:
        raise InvalidInput("response status", response.status_code, "429")

    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("error") != "rate_limited":
        body = {}

    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is None and isinstance(body.get("retryAfter"), int):
        retry_after = body["retryAfter"]
    return RateLimited(
        retry_after=retry_after,
        action=body.get("action"),
        tier=body.get("tier"),
        message=body.get("message"),
        limit=body.get("limit"),
        window_seconds=body.get("windowSeconds"),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> int | None:
    """Return the seconds in a ``Retry-After`` value (delay seconds or an HTTP date), None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0, ceil(moment.timestamp() - current))


def send_with_retry(
    request_fn: Callable[[], httpx.Response],
    *,
    max_wait: float = 30.0,
    max_attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """Call ``request_fn`` and repeat it after each 429's ``Retry-After``; return the last response.

    Stops at the first response that is not a 429, after ``max_attempts``
    calls, when a 429 has no ``Retry-After`` (the request can never pass),
    or when waiting would take the total wait past ``max_wait`` seconds. The
    last 429 is then returned as it is, for :func:`parse_rate_limited`.
    """
    _check_retry_bounds(max_wait, max_attempts)
    waited = 0.0
    attempt = 1
    while True:
        response = request_fn()
        delay = _retry_delay(response, attempt, max_attempts, max_wait - waited)
        if delay is None:
            return response

        logger.debug("client.retry_wait", extra={"attempt": attempt, "delay_seconds": delay})
        sleep(delay)
        waited += delay
        attempt += 1


async def asend_with_retry(
    request_fn: Callable[[], Awaitable[httpx.Response]],
    *,
    max_wait: float = 30.0,
    max_attempts: int = 3,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> httpx.Response:
    """Call ``request_fn`` and repeat it after each 429, like :func:`send_with_retry` but awaiting."""
    _check_retry_bounds(max_wait, max_attempts)
    waited = 0.0
    attempt = 1
    while True:
        response = await request_fn()
        delay = _retry_delay(response, attempt, max_attempts, max_wait - waited)
        if delay is None:
            return response

        logger.debug("client.retry_wait", extra={"attempt": attempt, "delay_seconds": delay})
        await sleep(delay)
        waited += delay
        attempt += 1


class _ClientBase:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        timeout: float,
        on_error: OnError,
        accept_language: str | None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError("base_url", base_url, "an http:// or https:// URL of the rampgate service")
        token = token if token is not None else os.environ.get(TOKEN_ENVIRONMENT_VARIABLE)
        if not token:
            raise ConfigurationError("token", None, f"the service token, passed as token= or set in {TOKEN_ENVIRONMENT_VARIABLE}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError("timeout", timeout, "a number of seconds greater than 0")
        if on_error not in ON_ERROR_CHOICES:
            raise ConfigurationError("on_error", on_error, "one of " + ", ".join(ON_ERROR_CHOICES))

        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.on_error: OnError = on_error
        self.accept_language = accept_language
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._failures = _FailureLog()

    def __repr__(self) -> str:
        # The token stays out of the repr because reprs end up in logs and tracebacks.
        return f"{type(self).__name__}(base_url={self.base_url!r}, on_error={self.on_error!r})"

    def _build_request(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int,
        request_id: str | None,
        context: dict[str, Any] | None,
        accept_language: str | None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        check_actor_type(actor_type)
        check_actor_id(actor_id)
        check_action(action)
        check_cost(cost)
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidInput("request_id", request_id, "a string or None")
        if context is not None and not isinstance(context, dict):
            raise InvalidInput("context", context, "a JSON object (dict) or None")

        payload: dict[str, Any] = {"actor_type": actor_type, "actor_id": actor_id, "action": action, "cost": cost}
        if request_id is not None:
            payload["request_id"] = request_id
        if context is not None:
            payload["context"] = context

        headers = dict(self._headers)
        language = accept_language if accept_language is not None else self.accept_language
        if language:
            headers["Accept-Language"] = language
        return payload, headers

    def _read_response(self, response: httpx.Response) -> CheckResult:
        if response.status_code == 200:
            return CheckResult.from_response(response)
        if response.status_code in (401, 403):
            raise Unauthorized(
                f"the service at {self.base_url} rejected the token with {response.status_code}; "
                f"check {TOKEN_ENVIRONMENT_VARIABLE} on the client and the server",
                status_code=response.status_code,
                retryable=False,
            )
        if response.status_code in (400, 422):
            raise _invalid_input_from(response)
        raise ServiceError(
            f"the service at {self.base_url} returned {response.status_code} for {CHECK_PATH}",
            status_code=response.status_code,
            retryable=response.status_code >= 500,
        )

    def _fail(self, action: str, error: ServiceError, accept_language: str | None) -> CheckResult:
        if self.on_error == "raise" or not error.retryable:
            raise error
        self._failures.warn(self.base_url, self.on_error, error)
        language = negotiate_language(accept_language if accept_language is not None else self.accept_language)
        return CheckResult.failed(action, self.on_error, str(error), language)


class RampgateClient(_ClientBase):
    """Synchronous client of ``POST /v1/check``.

    ``token`` defaults to ``RAMPGATE_SERVICE_TOKEN``. ``timeout`` bounds one
    call in seconds. ``on_error`` decides what a timeout, a connection failure
    or a 5xx returns: ``open`` (the default) allows the request, as the
    service does when its own store fails, ``closed`` blocks it for one
    second, and ``raise`` raises :class:`ServiceError`. Some failures raise
    whatever ``on_error`` is, because they do not go away by themselves: a
    rejected token raises :class:`Unauthorized`, invalid arguments raise
    :class:`InvalidInput` (:class:`RejectedInput` when the service found the
    problem), and another status below 500, such as 404 for a wrong URL,
    raises :class:`ServiceError`.
    ``accept_language`` is sent so that ``message`` comes in that language.
    Pass ``http_client`` to reuse an :class:`httpx.Client`; the caller then
    closes it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        on_error: OnError = "open",
        accept_language: str | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, token=token, timeout=timeout, on_error=on_error, accept_language=accept_language)
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.Client(timeout=self.timeout)

    def check(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        accept_language: str | None = None,
    ) -> CheckResult:
        """Decide one request; see the class docstring for what failures return or raise."""
        payload, headers = self._build_request(actor_type, actor_id, action, cost, request_id, context, accept_language)
        try:
            response = self._http.post(self.base_url + CHECK_PATH, json=payload, headers=headers, timeout=self.timeout)
            return self._read_response(response)
        except httpx.HTTPError as error:
            return self._fail(action, _transport_error(self.base_url, error), accept_language)
        except ServiceError as error:
            return self._fail(action, error, accept_language)

    def close(self) -> None:
        """Close the HTTP connections, unless the caller passed its own client."""
        if self._owns_client:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRampgateClient(_ClientBase):
    """The asyncio twin of :class:`RampgateClient`; use it as ``async with AsyncRampgateClient(...) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        on_error: OnError = "open",
        accept_language: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, token=token, timeout=timeout, on_error=on_error, accept_language=accept_language)
        self._owns_client = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=self.timeout)

    async def check(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        accept_language: str | None = None,
    ) -> CheckResult:
        """Decide one request; see :class:`RampgateClient` for what failures return or raise."""
        payload, headers = self._build_request(actor_type, actor_id, action, cost, request_id, context, accept_language)
        try:
            response = await self._http.post(
                self.base_url + CHECK_PATH, json=payload, headers=headers, timeout=self.timeout
            )
            return self._read_response(response)
        except httpx.HTTPError as error:
            return self._fail(action, _transport_error(self.base_url, error), accept_language)
        except ServiceError as error:
            return self._fail(action, error, accept_language)

    async def aclose(self) -> None:
        """Close the HTTP connections, unless the caller passed its own client."""
        if self._owns_client:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- helpers ---------------------------------------------------------------


class _FailureLog:
    """Logs service failures at most once per interval, with the count of failures in between."""

    def __init__(self, interval_seconds: float = FAILURE_LOG_INTERVAL_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        self._last_logged = float("-inf")
        self._suppressed = 0

    def warn(self, base_url: str, on_error: str, error: ServiceError) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_logged < self.interval_seconds:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._last_logged = now
        logger.warning(
            "client.service_failed",
            extra={
                "service": base_url,
                "on_error": on_error,
                "error": str(error),
                "status_code": error.status_code,
                "failures_not_logged": suppressed,
            },
        )


def _transport_error(base_url: str, error: httpx.HTTPError) -> ServiceError:
    if isinstance(error, httpx.TimeoutException):
        message = f"the service at {base_url} timed out: {error!r}"
    else:
        message = f"the service at {base_url} could not be reached: {error!r}"
    service_error = ServiceError(message)
    service_error.__cause__ = error
    return service_error


def _invalid_input_from(response: httpx.Response) -> RejectedInput:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or f"the service rejected the request with {response.status_code}")
    return RejectedInput(str(body.get("field") or "request"), body.get("value"), message)


def _check_retry_bounds(max_wait: float, max_attempts: int) -> None:
    if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)) or max_wait < 0:
        raise InvalidInput("max_wait", max_wait, "a number of seconds, 0 or more")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidInput("max_attempts", max_attempts, "an integer, 1 or more")


def _retry_delay(response: httpx.Response, attempt: int, max_attempts: int, wait_left: float) -> float | None:
    """Return how long to wait before the next attempt, or None to stop and return ``response``."""
    if response.status_code != 429 or attempt >= max_attempts:
        return None
    delay = parse_retry_after(response.headers.get("Retry-After"))
    if delay is None or delay > wait_left:
        return None
    return float(delay)
