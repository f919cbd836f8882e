"""The Open Inference Protocol's REST API ("KServe v2") beside TF Serving's, on the same core.

Routes (``install``): ``GET /v2`` (server metadata), ``GET /v2/health/live``,
``GET /v2/health/ready``, ``GET /v2/models/{m}[/versions/{v}]`` (metadata),
``GET .../ready``, ``POST .../infer``, the model repository extension's
``POST /v2/repository/index`` and ``POST /v2/repository/models/{m}/load|unload``
(``serving.core.repository``); every other path under ``/v2`` answers 404 with
``{"error": ...}`` (Starlette's ``{"detail"}`` is not something tritonclient can read). A
version is a number, or else one of TF Serving's version labels (``/versions/stable``).

An infer is translated exactly as TF Serving's ``:predict`` is (``serving.rest.app``): the
same accounting (method ``infer``), deadline, body limit, prediction-store key input
(``--prediction_key_field``), disconnect watch, and ``InferenceService.predict``: the
tensors are the arrays TF Serving's columnar form makes, so a v2 request and a TF Serving
one for the same signature share batches. The binary tensor extension: the body is the
JSON header (``Inference-Header-Content-Length`` bytes) then each binary input's
``binary_data_size`` bytes in ``inputs`` order; every input's datatype, shape and size is
checked against the limits before any data is decoded (``serving.v2``). Outputs are JSON
(``data`` flat) unless ``binary_data`` / ``binary_data_output`` ask for binary, which
answers ``application/octet-stream`` with the same header. BYTES in JSON are UTF-8 text.
A body may come gzip or deflate compressed (``Content-Encoding``), inflated to at most
``--max_request_bytes``; answers are never compressed (identity is always acceptable).
"""
from __future__ import annotations

import functools
import re
import time
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import ml_dtypes
import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.datastructures import URL
from starlette.types import Receive, Scope

from serving.core.service import InferenceService
from serving.errors import InvalidArgument, NotFound, PayloadTooLarge
from serving.rest import codec, cors
from serving.rest.app import V2_MODELS_PATH as MODELS_PATH
from serving.rest.app import DisconnectWatches, Endpoint, read_body, request_deadline
from serving.rest.asgi import JSON, header
from serving.runtime.savedmodel import DEFAULT_SIGNATURE
from serving.runtime.shapes import TensorLimits, check_total, label, what
from serving.runtime.signature import SignatureSpec, TensorSpec, shape_text
from serving.settings import Settings
from serving.v2 import datatypes, metadata, raw, shapes
from serving.v2 import request as v2
from serving.v2.datatypes import BYTES, Datatype
from serving.v2.repository import check_load_parameters, check_repository_name

HEADER_LENGTH = b"inference-header-content-length"
OCTET_STREAM = "application/octet-stream"
_SIXTEEN_BITS = {name: (text, float(ml_dtypes.finfo(datatypes.BY_NAME[name].dtype).max))
                 for name, text in (("FP16", "half"), ("BF16", "bfloat16"))}
"""FP16 and BF16: the name messages give the type, and its largest value. TF Serving's REST API
takes neither from JSON; this API does, parsed as doubles that ``_sixteen_bits`` rounds."""
_JSON_SPECS = {dt.name: TensorSpec(dt.name, np.dtype(np.float64) if dt.name in _SIXTEEN_BITS else dt.dtype,
                                   None, dt.dt_name)
               for dt in datatypes.DATATYPES}
"""What ``codec.json_tensor`` parses each datatype's JSON ``data`` as (it names the input itself),
with the datatype's TensorFlow name in its messages."""
_TARGET = re.compile(r"(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<verb>ready|infer))?")
_MAX_VERSION_DIGITS = 18  # TF Serving's versions are int64
_ENCODINGS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
"""zlib's window bits for each Content-Encoding: gzip's header and trailer, deflate's zlib ones."""


@dataclass(frozen=True)
class Target:
    """What a /v2/models/... URL addresses."""

    name: str
    version: int | None
    label: str | None
    verb: str | None
    """``ready``, ``infer`` or None (metadata)."""


@functools.lru_cache(maxsize=1024)
def parse_target(path: str, method: str) -> Target:
    """The target of ``/v2/models/{path}``; cached (bounded: the path is the client's)."""
    match = _TARGET.fullmatch(path)
    if match is None:
        raise NotFound(f"Malformed request: {method} /v2/models/{path}")
    version = match["version"] or ""
    if version.isascii() and version.isdigit() and len(version) > _MAX_VERSION_DIGITS:
        raise NotFound(f"Servable not found for request: Specific({match['name']}, {version})")
    number, version_label = v2.version_choice(version)
    return Target(match["name"], number, version_label, match["verb"])


