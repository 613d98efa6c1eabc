"""The baseline of the HTTP comparison: a bare Starlette JSON endpoint, served as ``rampgate serve`` serves.

``POST /v1/check`` parses the JSON body and returns a fixed JSON object of
the size of a decision; ``GET /healthz`` returns ``{"status": "ok"}``. Run it
with ``python -m bench.bare_app --port P``: uvicorn with uvloop and
httptools, one worker, no access log, the options of ``rampgate serve``.
"""

from __future__ import annotations

import argparse
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ANSWER = {
    "allowed": True, "mode": "enforce", "would_block": False, "reason": "ok", "action": "api_call", "tier": "B",
    "policy": "tier:B:api_call", "limit": 200, "window_seconds": 60, "remaining": 199, "reset_after": 0.3,
    "retry_after": 0.0, "message": None,
}


async def check(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse(dict(ANSWER, action=body.get("action", "api_call")))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/v1/check", check, methods=["POST"]), Route("/healthz", healthz)])


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    arguments = parser.parse_args(argv)
    uvicorn.run(
        "bench.bare_app:app",
        host="127.0.0.1",
        port=arguments.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
