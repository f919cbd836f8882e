"""The one error hierarchy of the gateway.

Every error a client can see is a ``ServingError``; each subclass carries the HTTP status
and the gRPC status code name that TF Serving uses for it, so each transport maps errors
once (REST: ``serving.rest.app``; gRPC: its servicer). Foreign errors (TensorFlow's,
protobuf's, numpy's) are translated into the most specific of these at the boundary where
they are caught.

    ServingError (500 INTERNAL)
    ├── InvalidArgument      400 INVALID_ARGUMENT
    │   └── PayloadTooLarge  413 INVALID_ARGUMENT
    ├── NotFound             404 NOT_FOUND
    ├── FailedPrecondition   400 FAILED_PRECONDITION
    ├── PermissionDenied     403 PERMISSION_DENIED
    ├── Unauthenticated      401 UNAUTHENTICATED
    ├── ResourceExhausted    429 RESOURCE_EXHAUSTED  (carries retry_after_s)
    ├── DeadlineExceeded     504 DEADLINE_EXCEEDED
    ├── Cancelled            499 CANCELLED
    ├── Unavailable          503 UNAVAILABLE
    ├── Unimplemented        501 UNIMPLEMENTED
    └── BadUpstreamAnswer    502 INTERNAL  (an upstream's answer could not be read)
"""
from __future__ import annotations

INTERNAL_ERROR = "Internal error: the server's log has the details"
"""What a client is told of an unexpected exception (each transport logs it once)."""


class ServingError(Exception):
    """Base of all client-visible errors; ``str(err)`` is the message sent to the client."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLarge(InvalidArgument):
    """The request body or its row count is over the configured limit."""

    http_status = 413


class NotFound(ServingError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class FailedPrecondition(ServingError):
    http_status = 400
    grpc_code = "FAILED_PRECONDITION"


class PermissionDenied(ServingError):
    """The operator's configuration forbids the request (a reload outside the model roots)."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class Unauthenticated(ServingError):
    """The call carries no valid credentials (a gRPC interceptor or REST auth refused it)."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class ResourceExhausted(ServingError):
    """The queue is full; the client should retry after ``retry_after_s`` seconds."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


class DeadlineExceeded(ServingError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class Cancelled(ServingError):
    http_status = 499
    grpc_code = "CANCELLED"


class Unavailable(ServingError):
    http_status = 503
    grpc_code = "UNAVAILABLE"


class Unimplemented(ServingError):
    http_status = 501
    grpc_code = "UNIMPLEMENTED"


class BadUpstreamAnswer(ServingError):
    """The upstream answered something malformed (e.g. a tensor whose content does not
    match its shape): the request was fine, so not INVALID_ARGUMENT; 502 Bad Gateway."""

    http_status = 502


_BY_GRPC_CODE: dict[str, type[ServingError]] = {
    cls.grpc_code: cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, PermissionDenied, Unauthenticated,
                ResourceExhausted, DeadlineExceeded, Cancelled, Unavailable, Unimplemented)
}


def error_for_grpc_code(code: str, message: str) -> ServingError:
    """The error for a gRPC status code name a peer answered with (``INTERNAL`` otherwise)."""
    return _BY_GRPC_CODE.get(code, ServingError)(message)
