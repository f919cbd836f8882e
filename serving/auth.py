"""Bearer-token authentication (``--auth_token_file``): one check, used by the REST
middleware (``Authorization: Bearer <token>``) and the gRPC interceptor (``authorization``
metadata, the same value), so both transports accept exactly the same callers.

Tokens are compared in constant time (``hmac.compare_digest``, against every configured
token, so neither the token nor which one matched shows in the timing). Paths exempt from
the check (``--auth_exempt``): REST paths and gRPC method names, an entry ending in ``/``
exempting everything under it; by default the probes Kubernetes and Prometheus call
without credentials (``/healthz``, ``/readyz``, the metrics path, gRPC health, the
Open Inference Protocol's server live/ready over REST and gRPC).
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable

from serving.errors import Unauthenticated
from serving.settings import Settings

GRPC_HEALTH = "/grpc.health.v1.Health/"
V2_PROBES = ("/v2/health/live", "/v2/health/ready",
             "/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")
"""The Open Inference Protocol's liveness and readiness probes (KServe's probes call them)."""
_SCHEME = b"bearer "


class BearerTokens:
    """The accepted tokens and the exempt paths."""

    def __init__(self, tokens: Iterable[str], exempt: Iterable[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)
        if not self._tokens or not all(self._tokens):
            raise ValueError("no bearer token to accept, or an empty one")
        exempt = tuple(exempt)
        self._exact = frozenset(path for path in exempt if not path.endswith("/"))
        self._prefixes = tuple(path for path in exempt if path.endswith("/"))

    @classmethod
    def from_settings(cls, settings: Settings) -> BearerTokens:
        return cls((token.get_secret_value() for token in settings.auth_tokens), exempt_paths(settings))

    def exempt(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)

    def check(self, authorization: bytes | str | None) -> None:
        """Return if ``authorization`` (the header's or metadata's value) carries an accepted
        token; raise ``Unauthenticated`` otherwise."""
        if authorization is None:
            raise Unauthenticated("Missing credentials: send 'authorization: Bearer <token>'")
        value = authorization.encode() if isinstance(authorization, str) else authorization
        if value[:len(_SCHEME)].lower() != _SCHEME:
            raise Unauthenticated("Unsupported credentials: send 'authorization: Bearer <token>'")
        offered = value[len(_SCHEME):].strip()
        accepted = False
        for token in self._tokens:  # every one, matched or not
            accepted |= hmac.compare_digest(offered, token)
        if not accepted:
            raise Unauthenticated("Invalid bearer token")


def exempt_paths(settings: Settings) -> tuple[str, ...]:
    """``--auth_exempt`` if given, else the probes' paths."""
    if settings.auth_exempt is not None:
        return settings.auth_exempt
    probes = ("/healthz", "/readyz", GRPC_HEALTH, *V2_PROBES)
    return (*probes, settings.metrics_path) if settings.metrics_path else probes


def read_token_file(path: str) -> tuple[str, ...]:
    """One token per line; blank lines and lines starting with ``#`` are skipped."""
    with open(path, encoding="utf-8") as handle:
        tokens = tuple(line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#"))
    if not tokens:
        raise ValueError(f"{path} holds no token (one per line)")
    return tokens