def install(app: FastAPI, service: InferenceService, settings: Settings,
            watches: DisconnectWatches) -> Endpoint:
    """Add the v2 routes to ``app``; return the infer POST endpoint, for ``ModelPosts``."""
    limits = TensorLimits(settings.max_rows_per_request, settings.max_request_bytes)
    key_field = settings.prediction_key_field

    async def post_model(scope: Scope, receive: Receive) -> Response:
        target = parse_target(scope["path_params"]["path"], "POST")
        if target.verb != "infer":
            raise NotFound(f"Malformed request: POST {URL(scope=scope).path}")
        with service.track(target.name, "infer", "REST"):
            headers = scope["headers"]
            due = request_deadline(headers, settings.rest_api_timeout_in_ms)
            limit = settings.max_request_bytes
            body = _decoded(headers, await read_body(headers, receive, limit), limit)
            head, binary = _split(body, header(headers, HEADER_LENGTH))
            doc = codec.parse_json(head)
            request_id = doc.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise InvalidArgument(f"'id' must be a string, got {type(request_id).__name__}")
            params = v2.parameters(doc.get("parameters"))
            if params.timeout_us is not None:
                due = min(due, time.monotonic() + params.timeout_us / 1e6)
            servable = service.resolve(target.name, target.version, target.label)
            signature_name = params.signature_name or DEFAULT_SIGNATURE
            spec = service.signature(servable, signature_name)
            selected = v2.select_outputs(spec, _wanted(doc.get("outputs")), servable.name,
                                         params.binary_data_output)
            tensors = decode_inputs(doc.get("inputs"), binary, spec, limits, key_field, servable.name)
            keys = None
            if key_field is not None and key_field in tensors:  # the store's key, not an input unless named so
                keys = tensors[key_field] if key_field in spec.inputs else tensors.pop(key_field)
            outputs = await watches.unless_disconnected(
                receive, service.predict(servable, signature_name, tensors, due, keys, api="ModelInfer"))
            return _answer(servable.name, servable.version, request_id, outputs, selected)

    async def get_model(scope: Scope, _: Receive) -> Response:
        target = parse_target(scope["path_params"]["path"], "GET")
        if target.verb == "infer":
            raise NotFound(f"Malformed request: GET {URL(scope=scope).path}")
        if target.verb == "ready":
            ready = service.model_ready(target.name, target.version, target.label)
            if ready:
                return _json({"name": target.name, "ready": True})
            version = target.label or target.version
            reason = (f"model {label(target.name)} has no AVAILABLE version" if version is None
                      else f"version {version} of model {label(target.name)} is not AVAILABLE")
            return _json({"name": target.name, "ready": False, "error": f"not ready: {reason}"}, 503)
        servable = service.resolve(target.name, target.version, target.label)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        signature_name = (query.get("signature_name") or [DEFAULT_SIGNATURE])[0]
        spec = service.signature(servable, signature_name)
        model = metadata.model_metadata(servable.name, service.versions(servable.name), spec)
        return _json({"name": model.name, "versions": model.versions, "platform": model.platform,
                      "inputs": [vars(t) for t in model.inputs], "outputs": [vars(t) for t in model.outputs]})

    async def server(_: Scope, __: Receive) -> Response:
        info = metadata.server_metadata()
        return _json({"name": info.name, "version": info.version, "extensions": list(info.extensions)})

    async def live(_: Scope, __: Receive) -> Response:
        """Live while the process answers, draining too (as ``/healthz``)."""
        return _json({"live": True})

    async def ready(_: Scope, __: Receive) -> Response:
        reason = service.not_ready_reason()
        if reason is None:
            return _json({"ready": True})
        return _json({"ready": False, "error": f"not ready: {reason}"}, 503)

    async def repository_index(scope: Scope, receive: Receive) -> Response:
        doc = await _optional_json(scope, receive, settings.max_request_bytes)
        ready = doc.get("ready", False)
        if type(ready) is not bool:
            raise InvalidArgument("'ready' must be a boolean")
        check_repository_name(doc.get("repository_name"))
        return _json([{k: v for k, v in vars(entry).items() if v is not None}
                      for entry in service.repository.index(ready)])

    async def repository_load(scope: Scope, receive: Receive) -> Response:
        doc = await _optional_json(scope, receive, settings.max_request_bytes)
        params = doc.get("parameters") or {}
        if type(params) is not dict:
            raise InvalidArgument("'parameters' must be an object")
        check_load_parameters(params)
        await service.repository.load(scope["path_params"]["name"])
        return _json({})

    async def repository_unload(scope: Scope, receive: Receive) -> Response:
        await _optional_json(scope, receive, settings.max_request_bytes)  # unload_dependents: nothing depends
        await service.repository.unload(scope["path_params"]["name"])
        return _json({})

    async def unknown(scope: Scope, _: Receive) -> Response:
        raise NotFound(f"Malformed request: {scope['method']} {URL(scope=scope).path}")

    posts = Endpoint(post_model)
    add = functools.partial(app.add_route, include_in_schema=False)
    add("/v2", Endpoint(server), methods=["GET"])
    add("/v2/health/live", Endpoint(live), methods=["GET"])
    add("/v2/health/ready", Endpoint(ready), methods=["GET"])
    add(MODELS_PATH, posts, methods=["POST"])
    add(MODELS_PATH, Endpoint(get_model), methods=["GET"])
    add("/v2/repository/index", Endpoint(repository_index), methods=["POST"])
    add("/v2/repository/models/{name}/load", Endpoint(repository_load), methods=["POST"])
    add("/v2/repository/models/{name}/unload", Endpoint(repository_unload), methods=["POST"])
    add("/v2/{path:path}", cors.preflight, methods=["OPTIONS"])
    catch_all = Endpoint(unknown)  # any other method or path under /v2: {"error"}, not {"detail"}
    add("/v2", catch_all)
    add("/v2/{path:path}", catch_all)
    return posts


