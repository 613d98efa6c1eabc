"""Sync calls of the Redis counter store on its own blocking connections: pooling, restarts, forks, URLs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import RedisServer, free_port, wait_until

from rampgate.errors import StoreError
from rampgate.stores.base import counter_key
from rampgate.stores.redis import RedisCounterStore

pytestmark = pytest.mark.integration


def test_sync_call_survives_redis_restart(private_redis: RedisServer) -> None:
    store = RedisCounterStore(private_redis.url, timeout_ms=1000)
    key = counter_key("token_bucket", "tier:B:restart", "user", "u-restart")
    try:
        before = store.consume(key, "token_bucket", 5, 60, 5, 1)
        private_redis.kill()
        private_redis.start()

        # The pooled connection was closed by the restart and the new server has no scripts.
        after = store.consume(key, "token_bucket", 5, 60, 5, 1)
    finally:
        store.close()

    assert before[:2] == (True, 4)
    assert after[:2] == (True, 4)
    assert store.breaker.failures == 0


def test_sync_call_survives_killed_client(private_redis: RedisServer) -> None:
    store = RedisCounterStore(private_redis.url, timeout_ms=1000)
    key = counter_key("gcra", "tier:B:killed", "user", "u-killed")
    client = private_redis.client()
    try:
        store.consume(key, "gcra", 5, 60, 5, 1)
        killed = client.client_kill_filter(_type="normal", skipme=True)
        wait_until(lambda: not store._idle[-1].is_reusable, 5, what="the killed connection reading as closed")

        outcome = store.consume(key, "gcra", 5, 60, 5, 1)
    finally:
        client.close()
        store.close()

    assert killed >= 1
    assert outcome[:2] == (True, 3)
    assert store.breaker.failures == 0


def test_sync_threads_admit_exactly_limit(redis_prefix: str) -> None:
    store = RedisCounterStore(
        os.environ.get("RAMPGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"), prefix=redis_prefix, timeout_ms=2000
    )
    key = counter_key("token_bucket", "tier:B:threads", "user", "u-threads")
    allowed: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(40):
            try:
                allowed.append(store.consume(key, "token_bucket", 200, 3600, 200, 1)[0])
            except BaseException as error:  # noqa: BLE001 - reported by the assertions below
                errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    idle = len(store._idle)
    store.close()

    assert errors == []
    assert len(allowed) == 320
    assert sum(allowed) == 200
    assert 1 <= idle <= 8


def test_sync_forked_child_opens_own_connection(private_redis: RedisServer) -> None:
    store = RedisCounterStore(private_redis.url, timeout_ms=1000)
    parent_key = counter_key("fixed_window", "tier:B:fork", "user", "parent")
    child_key = counter_key("fixed_window", "tier:B:fork", "user", "child")
    store.consume(parent_key, "fixed_window", 500, 3600, 500, 1)
    assert len(store._idle) == 1

    pid = os.fork()
    if pid == 0:
        # Child: report through the exit status, never through pytest.
        status = 1
        try:
            inherited = len(store._idle)
            remaining = [store.consume(child_key, "fixed_window", 500, 3600, 500, 1)[1] for _ in range(200)]
            status = 0 if inherited == 0 and remaining == list(range(499, 299, -1)) else 2
        finally:
            os._exit(status)

    remaining = [store.consume(parent_key, "fixed_window", 500, 3600, 500, 1)[1] for _ in range(200)]
    _, wait_status = os.waitpid(pid, 0)
    store.close()

    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert remaining == list(range(498, 298, -1))


def test_sync_wrong_password_fails(private_redis: RedisServer) -> None:
    client = private_redis.client()
    client.config_set("requirepass", "right-password")
    client.close()
    store = RedisCounterStore(
        private_redis.url.replace("redis://", "redis://:wrong-password@"), timeout_ms=500, preload=False
    )

    with pytest.raises(StoreError) as raised:
        store.consume("gcra:x:{user:1}", "gcra", 5, 60, 5, 1)

    assert "rejected AUTH" in str(raised.value)
    assert "wrong-password" not in str(raised.value)
    assert store.breaker.is_open


def test_sync_script_error_keeps_connection(private_redis: RedisServer) -> None:
    store = RedisCounterStore(private_redis.url, timeout_ms=1000)
    broken_key = counter_key("token_bucket", "tier:B:wrongtype", "user", "u-list")
    key = counter_key("token_bucket", "tier:B:wrongtype", "user", "u-fine")
    client = private_redis.client()
    client.rpush("rampgate:" + broken_key, "not a TAT")
    client.close()
    store.consume(key, "token_bucket", 5, 60, 5, 1)
    connection = store._idle[-1]

    with pytest.raises(StoreError) as raised:
        store.consume(broken_key, "token_bucket", 5, 60, 5, 1)
    after = store.consume(key, "token_bucket", 5, 60, 5, 1)
    idle = list(store._idle)
    store.close()

    assert "rejected consume_tat.lua" in str(raised.value)
    assert "WRONGTYPE" in str(raised.value)
    assert raised.value.retryable is False
    assert not store.breaker.is_open
    assert after[:2] == (True, 3)
    assert idle == [connection]


def test_sync_connection_refused_opens_breaker() -> None:
    store = RedisCounterStore(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=200, preload=False)

    with pytest.raises(StoreError) as first:
        store.consume("gcra:x:{user:1}", "gcra", 5, 60, 5, 1)
    with pytest.raises(StoreError) as second:
        store.consume("gcra:x:{user:1}", "gcra", 5, 60, 5, 1)

    assert "cannot connect" in str(first.value)
    assert "fail fast" in str(second.value)


@pytest.fixture
def unix_socket_redis(tmp_path: Path) -> Iterator[Path]:
    """A Redis server listening only on a unix socket in the test's directory."""
    path = tmp_path / "redis.sock"
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(path), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _pings(redis.Redis(unix_socket_path=str(path))), 10, what="redis-server on a unix socket")
        yield path
    finally:
        process.kill()
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def consume_sync_then_async(store: RedisCounterStore, key: str, algorithm: str) -> tuple[Any, Any]:
    """Consume one unit with ``consume``, then one with ``aconsume``, from a policy of 5 per minute."""
    first = store.consume(key, algorithm, 5, 60, 5, 1)

    async def scenario() -> Any:
        try:
            return await store.aconsume(key, algorithm, 5, 60, 5, 1)
        finally:
            await store.aclose()

    return first, asyncio.run(scenario())


