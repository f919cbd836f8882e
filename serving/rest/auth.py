"""REST authentication (``--auth_token_file``): an ASGI middleware, added to the app the
way any operator's own would be, so it sees every request, predictions included. A request
without an accepted bearer token gets 401 ``{"error": ...}`` with ``WWW-Authenticate:
Bearer`` (RFC 6750); exempt paths and CORS preflights (``OPTIONS``, which browsers send
without credentials) pass."""
from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.auth import BearerTokens
from serving.errors import Unauthenticated
from serving.rest.asgi import error_response, header, route_path

CHALLENGE = {"WWW-Authenticate": "Bearer"}


class BearerAuth:
    def __init__(self, app: ASGIApp, tokens: BearerTokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            if not self.tokens.exempt(route_path(scope)):
                try:
                    self.tokens.check(header(scope["headers"], b"authorization"))
                except Unauthenticated as error:
                    await error_response(error, CHALLENGE)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
