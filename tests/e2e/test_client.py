"""RampgateClient, AsyncRampgateClient, parse_rate_limited and send_with_retry against a real ``rampgate serve``."""

from __future__ import annotations

import http.server
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest

from e2e.decision_server import (
    JWT_SECRET,
    RETRY_ACTOR,
    SHADOW_ACTION,
    SUSPENDED_ACTOR,
    DecisionServer,
    decision_server,
)
from rampgate.client import (
    AsyncRampgateClient,
    RampgateClient,
    RejectedInput,
    ServiceError,
    Unauthorized,
    asend_with_retry,
    parse_rate_limited,
    parse_retry_after,
    send_with_retry,
)
from rampgate.core.messages import blocked_message
from rampgate.errors import ConfigurationError, InvalidInput


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecisionServer]:
    with decision_server(tmp_path_factory.mktemp("decision-server")) as running:
        yield running


@pytest.fixture
def client(service: DecisionServer) -> Iterator[RampgateClient]:
    with RampgateClient(service.url, token=service.service_token, timeout=10.0) as running:
        yield running


def new_actor() -> str:
    return f"u-{uuid.uuid4().hex[:12]}"


def end_user_token(actor_id: str) -> str:
    return jwt.encode({"sub": actor_id, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")


@pytest.fixture
def unreachable_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL that accepts connections and never responds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.fixture
def failing_url() -> Iterator[str]:
    """A loopback HTTP server that returns 503 to every request."""

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- RampgateClient.check ---------------------------------------------------


@pytest.mark.e2e
def test_client_check_allowed(client: RampgateClient) -> None:
    """An allowed decision carries the policy, the counter and the service's RateLimit headers."""
    result = client.check("user", new_actor(), "media_upload")

    assert result.allowed is True
    assert result.mode == "enforce"
    assert result.reason == "ok"
    assert result.tier == "B"
    assert result.policy == "tier:B:media_upload"
    assert (result.limit, result.window_seconds, result.remaining) == (5, 60, 4)
    assert result.retry_after == 0.0
    assert result.message is None
    assert result.retry_after_header is None
    assert result.ratelimit_policy == '"B.media_upload";q=5;w=60'
    assert result.ratelimit == '"B.media_upload";r=4;t=12'
    assert result.error is None


@pytest.mark.e2e
def test_client_check_blocks_sixth(client: RampgateClient) -> None:
    """The sixth upload in quick succession is blocked for at most 12 seconds, the refill time of one unit."""
    actor_id = new_actor()
    results = [client.check("user", actor_id, "media_upload") for _ in range(6)]

    assert [r.allowed for r in results] == [True] * 5 + [False]
    blocked = results[5]
    assert blocked.reason == "limited"
    assert blocked.would_block is True
    assert blocked.retry_after is not None
    assert 0.0 < blocked.retry_after <= 12.0
    assert blocked.retry_after_header == math.ceil(blocked.retry_after)
    assert blocked.message == blocked_message("limited", blocked.retry_after, "en")
    assert blocked.message.startswith("Too many requests. Try again in ")
    assert blocked.ratelimit == f'"B.media_upload";r=0;t={blocked.retry_after_header}'


@pytest.mark.e2e
def test_client_russian_message(service: DecisionServer) -> None:
    """accept_language is sent along, so the message comes in Russian."""
    actor_id = new_actor()
    with RampgateClient(service.url, token=service.service_token, accept_language="ru-RU,ru;q=0.9") as client:
        results = [client.check("user", actor_id, "media_upload") for _ in range(6)]
        english = client.check("user", actor_id, "media_upload", accept_language="en")

    assert results[5].message == blocked_message("limited", results[5].retry_after, "ru")
    assert results[5].message.startswith("Слишком много запросов.")
    assert english.message == blocked_message("limited", english.retry_after, "en")


@pytest.mark.e2e
def test_client_exceeds_capacity(client: RampgateClient) -> None:
    """A cost above the capacity is blocked with retry_after None."""
    result = client.check("user", new_actor(), "media_upload", cost=6)

    assert result.allowed is False
    assert result.reason == "exceeds_capacity"
    assert result.retry_after is None
    assert result.retry_after_header is None
    assert result.message == "This request is larger than the limit allows and cannot be accepted."


@pytest.mark.e2e
def test_client_suspended_actor(client: RampgateClient) -> None:
    """An actor at level E5 is blocked for an hour."""
    result = client.check("user", SUSPENDED_ACTOR, "create_post")

    assert result.reason == "suspended"
    assert result.retry_after == 3600.0
    assert result.retry_after_header == 3600


@pytest.mark.e2e
def test_client_shadow_mode(client: RampgateClient) -> None:
    """Outside the cohort every request is allowed and the would-be block is reported."""
    actor_id = new_actor()
    results = [client.check("user", actor_id, SHADOW_ACTION) for _ in range(16)]

    assert [r.allowed for r in results] == [True] * 16
    assert {r.mode for r in results} == {"shadow"}
    assert results[14].would_block is False
    assert results[15].would_block is True


@pytest.mark.e2e
def test_client_request_id_recorded(client: RampgateClient, service: DecisionServer) -> None:
    """The request id and context reach the audit trail, where the recent-blocks report shows them."""
    actor_id = new_actor()
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        client.check("user", actor_id, "media_upload")
    blocked = client.check("user", actor_id, "media_upload", request_id=request_id, context={"screen": "upload"})
    assert blocked.allowed is False

    headers = {"Authorization": f"Bearer {service.admin_token}"}
    deadline = time.monotonic() + 10.0
    recent: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        recent = httpx.get(service.url + "/v1/reports/recent?limit=100", headers=headers).json()
        if any(row["request_id"] == request_id for row in recent):
            break
        time.sleep(0.2)

    rows = [row for row in recent if row["request_id"] == request_id]
    assert len(rows) == 1
    assert rows[0]["actor_id"] == actor_id


@pytest.mark.e2e
def test_client_wrong_token_raises(service: DecisionServer) -> None:
    """A rejected token raises Unauthorized even when failures are set to fail open."""
    client = RampgateClient(service.url, token="wrong-token", on_error="open")
    with client, pytest.raises(Unauthorized) as raised:
        client.check("user", new_actor(), "search")

    assert raised.value.status_code == 401
    assert "wrong-token" not in str(raised.value)


@pytest.mark.e2e
def test_client_wrong_path_raises(service: DecisionServer) -> None:
    """A 404 from a wrong base URL raises a ServiceError even when failures are set to fail open."""
    client = RampgateClient(service.url + "/no-such-prefix", token=service.service_token, on_error="open")
    with client, pytest.raises(ServiceError) as raised:
        client.check("user", new_actor(), "search")

    assert raised.value.status_code == 404
    assert raised.value.retryable is False


@pytest.mark.e2e
def test_client_rejected_context(client: RampgateClient) -> None:
    """A context the service cannot store comes back as RejectedInput naming the field."""
    with pytest.raises(RejectedInput) as raised:
        client.check("user", new_actor(), "search", context={"blob": "x" * 10_000})

    assert raised.value.field == "context"
    assert "4096 bytes" in str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("person", "u-1", "search"), "actor_type"),
        (("user", "", "search"), "actor_id"),
        (("user", "x" * 257, "search"), "actor_id"),
        (("user", "u-1", "Search"), "action"),
        (("user", "u-1", "search", 0), "cost"),
    ],
)
def test_client_invalid_arguments(unreachable_url: str, arguments: tuple[object, ...], field: str) -> None:
    """Invalid arguments raise InvalidInput before any request is sent, whatever the on_error setting."""
    client = RampgateClient(unreachable_url, token="token", on_error="open")
    with client, pytest.raises(InvalidInput) as raised:
        client.check(*arguments)  # type: ignore[arg-type]

    assert raised.value.field == field


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"base_url": "127.0.0.1:8080"}, "base_url"),
        ({"token": ""}, "token"),
        ({"timeout": 0}, "timeout"),
        ({"on_error": "ignore"}, "on_error"),
    ],
)
def test_client_invalid_configuration(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, object], field: str
) -> None:
    """Invalid constructor arguments raise ConfigurationError naming the field."""
    monkeypatch.delenv("RAMPGATE_SERVICE_TOKEN", raising=False)
    arguments: dict[str, object] = {"base_url": "http://127.0.0.1:8080", "token": "token"}
    arguments.update(options)

    with pytest.raises(ConfigurationError) as raised:
        RampgateClient(**arguments)  # type: ignore[arg-type]

    assert raised.value.field == field


