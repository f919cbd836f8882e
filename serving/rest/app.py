"""The REST adapter: TF Serving's HTTP API on FastAPI, delegating to the core service.

This module only translates: URLs to model targets, JSON to numpy (``codec``; the
prediction store's keys: ``keys``) and back, ``ServingError`` to ``{"error": ...}`` with
its status (the one place that mapping is made for HTTP). The model routes are plain
ASGI endpoints with no per-request validation machinery, since the JSON is checked
against the model's own signature instead; and every POST (predict, classify, regress) is
handed to its endpoint by the innermost middleware (``ModelPosts``), past the layers it does
not need, so middleware added to the app or wrapped around it sees every request; while the
app has only the gateway's own middleware, ``GatewayApp`` also skips FastAPI's outer layers.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from google.protobuf.json_format import MessageToDict
from starlette.datastructures import URL
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.auth import BearerTokens
from serving.core.service import InferenceService, runner_fields, signature_defs
from serving.errors import (
    INTERNAL_ERROR,
    Cancelled,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ServingError,
)
from serving.rest import codec, cors, openapi
from serving.rest.asgi import JSON, Headers, error_response, header, route_path
from serving.rest.auth import BearerAuth
from serving.rest.keys import take_keys
from serving.rest.options import FASTAPI_OPTIONS
from serving.runtime.savedmodel import DEFAULT_SIGNATURE
from serving.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_HEADER = b"x-request-timeout-ms"
WATCH_AFTER_S = 0.05  # requests waiting longer than this (up to 1.5x) are watched for disconnects
T = TypeVar("T")
MODELS_PATH = "/v1/models/{path:path}"
V2_MODELS_PATH = "/v2/models/{path:path}"  # the Open Inference Protocol's (serving.rest.v2)

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

    docs = {"docs_url": "/docs", "openapi_url": "/openapi.json"} if settings.rest_api_docs else {}
    app = GatewayApp(title="tf-gateway", lifespan=lifespan, **{**FASTAPI_OPTIONS, **docs})
    if settings.rest_api_docs:
        openapi.install(app)
    app.state.service = service
    key_field = settings.prediction_key_field  # instances' keys in the prediction store
    watches = DisconnectWatches()

    async def post_model(scope: Scope, receive: Receive) -> Response:
        target = parse_target(scope["path_params"]["path"], "POST")
        if target.verb is None:
            raise NotFound(f"Malformed request: POST {URL(scope=scope).path}")
        with service.track(target.name, target.verb, "REST"):
            headers = scope["headers"]
            deadline = request_deadline(headers, settings.rest_api_timeout_in_ms)
            doc = codec.parse_json(await read_body(headers, receive, settings.max_request_bytes))
            servable = service.resolve(target.name, target.version, target.label)
            signature_name = doc.get("signature_name") or DEFAULT_SIGNATURE
            if not isinstance(signature_name, str):
                raise InvalidArgument("'signature_name' must be a string")
            if target.verb == "predict":
                signature = service.signature(servable, signature_name)
                keys = take_keys(doc, key_field, signature) if key_field else None
                tensors, form = codec.decode_predict(doc, signature)
                outputs = await watches.unless_disconnected(
                    receive, service.predict(servable, signature_name, tensors, deadline, keys))
                body = codec.encode_predict(outputs, form)
            else:
                examples = codec.decode_examples(doc)
                run = service.classify if target.verb == "classify" else service.regress
                outputs = await watches.unless_disconnected(
                    receive, run(servable, signature_name, examples, deadline))
                encode = codec.encode_classify if target.verb == "classify" else codec.encode_regress
                body = encode(outputs)
        return JSONBody(body)

    async def get_model(scope: Scope, _: Receive) -> Response:
        target = parse_target(scope["path_params"]["path"], "GET")
        if target.verb is not None:
            raise NotFound(f"Malformed request: GET {URL(scope=scope).path}")
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

    from serving.rest import v2  # it builds on this module's endpoint pieces

    posts = Endpoint(post_model)
    app.add_route(MODELS_PATH, posts, methods=["POST"])
    app.add_route(MODELS_PATH, Endpoint(get_model), methods=["GET"])
    app.add_route(MODELS_PATH, cors.preflight, methods=["OPTIONS"])
    v2_posts = v2.install(app, service, settings, watches)
    # Innermost first: each add_middleware wraps what was added before it.
    app.add_middleware(ModelPosts, endpoints=(posts, v2_posts))
    if settings.auth_tokens:
        app.add_middleware(BearerAuth, tokens=BearerTokens.from_settings(settings))
    if settings.rest_api_enable_cors_support:
        # outermost: a 401 carries the headers too
        app.add_middleware(cors.CORSHeaders, authorization=bool(settings.auth_tokens))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status": "alive"}', media_type=JSON)

    @app.get("/runners", include_in_schema=False)
    async def runners() -> Response:
        """The gateway's own: which runner serves each version, on what evidence (README)."""
        doc = {"versions": [{"model": servable.name, "version": servable.version, **runner_fields(choice)}
                            for servable, choice in service.runners()]}
        return Response(orjson.dumps(doc), media_type=JSON)

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


