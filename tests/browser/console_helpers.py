"""Helpers of the browser tests: tokens, Chromium's launch flags and a JSON client of a running server."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("RAMPGATE_TEST_CHROMIUM", "/usr/bin/chromium")
ADMIN_TOKEN = "admin-token-for-browser-tests"
READONLY_TOKEN = "readonly-token-for-browser-tests"
SERVICE_TOKEN = "service-token-for-browser-tests"
JWT_SECRET = "jwt-secret-for-browser-tests-0123456789"
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

# Flags that keep Chromium off every network but loopback: no background
# fetches, no component or sync traffic, and every host name but 127.0.0.1
# resolves to nothing.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


@dataclass
class ServerClient:
    """Calls the HTTP API of a running ``rampgate serve`` with a bearer token."""

    base_url: str
    database_url: str

    def request(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
        """Send one request; return the status and the decoded JSON body (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            payload = error.read()
            status = error.code
        return status, json.loads(payload) if payload else None

    def api(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> Any:
        """Like :meth:`request`, but fail unless the status is 2xx."""
        status, payload = self.request(method, path, body, token)
        assert 200 <= status < 300, f"{method} {path} returned {status}: {payload}"
        return payload
