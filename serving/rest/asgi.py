"""What the REST app and its middleware share: the JSON error answer (``{"error": ...}``
with the error's status, the one place a ``ServingError`` becomes HTTP), header lookup, and
the path as the router sees it."""
from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import Response
from starlette.types import Scope

from serving.errors import ResourceExhausted, ServingError
from serving.rest import codec

JSON = "application/json"
Headers = list[tuple[bytes, bytes]]


def error_response(error: ServingError, headers: Mapping[str, str] | None = None) -> Response:
    extra = dict(headers or {})
    if isinstance(error, ResourceExhausted):
        extra["Retry-After"] = str(error.retry_after_s)
    return Response(codec.encode_error(error.message), status_code=error.http_status,
                    media_type=JSON, headers=extra)


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case, as ASGI servers give names)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def route_path(scope: Scope) -> str:
    """The path the router matches: ``path`` less the ``root_path`` the app is mounted
    under, by Starlette's rule (a test checks they agree)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path
