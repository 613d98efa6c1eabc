"""The Redis counter store on a three-node Redis Cluster started by the test on free loopback ports."""

from __future__ import annotations

import asyncio
from multiprocessing.pool import Pool
from typing import Any

import pytest
from redis.crc import key_slot
from servers import RedisClusterServers
from test_exactness import ALGORITHMS, TIMEOUT_MS, run_exactness

from rampgate.stores.base import counter_key
from rampgate.stores.redis import RedisCounterStore

pytestmark = pytest.mark.integration


def cluster_settings(cluster: RedisClusterServers, prefix: str) -> dict[str, Any]:
    return {"counter_store": "redis", "redis_url": cluster.url, "redis_prefix": prefix, "store_timeout_ms": TIMEOUT_MS}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cluster_processes_admit_exactly_limit(
    spawn_pool: Pool, postgres_url: str, redis_cluster: RedisClusterServers, algorithm: str
) -> None:
    run_exactness(spawn_pool, postgres_url, cluster_settings(redis_cluster, f"exact-{algorithm}:"), algorithm)


def test_cluster_spreads_actors_over_nodes(redis_cluster: RedisClusterServers) -> None:
    store = RedisCounterStore(redis_cluster.url, prefix="spread:", timeout_ms=2000)
    try:
        for number in range(300):
            store.consume(counter_key("gcra", "tier:B:search", "user", f"u-{number}"), "gcra", 5, 60, 5, 1)
    finally:
        store.close()

    sizes = []
    for node in redis_cluster.nodes:
        client = node.client()
        try:
            sizes.append(len(list(client.scan_iter(match="spread:*"))))
        finally:
            client.close()
    assert sum(sizes) == 300
    assert min(sizes) > 0


def test_cluster_sync_and_async_share_counters(redis_cluster: RedisClusterServers) -> None:
    store = RedisCounterStore(redis_cluster.url, prefix="share:", timeout_ms=2000)
    key = counter_key("sliding_window", "tier:B:media_upload", "user", "shared")
    first = [store.consume(key, "sliding_window", 5, 60, 5, 1) for _ in range(3)]

    async def scenario() -> list[Any]:
        outcomes = await asyncio.gather(*[store.aconsume(key, "sliding_window", 5, 60, 5, 1) for _ in range(4)])
        await store.aclose()
        return list(outcomes)

    rest = asyncio.run(scenario())

    assert [outcome[1] for outcome in first] == [4, 3, 2]
    assert sorted(outcome[0] for outcome in rest) == [False, False, True, True]


def test_cluster_scripts_reload_after_flush(redis_cluster: RedisClusterServers) -> None:
    store = RedisCounterStore(redis_cluster.url, prefix="flush:", timeout_ms=2000)
    keys = [counter_key("fixed_window", "tier:B:flush", "user", f"u-{number}") for number in range(20)]
    for key in keys:
        store.consume(key, "fixed_window", 3, 60, 3, 1)
    for node in redis_cluster.nodes:
        client = node.client()
        try:
            client.script_flush()
        finally:
            client.close()

    sync_outcomes = [store.consume(key, "fixed_window", 3, 60, 3, 1) for key in keys]
    for node in redis_cluster.nodes:
        client = node.client()
        try:
            client.script_flush()
        finally:
            client.close()

    async def scenario() -> list[Any]:
        outcomes = [await store.aconsume(key, "fixed_window", 3, 60, 3, 1) for key in keys]
        await store.aclose()
        return outcomes

    async_outcomes = asyncio.run(scenario())

    assert [outcome[1] for outcome in sync_outcomes] == [1] * 20
    assert [outcome[1] for outcome in async_outcomes] == [0] * 20


def test_cluster_follows_ask_and_moved(redis_cluster: RedisClusterServers) -> None:
    store = RedisCounterStore(redis_cluster.url, prefix="move:", timeout_ms=2000)
    key = counter_key("gcra", "tier:B:search", "user", "moving")
    slot = key_slot(("move:" + key).encode())
    clients = [node.client() for node in redis_cluster.nodes]
    ids = [client.execute_command("CLUSTER", "MYID") for client in clients]
    ids = [value.decode() if isinstance(value, bytes) else value for value in ids]
    owner_port = slot_owner(clients[0], slot)
    owner = next(index for index, node in enumerate(redis_cluster.nodes) if node.port == owner_port)
    target = (owner + 1) % len(clients)

    async def scenario() -> list[Any]:
        warm = await store.aconsume(counter_key("gcra", "tier:B:search", "user", "warm"), "gcra", 5, 60, 5, 1)
        clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
        clients[owner].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        # The key is not on the migrating node yet, so that node replies ASK.
        during = await store.aconsume(key, "gcra", 5, 60, 5, 1)
        for client in clients:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        # The old owner now replies MOVED.
        after = await store.aconsume(key, "gcra", 5, 60, 5, 1)
        await store.aclose()
        return [warm, during, after]

    try:
        warm, during, after = asyncio.run(scenario())
        stored_on_target = clients[target].exists("move:" + key)
    finally:
        for client in clients:
            client.close()
        store.close()

    assert warm[1] == 4
    assert during[1] == 4
    assert after[1] == 3
    assert stored_on_target == 1


def slot_owner(client: Any, slot: int) -> int:
    """Return the port of the primary that serves ``slot``, according to ``client``'s node."""
    for first, last, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if first <= slot <= last:
            return int(primary[1])
    raise AssertionError(f"no node serves slot {slot}")


def test_cluster_ping_checks_every_primary(redis_cluster: RedisClusterServers) -> None:
    store = RedisCounterStore(redis_cluster.url, prefix="ping:", timeout_ms=2000)

    async def aping() -> int:
        await store.aping()
        assert store._router is not None
        primaries = len(store._router.primaries())
        await store.aclose()
        return primaries

    store.ping()
    primaries = asyncio.run(aping())

    assert primaries == 3