def test_client_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without token= the client reads RAMPGATE_SERVICE_TOKEN and keeps it out of its repr."""
    monkeypatch.setenv("RAMPGATE_SERVICE_TOKEN", "token-from-env")
    client = RampgateClient("http://127.0.0.1:8080")

    assert client._headers["Authorization"] == "Bearer token-from-env"
    assert "token-from-env" not in repr(client)
    client.close()


def test_client_unreachable_fails_open(unreachable_url: str) -> None:
    """With on_error open, an unreachable service allows the request in mode fail_open."""
    with RampgateClient(unreachable_url, token="token") as client:
        result = client.check("user", "u-1", "search")

    assert result.allowed is True
    assert result.mode == "fail_open"
    assert result.reason == "store_error"
    assert result.error is not None
    assert "could not be reached" in result.error


def test_client_unreachable_fails_closed(unreachable_url: str) -> None:
    """With on_error closed, an unreachable service blocks the request for one second."""
    with RampgateClient(unreachable_url, token="token", on_error="closed", accept_language="ru") as client:
        result = client.check("user", "u-1", "search")

    assert result.allowed is False
    assert result.reason == "store_error"
    assert result.retry_after == 1.0
    assert result.retry_after_header == 1
    assert result.message == "Сервис временно недоступен. Повторите попытку через 1 секунду."


def test_client_unreachable_raises(unreachable_url: str) -> None:
    """With on_error raise, an unreachable service raises a retryable ServiceError."""
    client = RampgateClient(unreachable_url, token="token", on_error="raise")
    with client, pytest.raises(ServiceError) as raised:
        client.check("user", "u-1", "search")

    assert raised.value.retryable is True
    assert raised.value.status_code is None


def test_client_timeout_fails_open(silent_url: str) -> None:
    """A service that never responds times out and the request fails open."""
    with RampgateClient(silent_url, token="token", timeout=0.2) as client:
        result = client.check("user", "u-1", "search")

    assert result.mode == "fail_open"
    assert result.error is not None
    assert "timed out" in result.error


def test_client_server_error_follows_on_error(failing_url: str) -> None:
    """A 5xx follows on_error: allowed when open, a ServiceError with the status when raise."""
    with RampgateClient(failing_url, token="token") as client:
        result = client.check("user", "u-1", "search")
    raising = RampgateClient(failing_url, token="token", on_error="raise")
    with raising, pytest.raises(ServiceError) as raised:
        raising.check("user", "u-1", "search")

    assert result.mode == "fail_open"
    assert raised.value.status_code == 503


# -- AsyncRampgateClient ----------------------------------------------------


@pytest.mark.e2e
async def test_async_client_blocks_sixth(service: DecisionServer) -> None:
    """The async client returns the same decisions as the sync one."""
    actor_id = new_actor()
    async with AsyncRampgateClient(service.url, token=service.service_token, timeout=10.0) as client:
        results = [await client.check("user", actor_id, "media_upload") for _ in range(6)]

    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[5].retry_after_header is not None
    assert 1 <= results[5].retry_after_header <= 12
    assert results[0].ratelimit == '"B.media_upload";r=4;t=12'


async def test_async_client_unreachable_fails_closed(unreachable_url: str) -> None:
    """The async client follows on_error too."""
    async with AsyncRampgateClient(unreachable_url, token="token", on_error="closed") as client:
        result = await client.check("user", "u-1", "search")

    assert result.allowed is False
    assert result.message == "The service is temporarily unavailable. Try again in 1 second."


# -- 429s from protected endpoints -------------------------------------------


def upload(service: DecisionServer, actor_id: str, language: str = "en") -> httpx.Response:
    headers = {"Authorization": f"Bearer {end_user_token(actor_id)}", "Accept-Language": language}
    return httpx.post(service.url + "/v1/media/upload-authorize", json={}, headers=headers, timeout=10.0)


@pytest.mark.e2e
def test_parse_rate_limited_protected_endpoint(service: DecisionServer) -> None:
    """The sixth upload to the service's protected endpoint parses into its parts."""
    actor_id = new_actor()
    responses = [upload(service, actor_id, "ru") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]

    limited = parse_rate_limited(responses[5])

    assert limited.retry_after == int(responses[5].headers["Retry-After"])
    assert limited.retry_after == responses[5].json()["retryAfter"]
    assert 1 <= limited.retry_after <= 12
    assert limited.action == "media_upload"
    assert limited.tier == "B"
    assert limited.limit == 5
    assert limited.window_seconds == 60
    assert limited.message == blocked_message("limited", limited.retry_after, "ru")