async def _optional_json(scope: Scope, receive: Receive, limit: int) -> dict[str, Any]:
    """A repository request's body: a JSON object, or nothing (tritonclient's index sends none)."""
    body = await read_body(scope["headers"], receive, limit)
    return codec.parse_json(body) if body.strip() else {}


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def _decoded(headers: list[tuple[bytes, bytes]], body: bytes, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip or deflate, as tritonclient's
    ``request_compression_algorithm`` sends them), at most ``limit`` bytes once inflated: a
    bomb is refused (413) after ``limit`` bytes, never inflated whole."""
    encoding = header(headers, b"content-encoding")
    if encoding is None or encoding.strip().lower() in (b"", b"identity"):
        return body
    wbits = _ENCODINGS.get(encoding.strip().lower())
    if wbits is None:
        raise InvalidArgument(f"Content-Encoding {encoding[:32].decode('latin-1')!r} is not supported: "
                              "send gzip, deflate or an uncompressed body")
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidArgument(f"The {encoding.decode('latin-1')} body does not decompress: {error}") from None
    if len(inflated) > limit:
        raise PayloadTooLarge(f"Request body is over the limit of {limit} bytes once decompressed")
    if not inflater.eof or inflater.unused_data:
        raise InvalidArgument(f"The {encoding.decode('latin-1')} body is cut short or has data after its end")
    return inflated


def _split(body: bytes, length: bytes | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary data after it (``Inference-Header-Content-Length``)."""
    if length is None:
        return body, memoryview(b"")
    text = length.strip()
    if not text.isdigit() or len(text) > 19 or int(text) > len(body):
        raise InvalidArgument(f"Inference-Header-Content-Length must be the JSON header's length in "
                              f"bytes, at most the body's {len(body)}; got {length[:32].decode('latin-1')!r}")
    size = int(text)
    if size == 0:
        raise InvalidArgument("Raw binary requests (Inference-Header-Content-Length: 0) are not "
                              "supported; send the JSON header")
    view = memoryview(body)
    return body[:size], view[size:]


def _wanted(outputs: object) -> list[v2.Wanted] | None:
    if outputs is None:
        return None
    if type(outputs) is not list:
        raise InvalidArgument(f"'outputs' must be a list, got {type(outputs).__name__}")
    wanted = []
    for output in outputs:
        if type(output) is not dict:
            raise InvalidArgument(f"Each of 'outputs' must be an object, got {type(output).__name__}")
        wanted.append(v2.wanted(output.get("name"), output.get("parameters")))
    return wanted


class _Input(NamedTuple):
    """One input once its name, datatype and shape passed (a tuple: built per input of every
    request, where a frozen dataclass's ``__init__`` costs more than the checks)."""

    name: str
    datatype: Datatype
    spec: TensorSpec | None
    shape: tuple[int, ...]
    elements: int
    data: object
    binary_size: int | None


