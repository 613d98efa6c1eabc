"""Start a real ``rampgate serve`` process for end-to-end tests.

    from e2e.server import start_server     # pytest puts tests/ on sys.path

    with start_server({"RAMPGATE_DATABASE_URL": f"sqlite:///{tmp_path}/rg.db"}) as server:
        httpx.get(server.url + "/healthz")
    assert "service.stopped" in server.logs()

The server listens on a free loopback port, with the current environment
plus ``env``; :func:`start_server` returns once ``/readyz`` returns 200.
Its stderr (the JSON log lines) goes to a file that :meth:`Server.logs`
reads, during the run or after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

import httpx

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rampgate_executable() -> str:
    """Return the ``rampgate`` script next to the running Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("rampgate")
    if beside.exists():
        return str(beside)
    found = shutil.which("rampgate")
    if found is None:
        raise RuntimeError("the rampgate command is not installed; run pip install -e '.[dev]'")
    return found


class Server:
    """A running ``rampgate serve`` process; stop it with :meth:`stop` or a ``with`` block."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    def logs(self) -> str:
        """Return everything the server has written to stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Send SIGTERM, wait for a graceful exit (SIGKILL after 15 s) and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(env: Mapping[str, str], workers: int = 1, *, args: tuple[str, ...] = ()) -> Server:
    """Start ``rampgate serve --port <free port> --workers <workers> [args]`` and wait for ``/readyz``.

    ``env`` is added to the current environment. Raise ``RuntimeError``
    with the server's log when it exits or is not ready within 30 seconds.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tempfile.NamedTemporaryFile(prefix="rampgate-serve-", suffix=".log", delete=False)
    log_path = Path(log_file.name)
    command = [rampgate_executable(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *args]
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
    )
    log_file.close()
    server = Server(process, url, log_path)

    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rampgate serve exited with status {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)

    server.stop()
    raise RuntimeError(f"rampgate serve was not ready within {READY_TIMEOUT_SECONDS:.0f} s:\n{server.logs()}")
