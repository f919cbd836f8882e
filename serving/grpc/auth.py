"""gRPC authentication (``--auth_token_file``): an interceptor (``serving.grpc.interceptors``)
that refuses a call without an accepted bearer token in its ``authorization`` metadata with
UNAUTHENTICATED, before the method runs; exempt methods (gRPC health by default) pass. The
check is REST's (``serving.auth``), so both transports accept the same callers."""
from __future__ import annotations

from serving.auth import BearerTokens
from serving.grpc.contract import CallContext


class BearerInterceptor:
    def __init__(self, tokens: BearerTokens) -> None:
        self._tokens = tokens

    async def intercept(self, method: str, context: CallContext) -> None:
        if self._tokens.exempt(method):
            return
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
                break
        self._tokens.check(authorization)
