"""CORS as TF Serving does it (``--rest_api_enable_cors_support``, its ``http_server.cc``).

- ``OPTIONS`` (a browser's preflight) on ``/v1/models/...`` is answered by the server itself,
  with or without the flag: 200 and an empty body when the ``Origin`` header holds
  ``http://`` or ``https://``, otherwise 400 "Origin header is missing in CORS preflight"
  (TF Serving's status; the body is our usual ``{"error": ...}``). TF Serving answers it on
  any ``/v1/`` path; here other ``/v1/`` paths keep answering 404 to every method.
- With the flag, every answer on a path of TF Serving's REST API (``(?i)/v1/.*``: success,
  error, preflight) carries
  ``Access-Control-Allow-Origin: *``, ``Access-Control-Allow-Methods: POST, GET`` and
  ``Access-Control-Allow-Headers``: TF Serving's ``Content-Type`` plus the gateway's own
  ``X-Request-Timeout-Ms``, so a browser may send it, and ``Authorization`` when bearer
  tokens are required (``--auth_token_file``), without which no browser could send one.

The Open Inference Protocol's paths (``/v2`` and under it, ``serving.rest.v2``) are treated
the same way: preflight answered on them, and the headers on every answer with the flag.
Other paths (``/healthz``, ``/readyz``, the metrics path) get neither, as TF Serving's
metrics handler gets none.
"""
from __future__ import annotations

import re

from fastapi.responses import Response
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.rest import codec

PREFLIGHT_ORIGIN = re.compile(r"https?://")
ALLOW_HEADERS = b"Content-Type, X-Request-Timeout-Ms"


def cors_headers(authorization: bool = False) -> tuple[tuple[bytes, bytes], ...]:
    """The headers on every /v1/ answer; ``authorization``: browsers may send that header too."""
    allowed = ALLOW_HEADERS + (b", Authorization" if authorization else b"")
    return ((b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
            (b"access-control-allow-headers", allowed))


async def preflight(request: Request) -> Response:
    """TF Serving's answer to ``OPTIONS /v1/...``."""
    if PREFLIGHT_ORIGIN.search(request.headers.get("origin", "")):
        return Response(status_code=200)
    return Response(codec.encode_error("Origin header is missing in CORS preflight"),
                    status_code=400, media_type="application/json")


class CORSHeaders:
    """ASGI middleware: TF Serving's CORS headers on every answer under ``/v1/``."""

    def __init__(self, app: ASGIApp, authorization: bool = False) -> None:
        self.app = app
        self.headers = cors_headers(authorization)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _api_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _api_path(path: str) -> bool:
    """TF Serving's REST paths (``/v1/...``) and the Open Inference Protocol's (``/v2``, ``/v2/...``)."""
    head = path[:4].lower()
    return head == "/v1/" or head == "/v2/" or path.lower() == "/v2"
