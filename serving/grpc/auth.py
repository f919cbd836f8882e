"""gRPC authentication (``--auth_token_file``): an interceptor (``serving.grpc.interceptors``)
whose admission step refuses a call without an accepted bearer token in its ``authorization``
metadata with UNAUTHENTICATED, as soon as the call arrives: its message is never read, so a
caller without a token cannot make the server read and parse one (REST checks the header
before the body too). Exempt methods (gRPC health by default) pass. The check is REST's
(``serving.auth``), so both transports accept the same callers."""
from __future__ import annotations

from serving.auth import BearerTokens
from serving.grpc.contract import Metadata


class BearerInterceptor:
    def __init__(self, tokens: BearerTokens) -> None:
        self._tokens = tokens

    def admit(self, method: str, metadata: Metadata) -> None:
        if self._tokens.exempt(method):
            return
        authorization = None
        for key, value in metadata or ():
            if key == "authorization":
                authorization = value
                break
        self._tokens.check(authorization)
