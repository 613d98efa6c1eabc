"""A closed-loop HTTP/1.1 load generator for ``POST /v1/check`` on 127.0.0.1, run in its own process.

``python -m bench.loadgen --port P --connections 16 --seconds 5 [--token T]``
keeps every connection busy with one request at a time (keep-alive, no
pipelining) for ``--seconds`` after ``--warmup-seconds``, then prints one
JSON object: requests completed, requests per second, the latency
percentiles in milliseconds and the count of each status. Each request
names the next of ``--actors`` actors in turn. It speaks just enough HTTP
for these servers (a ``Content-Length`` body, no chunked responses), on
uvloop when it is installed, so one core sends far more requests than the
servers can serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from time import perf_counter
from typing import Any

HOST = "127.0.0.1"


def _request(port: int, token: str | None, actor_id: str) -> bytes:
    body = b'{"actor_type":"user","actor_id":"%s","action":"api_call"}' % actor_id.encode()
    headers = [
        b"POST /v1/check HTTP/1.1",
        b"Host: %s:%d" % (HOST.encode(), port),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    if token:
        headers.append(b"Authorization: Bearer %s" % token.encode())
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    port: int, token: str | None, actor_ids: list[str], start_at: float, stop_at: float,
    latencies: list[float], statuses: dict[int, int], offset: int,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        number = offset
        while True:
            sent = perf_counter()
            if sent >= stop_at:
                return
            writer.write(_request(port, token, actor_ids[number % len(actor_ids)]))
            number += 1
            status = await _read_response(reader)
            received = perf_counter()
            if sent >= start_at:
                latencies.append(received - sent)
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def generate(
    port: int, connections: int, seconds: float, warmup_seconds: float, token: str | None, actors: int
) -> dict[str, Any]:
    """Drive the server; return the measured figures."""
    actor_ids = [f"u-{number}" for number in range(actors)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    now = perf_counter()
    start_at = now + warmup_seconds
    stop_at = start_at + seconds
    await asyncio.gather(*(
        _connection(port, token, actor_ids, start_at, stop_at, latencies, statuses, index * 7919)
        for index in range(connections)
    ))
    latencies.sort()

    def percentile(share: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(share * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "seconds": seconds,
        "requests_per_second": len(latencies) / seconds,
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port of the server on 127.0.0.1")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured duration in seconds")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="unmeasured load before, in seconds")
    parser.add_argument("--token", help="bearer token sent with every request")
    parser.add_argument("--actors", type=int, default=10_000, help="distinct actor ids, taken in turn")
    arguments = parser.parse_args(argv)

    try:
        import uvloop
    except ModuleNotFoundError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    figures = runner(generate(
        arguments.port, arguments.connections, arguments.seconds, arguments.warmup_seconds,
        arguments.token, arguments.actors,
    ))
    json.dump(figures, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