class ModelPosts:
    """The innermost middleware: a POST to ``MODELS_PATH`` (predict, classify, regress) or
    ``V2_MODELS_PATH`` (the Open Inference Protocol's infer) goes straight to its
    ``Endpoint``, past the inner layers (exception handlers, FastAPI's exit stack) and the
    route search, which it does not need: an ``Endpoint`` answers every failure itself.
    They cost a quarter of the gateway's CPU on a 1-row predict (py-spy, 64 connections).
    Every other request goes on to them as usual.

    Being middleware (added first, so innermost), it runs inside whatever middleware the
    app is given (``app.add_middleware``) or wrapped in: authentication, tracing and CORS
    see every prediction. The endpoint stays registered on the router too, which keeps the
    route table (and the ``Allow`` header of a 405) as it was.
    """

    paths = (compile_path(MODELS_PATH)[0], compile_path(V2_MODELS_PATH)[0])

    def __init__(self, app: ASGIApp, endpoints: tuple[ASGIApp, ASGIApp]) -> None:
        """``endpoints``: the POST endpoints of ``paths``, in that order."""
        self.app = app
        self.routes = tuple(zip(self.paths, endpoints))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = route_path(scope)
            for pattern, endpoint in self.routes:
                match = pattern.match(path)
                if match is not None:
                    scope["path_params"] = match.groupdict()
                    await endpoint(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @classmethod
    def matches(cls, path: str) -> bool:
        return any(pattern.match(path) is not None for pattern in cls.paths)


class GatewayApp(FastAPI):
    """FastAPI, plus one shortcut that changes nothing a client or a middleware sees. While
    every middleware the app was given is the gateway's own (``ModelPosts``, ``BearerAuth``,
    ``CORSHeaders``: none needs FastAPI's outer layers of error pages, exception telemetry
    and body limits, since ``Endpoint`` answers every failure itself), a model POST enters
    that same chain of middleware (the same classes and arguments, built once) without
    passing those layers first: 8-10% of the gateway's CPU per 1-row predict
    (``make bench-ceiling``, alternating runs). Any other middleware added to the app turns
    the shortcut off, so it sees every request through the full stack; middleware wrapped
    around the app sees everything either way."""

    _direct: ASGIApp | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        self._direct = None
        if all(m.cls in _OWN_MIDDLEWARE for m in self.user_middleware):
            chain: ASGIApp = self.router  # never reached: only model POSTs enter the chain
            for middleware in reversed(self.user_middleware):
                chain = middleware.cls(chain, *middleware.args, **middleware.kwargs)
            self._direct = chain
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self._direct
        if (direct is not None and scope["type"] == "http" and scope["method"] == "POST"
                and ModelPosts.matches(route_path(scope))):
            await direct(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


Handler = Callable[[Scope, Receive], Awaitable[Response]]


class Endpoint:
    """A route handler as a plain ASGI app (no Starlette ``Request`` per call) that answers
    every failure with ``{"error": ...}`` and its status: a ServingError with its own,
    anything unexpected with 500 (logged once, with its traceback; the client gets no
    internals)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._handler(scope, receive)
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            log.debug("client disconnected during %s %s", scope["method"], URL(scope=scope).path)
            return
        except ServingError as error:
            response = error_response(error)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], URL(scope=scope).path)
            response = error_response(ServingError(INTERNAL_ERROR))
        await response(scope, receive, send)


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


def request_deadline(headers: Headers, default_ms: int) -> float:
    """Monotonic deadline from the request header, else the server's REST timeout."""
    raw = header(headers, TIMEOUT_HEADER)
    timeout_ms = default_ms
    if raw is not None:
        try:
            timeout_ms = float(raw)
        except ValueError:
            timeout_ms = -1
        if not timeout_ms > 0:
            raise InvalidArgument(f"{TIMEOUT_HEADER.decode()} must be a positive number of milliseconds")
    return time.monotonic() + timeout_ms / 1000.0


async def read_body(headers: Headers, receive: Receive, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading them where possible."""
    length = header(headers, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"Request body of {length.decode()} bytes is over the limit of {limit}")
    chunks, size = [], 0
    while True:  # Request.stream()'s loop, without an async generator per request
        message = await receive()
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


class DisconnectWatches:
    """Cancels a request's work when its client disconnects first (it leaves the queue).

    Watching a client costs a task, so it starts only once the request has waited
    ``WATCH_AFTER_S``: quick requests, the vast majority under load, never pay for it. One
    sweep every ``WATCH_AFTER_S / 2`` (while any request waits) starts the watches that are
    due, rather than a timer per request.
    """

    def __init__(self) -> None:
        self._waiting: deque[_DisconnectWatch] = deque()  # in arrival order
        self._sweep: asyncio.TimerHandle | None = None

    async def unless_disconnected(self, receive: Receive, work: Awaitable[T]) -> T:
        """Await ``work``; if the client disconnects first, cancel it and raise ``Cancelled``."""
        task = asyncio.current_task()
        assert task is not None
        watch = _DisconnectWatch(receive, task, time.monotonic())
        self._waiting.append(watch)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start_due)
        try:
            return await work
        except asyncio.CancelledError:
            if watch.disconnected:
                task.uncancel()
                raise Cancelled("The client disconnected") from None
            raise
        finally:
            watch.stop()

    def _start_due(self) -> None:
        due = time.monotonic() - WATCH_AFTER_S
        waiting = self._waiting
        while waiting and waiting[0].since <= due:
            waiting.popleft().start()
        self._sweep = (asyncio.get_running_loop().call_later(WATCH_AFTER_S / 2, self._start_due)
                       if waiting else None)


class _DisconnectWatch:
    """Cancels the request's task when its client goes away, once started."""

    __slots__ = ("_receive", "_task", "_watcher", "since", "disconnected", "stopped")

    def __init__(self, receive: Receive, task: asyncio.Task, since: float) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Future | None = None
        self.since = since
        self.disconnected = False
        self.stopped = False

    def start(self) -> None:
        if not self.stopped:
            self._watcher = asyncio.ensure_future(_disconnected(self._receive))
            self._watcher.add_done_callback(self._on_done)

    def _on_done(self, watcher: asyncio.Future) -> None:
        if not watcher.cancelled() and self._watcher is not None:
            self.disconnected = True
            self._task.cancel()

    def stop(self) -> None:
        self.stopped = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _to_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True)


_OWN_MIDDLEWARE = frozenset({ModelPosts, BearerAuth, cors.CORSHeaders})
"""The middleware ``GatewayApp``'s shortcut may run outside FastAPI's outer layers."""
