"""The machine, the servers and the package versions a benchmark run measured on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

# Servers of the comparisons. Only local servers are measured; each
# comparison uses its own key prefix or database and removes it afterwards.
REDIS_URL = os.environ.get("RAMPGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get("RAMPGATE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

PACKAGES = (
    "rampgate",
    "limits",
    "pyrate-limiter",
    "UnleashClient",
    "growthbook",
    "openfeature-sdk",
    "mmh3",
    "redis",
    "hiredis",
    "psycopg",
    "uvicorn",
    "starlette",
    "uvloop",
    "httptools",
)


def cpu_model() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def redis_version(url: str = REDIS_URL) -> str | None:
    """Return the Redis server version, None when no server responds within a second."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return None


def postgres_version(url: str = POSTGRES_ADMIN_URL) -> str | None:
    """Return the PostgreSQL server version, None when no server responds within a second."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=1) as connection:
            row = connection.execute("show server_version").fetchone()
            return None if row is None else str(row[0])
    except psycopg.Error:
        return None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe_machine() -> dict[str, Any]:
    """Return what a reader needs to judge the figures: cores, CPU, Python, servers, versions."""
    try:
        usable_cores: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = None
    return {
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "cpu": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "redis": redis_version(),
        "postgresql": postgres_version(),
        "packages": package_versions(),
    }