def test_parse_rate_limited_other_body() -> None:
    """A 429 without rampgate's body still gives Retry-After, and other fields are None."""
    response = httpx.Response(429, headers={"Retry-After": "7"}, text="slow down")

    limited = parse_rate_limited(response)

    assert limited.retry_after == 7
    assert limited.action is None
    assert limited.message is None


def test_parse_rate_limited_rejects_other_status() -> None:
    """Only a 429 can be parsed."""
    with pytest.raises(InvalidInput) as raised:
        parse_rate_limited(httpx.Response(200, json={}))

    assert raised.value.field == "response status"


def test_parse_retry_after_forms() -> None:
    """Delay seconds and HTTP dates are read; anything else is None."""
    now = 1_700_000_000.0

    assert parse_retry_after("12") == 12
    assert parse_retry_after(" 0 ") == 0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == 30
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0
    assert parse_retry_after("-3") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.e2e
def test_send_with_retry_waits_and_succeeds(service: DecisionServer) -> None:
    """After a 429 the helper waits Retry-After and the repeated request goes through."""
    token = end_user_token(RETRY_ACTOR)
    sleeps: list[float] = []

    def send() -> httpx.Response:
        return httpx.post(
            service.url + "/v1/dm/send",
            json={"target_user_id": "u-7", "body": "hi"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
        )

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    first = send()
    response = send_with_retry(send, max_wait=5.0, max_attempts=3, sleep=sleep)

    assert first.status_code == 200
    assert response.status_code == 200
    assert sleeps == [1.0]


@pytest.mark.e2e
def test_send_with_retry_respects_bounds(service: DecisionServer) -> None:
    """The helper stops at max_attempts, and never waits past max_wait in total."""
    actor_id = new_actor()
    for _ in range(5):
        upload(service, actor_id)
    probe = upload(service, actor_id)
    sleeps: list[float] = []
    responses: list[httpx.Response] = []

    def send() -> httpx.Response:
        responses.append(upload(service, actor_id))
        return responses[-1]

    by_attempts = send_with_retry(send, max_wait=100.0, max_attempts=3, sleep=sleeps.append)
    attempts_sleeps, attempts_responses = list(sleeps), list(responses)
    sleeps.clear()
    responses.clear()
    # Room for one Retry-After but not two: blocked requests consume nothing, so
    # each later Retry-After is at most the probe's and at least 1.
    max_wait = float(probe.headers["Retry-After"]) + 0.5
    by_wait = send_with_retry(send, max_wait=max_wait, max_attempts=10, sleep=sleeps.append)

    assert probe.status_code == 429
    assert by_attempts.status_code == 429
    assert len(attempts_responses) == 3
    assert attempts_sleeps == [float(r.headers["Retry-After"]) for r in attempts_responses[:2]]
    assert by_wait.status_code == 429
    assert len(responses) == 2
    assert sleeps == [float(responses[0].headers["Retry-After"])]


def test_send_with_retry_never_waits_for_capacity() -> None:
    """A 429 without Retry-After (the request can never pass) is returned at once."""
    sleeps: list[float] = []
    too_large = httpx.Response(429, json={"error": "rate_limited", "retryAfter": None})

    response = send_with_retry(lambda: too_large, max_wait=100.0, sleep=sleeps.append)

    assert response is too_large
    assert sleeps == []


@pytest.mark.e2e
async def test_asend_with_retry_waits(service: DecisionServer) -> None:
    """The async helper waits the same Retry-After."""
    actor_id = new_actor()
    for _ in range(5):
        upload(service, actor_id)
    probe = upload(service, actor_id)
    sleeps: list[float] = []
    responses: list[httpx.Response] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient(timeout=10.0) as http:

        async def send() -> httpx.Response:
            headers = {"Authorization": f"Bearer {end_user_token(actor_id)}"}
            responses.append(await http.post(service.url + "/v1/media/upload-authorize", json={}, headers=headers))
            return responses[-1]

        max_wait = float(probe.headers["Retry-After"]) + 0.5
        response = await asend_with_retry(send, max_wait=max_wait, max_attempts=5, sleep=sleep)

    assert response.status_code == 429
    assert len(responses) == 2
    assert sleeps == [float(responses[0].headers["Retry-After"])]


@pytest.mark.parametrize(("options", "field"), [({"max_wait": -1}, "max_wait"), ({"max_attempts": 0}, "max_attempts")])
def test_send_with_retry_invalid_bounds(options: dict[str, float], field: str) -> None:
    """Negative waits and fewer than one attempt are rejected."""
    with pytest.raises(InvalidInput) as raised:
        send_with_retry(lambda: httpx.Response(200), **options)  # type: ignore[arg-type]

    assert raised.value.field == field

