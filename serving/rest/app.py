"""The REST adapter: TF Serving's HTTP API on FastAPI, delegating to the core service.

This module only translates: URLs to model targets, JSON to numpy (``codec``; the
prediction store's keys: ``keys``) and back, ``ServingError`` to ``{"error": ...}`` with
its status (the one place that mapping is made for HTTP). The hot paths are plain
Starlette routes with no per-request validation machinery, since the JSON is checked
against the model's own signature instead.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from google.protobuf.json_format import MessageToDict
from starlette.requests import ClientDisconnect

from serving.core.service import InferenceService, signature_defs
from serving.errors import (
    INTERNAL_ERROR,
    Cancelled,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    ServingError,
)
from serving.rest import codec, cors
from serving.rest.keys import take_keys
from serving.rest.options import FASTAPI_OPTIONS
from serving.runtime.savedmodel import DEFAULT_SIGNATURE
from serving.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "x-request-timeout-ms"
WATCH_AFTER_S = 0.05  # requests waiting longer than this are watched for disconnects
JSON = "application/json"
T = TypeVar("T")

_TARGET = re.compile(
    r"(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify|regress)|/(?P<metadata>metadata))?"
)


@dataclass(frozen=True)
class Target:
    """What a /v1/models/... URL addresses."""

    name: str
    version: int | None
    label: str | None
    verb: str | None
    metadata: bool


@functools.lru_cache(maxsize=1024)
def parse_target(path: str, method: str) -> Target:
    """The target of ``/v1/models/{path}``; cached, as clients repeat a few URLs (bounded,
    as the path is the client's)."""
    match = _TARGET.fullmatch(path)
    if match is None:
        raise NotFound(f"Malformed request: {method} /v1/models/{path}")
    version = match["version"]
    return Target(match["name"], int(version) if version else None, match["label"],
                  match["verb"], bool(match["metadata"]))


def create_app(settings: Settings, service: InferenceService) -> FastAPI:
    """The ASGI app; models load in the background once its lifespan starts."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="tf-gateway", lifespan=lifespan, **FASTAPI_OPTIONS)
    app.state.service = service
    key_field = settings.prediction_key_field  # instances' keys in the prediction store

    @_answers_errors
    async def post_model(request: Request) -> Response:
        target = parse_target(request.path_params["path"], "POST")
        if target.verb is None:
            raise NotFound(f"Malformed request: POST {request.url.path}")
        with service.track(target.name, target.verb, "REST"):
            deadline = _deadline(request, settings.rest_api_timeout_in_ms)
            doc = codec.parse_json(await _read_body(request, settings.max_request_bytes))
            servable = service.resolve(target.name, target.version, target.label)
            signature_name = doc.get("signature_name") or DEFAULT_SIGNATURE
            if not isinstance(signature_name, str):
                raise InvalidArgument("'signature_name' must be a string")
            if target.verb == "predict":
                signature = service.signature(servable, signature_name)
                keys = take_keys(doc, key_field, signature) if key_field else None
                tensors, form = codec.decode_predict(doc, signature)
                outputs = await _unless_disconnected(
                    request, service.predict(servable, signature_name, tensors, deadline, keys))
                body = codec.encode_predict(outputs, form)
            else:
                examples = codec.decode_examples(doc)
                run = service.classify if target.verb == "classify" else service.regress
                outputs = await _unless_disconnected(
                    request, run(servable, signature_name, examples, deadline))
                encode = codec.encode_classify if target.verb == "classify" else codec.encode_regress
                body = encode(outputs)
        return JSONBody(body)

    @_answers_errors
    async def get_model(request: Request) -> Response:
        target = parse_target(request.path_params["path"], "GET")
        if target.verb is not None:
            raise NotFound(f"Malformed request: GET {request.url.path}")
        if target.metadata:
            servable = service.resolve(target.name, target.version, target.label)
            response = service.model_metadata(servable)
            doc: dict[str, Any] = {
                "model_spec": _to_dict(response.model_spec),
                "metadata": {"signature_def": _to_dict(signature_defs(response))},
            }
        else:
            version = target.version
            if target.label is not None:
                version = service.resolve(target.name, None, target.label).version
            doc = _to_dict(service.model_status(target.name, version))
        return Response(orjson.dumps(doc), media_type=JSON)

    app.add_route("/v1/models/{path:path}", post_model, methods=["POST"])
    app.add_route("/v1/models/{path:path}", get_model, methods=["GET"])
    app.add_route("/v1/models/{path:path}", cors.preflight, methods=["OPTIONS"])
    if settings.rest_api_enable_cors_support:
        app.add_middleware(cors.CORSHeaders)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status": "alive"}', media_type=JSON)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        reason = service.not_ready_reason()
        if reason is None:
            return Response(b'{"status": "ready"}', media_type=JSON)
        return Response(codec.encode_error(f"not ready: {reason}"), status_code=503, media_type=JSON)

    if settings.metrics_path:
        async def metrics(_: Request) -> Response:
            return Response(service.metrics.exposition(),
                            media_type="text/plain; version=0.0.4; charset=utf-8")

        app.add_route(settings.metrics_path, metrics, methods=["GET"])
    return app


class JSONBody(Response):
    """A 200 answer with an encoded JSON body: Starlette's ``Response(body,
    media_type=JSON)`` with its two headers built directly (its general ``init_headers``
    costs several microseconds on every request)."""

    media_type = JSON

    def __init__(self, body: bytes) -> None:  # not super().__init__: the headers are set here
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_CONTENT_TYPE]


_JSON_CONTENT_TYPE = (b"content-type", JSON.encode())

Route = Callable[[Request], Awaitable[Response]]


def _answers_errors(route: Route) -> Route:
    """Answer every failure of ``route`` with ``{"error": ...}`` and its status: a
    ServingError with its own, anything unexpected with 500 (logged once, with its traceback;
    the client gets no internals)."""

    @functools.wraps(route)
    async def answer(request: Request) -> Response:
        try:
            return await route(request)
        except ServingError as error:
            return _error_response(error)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.url.path)
            return _error_response(ServingError(INTERNAL_ERROR))

    return answer


def _error_response(error: ServingError) -> Response:
    headers = {}
    if isinstance(error, ResourceExhausted):
        headers["Retry-After"] = str(error.retry_after_s)
    return Response(codec.encode_error(error.message), status_code=error.http_status,
                    media_type=JSON, headers=headers)


def _deadline(request: Request, default_ms: int) -> float:
    """Monotonic deadline from the request header, else the server's REST timeout."""
    raw = request.headers.get(TIMEOUT_HEADER)
    timeout_ms = default_ms
    if raw is not None:
        try:
            timeout_ms = float(raw)
        except ValueError:
            timeout_ms = -1
        if not timeout_ms > 0:
            raise InvalidArgument(f"{TIMEOUT_HEADER} must be a positive number of milliseconds")
    return time.monotonic() + timeout_ms / 1000.0


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading them where possible."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"Request body of {length} bytes is over the limit of {limit}")
    chunks, size = [], 0
    while True:  # Request.stream()'s loop, without an async generator per request
        message = await request.receive()
        if message["type"] != "http.request":
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (leaving the queue).

    Watching costs a task, so it starts only once the request has waited
    ``WATCH_AFTER_S``: quick requests, the vast majority under load, never pay for it.
    """
    task = asyncio.current_task()
    assert task is not None
    watch = _DisconnectWatch(request, task)
    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch.start)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.disconnected:
            task.uncancel()
            raise Cancelled("The client disconnected") from None
        raise
    finally:
        timer.cancel()
        watch.stop()


class _DisconnectWatch:
    """Cancels the request's task when its client goes away."""

    def __init__(self, request: Request, task: asyncio.Task) -> None:
        self._request = request
        self._task = task
        self._watcher: asyncio.Future | None = None
        self.disconnected = False

    def start(self) -> None:
        self._watcher = asyncio.ensure_future(_disconnected(self._request))
        self._watcher.add_done_callback(self._on_done)

    def _on_done(self, watcher: asyncio.Future) -> None:
        if not watcher.cancelled() and self._watcher is not None:
            self.disconnected = True
            self._task.cancel()

    def stop(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _to_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)