def decode_inputs(inputs: object, binary: memoryview, spec: SignatureSpec, limits: TensorLimits,
                   key_field: str | None, model: str) -> dict[str, np.ndarray]:
    """The request's tensors: every input's name, datatype, shape and size checked (and the
    limits applied to all together, and the binary sizes to the data after the JSON) before
    any is decoded."""
    if type(inputs) is not list:
        raise InvalidArgument(f"'inputs' must be a list, got {type(inputs).__name__}")
    checked: list[_Input] = []
    for tensor in inputs:
        if type(tensor) is not dict:
            raise InvalidArgument(f"Each of 'inputs' must be an object, got {type(tensor).__name__}")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f"An input's 'name' must be a string, got {type(name).__name__}")
        tensor_spec = spec.inputs.get(name)
        datatype = (datatypes.check(tensor.get("datatype"), tensor_spec) if tensor_spec is not None
                    else datatypes.by_name(tensor.get("datatype"), name))
        dims, count = shapes.check(tensor.get("shape"), datatype, name, limits, tensor_spec)
        size = v2.binary_data_size(tensor.get("parameters"), name)
        if (size is None) == ("data" not in tensor):
            raise InvalidArgument(f"{what('Input', name)} must carry either 'data' or the parameter "
                                  "'binary_data_size', not both or neither")
        checked.append(_Input(name, datatype, tensor_spec, dims, count, tensor.get("data"), size))
    seen: set[str] = set()
    nbytes = claimed = 0
    for item in checked:  # one pass: a hostile request may list 100,000 inputs
        if item.name in seen:
            raise InvalidArgument(f"{what('Input', item.name)} is given twice")
        seen.add(item.name)
        nbytes += item.elements * item.datatype.dtype.itemsize
        if item.binary_size is not None:
            claimed += item.binary_size
    given = [item.name for item in checked if item.name in spec.inputs or item.name != key_field]
    if len(given) != len(spec.inputs) or any(name not in spec.inputs for name in given):
        spec.check_names(given)
    if len(checked) > 1:
        check_total(nbytes, limits)
    if claimed != binary.nbytes:
        raise InvalidArgument(f"The inputs' binary_data_size add up to {claimed} bytes, but {binary.nbytes} "
                              f"bytes follow the JSON header for model {label(model)}")
    tensors = {}
    offset = 0
    for item in checked:
        if item.binary_size is not None:
            data = binary[offset:offset + item.binary_size]
            offset += item.binary_size
            tensors[item.name] = raw.decode_checked(data, item.datatype, item.shape, item.elements, item.name)
        else:
            tensors[item.name] = _json_data(item)
    return tensors


def _json_data(item: _Input) -> np.ndarray:
    """An input's JSON ``data``, flat or nested in its shape, as an array of that shape."""
    array = codec.json_tensor(item.data, _JSON_SPECS[item.datatype.name], item.name)
    if array.size != item.elements:
        raise InvalidArgument(f"{what('Input', item.name)} has {array.size} values in 'data'; shape "
                              f"{shape_text(item.shape)} needs {item.elements}")
    if item.datatype.name in _SIXTEEN_BITS:
        array = _sixteen_bits(array, item.datatype, item.name)
    return array.reshape(item.shape)


def _sixteen_bits(values: np.ndarray, datatype: Datatype, name: str) -> np.ndarray:
    """FP16 or BF16 values rounded from the parsed doubles. A finite one beyond the type's
    largest would turn into infinity: refused, this API's own rule (FP32 and FP64 convert a JSON
    number as TF Serving's REST API does, infinity included)."""
    text, largest = _SIXTEEN_BITS[datatype.name]
    beyond = np.abs(values) > largest  # NaN compares False; infinity itself was sent as such
    if beyond.any():
        finite = values[beyond & np.isfinite(values)]
        if finite.size:
            raise InvalidArgument(f"Failed to process input: {name} of 'inputs' object. Error: Cannot convert "
                                  f"JSON value: {finite[0]!s} to {text} without loss of precision.")
    return values.astype(datatype.dtype)


def _answer(model: str, version: int, request_id: str | None, outputs: dict[str, np.ndarray],
            selected: list[v2.Output]) -> Response:
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id is not None:
        doc["id"] = request_id
    tensors, buffers = [], []
    for output in selected:
        array = outputs[output.name]
        tensor: dict[str, Any] = {"name": output.name, "datatype": output.datatype.name,
                                  "shape": list(array.shape)}
        if output.binary:
            buffer = raw.encode(array, output.datatype)
            tensor["parameters"] = {"binary_data_size": len(buffer)}
            buffers.append(buffer)
        else:
            tensor["data"] = _strings(array, output.name) if output.datatype is BYTES else codec.flat_json(array)
        tensors.append(tensor)
    doc["outputs"] = tensors
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not buffers:
        return _Body(head, JSON)
    return _Body(b"".join([head, *buffers]), OCTET_STREAM, len(head))


def _strings(array: np.ndarray, name: str) -> list[str]:
    items = array.ravel().tolist()
    try:
        return [item if type(item) is str else item.decode() for item in items]
    except UnicodeDecodeError:
        raise InvalidArgument(f"{what('Output', name)} holds bytes that are not UTF-8: ask for it with "
                              "the parameter binary_data") from None


class _Body(Response):
    """A 200 answer with its headers built directly (as ``app.JSONBody``), and the JSON
    header's length when binary data follows it."""

    def __init__(self, body: bytes, media_type: str, header_length: int | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.media_type = media_type
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", media_type.encode())]
        if header_length is not None:
            self.raw_headers.append((HEADER_LENGTH, b"%d" % header_length))