def test_sync_and_async_over_unix_socket(unix_socket_redis: Path) -> None:
    store = RedisCounterStore(f"unix://{unix_socket_redis}?db=2", timeout_ms=1000)
    key = counter_key("sliding_window", "tier:B:unix", "user", "u-unix")

    first, second = consume_sync_then_async(store, key, "sliding_window")

    checker = redis.Redis(unix_socket_path=str(unix_socket_redis), db=2)
    try:
        stored = checker.exists("rampgate:" + key)
    finally:
        checker.close()
    assert first[1] == 4
    assert second[1] == 3
    assert stored == 1


@pytest.fixture
def tls_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A Redis server that accepts only TLS, with a certificate for 127.0.0.1 from a CA the test trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    _make_certificates(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(tmp_path / "server.crt"), "--tls-key-file", str(tmp_path / "server.key"),
         "--tls-ca-cert-file", str(tmp_path / "ca.crt"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.crt"))
    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tmp_path / "ca.crt"), socket_timeout=1
        )
        wait_until(lambda: _pings(client), 10, what="redis-server answering over TLS")
        yield port
    finally:
        process.kill()
        process.wait(10)


def _make_certificates(directory: Path) -> None:
    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=rampgate test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.crt")


def test_sync_and_async_over_tls(tls_redis: int) -> None:
    store = RedisCounterStore(f"rediss://127.0.0.1:{tls_redis}/0", timeout_ms=2000)
    key = counter_key("token_bucket", "tier:B:tls", "user", "u-tls")

    first, second = consume_sync_then_async(store, key, "token_bucket")

    assert first[:2] == (True, 4)
    assert second[:2] == (True, 3)
