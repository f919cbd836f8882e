"""TF Serving's gRPC services, translated onto the core service.

Each method only converts protos to numpy and back and delegates to
``InferenceService``; ``ServingError`` becomes a gRPC status in one place (``rpc``).
The client's deadline is the request's deadline; a client that cancels leaves the queue.
Methods are coroutines run on the core's event loop; the gRPC server (``--grpc_server``:
``serving.grpc.contract``) hands them the calls, each its own ``CallContext``.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.core.results import Classifications
from serving.core.service import RUNNER, SIGNATURE_DEF, InferenceService, Servable
from serving.errors import INTERNAL_ERROR, InvalidArgument, PermissionDenied, ServingError, Unimplemented
from serving.grpc.contract import CallContext, GrpcServer
from serving.grpc.interceptors import Interceptor, admission, intercepted
from serving.model_roots import ModelRoots
from serving.runtime.savedmodel import DEFAULT_SIGNATURE
from serving.runtime.signature import CLASSIFY, REGRESS
from serving.runtime.tensors import TensorLimits, protos_to_numpy, to_proto
from serving.tfs_config import ConfigError, models_from_server_config

log = logging.getLogger(__name__)


Handler = Callable[[Any, Any, CallContext], Awaitable[Any]]


def rpc(method: str | None, model_name: Callable[[Any], str] | None = None) -> Callable[[Handler], Handler]:
    """Map ServingError to its gRPC status; account inference calls as ``method`` of the
    model ``model_name(request)`` names (default: TF Serving's ``model_spec.name``). For the
    methods of any servicer whose ``_service`` is the ``InferenceService``."""
    name_of = _model_name if model_name is None else model_name

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def call(self: Any, request: Any, context: CallContext) -> Any:
            try:
                if isinstance(request, Undecodable):
                    raise InvalidArgument(request.message)
                if method is None:
                    return await handler(self, request, context)
                with self._service.track(name_of(request), method, "GRPC"):
                    return await handler(self, request, context)
            except ServingError as error:
                await context.abort(grpc.StatusCode[error.grpc_code], status_details(error.message))
            except Exception:
                log.exception("unexpected error answering %s", type(request).__name__)
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)

        return call

    return wrap


MAX_DETAILS_BYTES = 2048
"""A status message's most UTF-8 bytes. It travels in a trailer, percent-encoded outside
printable ASCII (up to 3 bytes a byte), and clients refuse trailers over 8-16 KB: a message
quoting a client's 100 KB model name failed the whole call RESOURCE_EXHAUSTED."""


def status_details(message: str) -> str:
    """``message`` as a status's details: cut to ``MAX_DETAILS_BYTES``, ending "..." if cut."""
    data = message.encode()
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    return data[:MAX_DETAILS_BYTES - 3].decode(errors="ignore") + "..."


class Undecodable:
    """A request whose bytes do not parse as the method's message. gRPC's own deserializer
    would answer UNKNOWN; ``add_to_server`` hands this to the method instead, which answers
    INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        self.message = message


def add_to_server(server: GrpcServer, servicer: Any, service: ServiceDescriptor,
                  interceptors: Sequence[Interceptor] = ()) -> None:
    """Register ``servicer``'s methods of ``service`` (what the generated ``add_*_to_server``
    does) behind ``interceptors`` (``serving.grpc.interceptors``: their admission steps
    before the message is read, their intercept steps before the method), with request
    parsing that turns undecodable bytes into ``Undecodable``. Unary and server-streaming
    methods (health's Watch); our services have no client-streaming one."""
    for method in service.methods:
        if method.client_streaming:
            continue
        path = f"/{service.full_name}/{method.name}"
        streaming = method.server_streaming
        server.add_method(path, intercepted(getattr(servicer, method.name), path, interceptors, streaming),
                          _tolerant(GetMessageClass(method.input_type)),
                          GetMessageClass(method.output_type).SerializeToString, streaming,
                          admission(path, interceptors))


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Undecodable(f"Could not parse the {message_class.DESCRIPTOR.name}: {error}")

    return parse


def _model_name(request: Any) -> str:
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name


class _Base:
    def __init__(self, service: InferenceService) -> None:
        self._service = service

    def _resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        choice = spec.WhichOneof("version_choice")
        version = spec.version.value if choice == "version" else None
        label = spec.version_label if choice == "version_label" else None
        return self._service.resolve(spec.name, version, label)

    def _deadline(self, context: CallContext) -> float:
        return deadline(context, self._service)


def deadline(context: CallContext, service: InferenceService) -> float:
    """When a call must be answered (``time.monotonic()``): the client's deadline, else the
    server's ``--rest_api_timeout_in_ms`` as for REST."""
    remaining = context.time_remaining()
    if remaining is None:
        remaining = service.settings.rest_api_timeout_in_ms / 1000.0
    return time.monotonic() + remaining


def _echo_spec(target: model_pb2.ModelSpec, servable: Servable, signature_name: str) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature_name


def _examples(request: Any) -> list[bytes]:
    """Serialized tf.Examples of an Input proto, the context merged into each."""
    kind = request.input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request.input.example_list.examples]
    if kind == "example_list_with_context":
        listed = request.input.example_list_with_context
        context = listed.context.SerializeToString()
        return [context + e.SerializeToString() for e in listed.examples]
    raise InvalidArgument("Input is empty")


class PredictionServicer(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, service: InferenceService) -> None:
        super().__init__(service)
        settings = service.settings
        self._limits = TensorLimits(settings.max_rows_per_request, settings.max_request_bytes)
        self._key_field = settings.prediction_key_field
        self._content = settings.enable_serialization_as_tensor_content

    @rpc("predict")
    async def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        servable = self._resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        spec = self._service.signature(servable, signature_name)
        names = [name for name in request.inputs if name in spec.inputs or name != self._key_field]
        if len(names) != len(spec.inputs) or any(name not in spec.inputs for name in names):
            spec.check_names(names)  # before anything is decoded
        tensors = protos_to_numpy(request.inputs, self._limits, spec.inputs)
        keys = None
        if self._key_field in tensors:  # the prediction store's key: not an input, unless named so
            field = self._key_field
            keys = tensors[field] if field in spec.inputs else tensors.pop(field)
        wanted = list(request.output_filter)
        unknown = [name for name in wanted if name not in spec.outputs]
        if unknown:
            raise InvalidArgument(f"output tensor alias not found in signature: {unknown[0]}")
        outputs = await self._service.predict(servable, signature_name, tensors, self._deadline(context),
                                              keys)
        response = predict_pb2.PredictResponse()
        _echo_spec(response.model_spec, servable, signature_name)
        for name in wanted or outputs:
            to_proto(outputs[name], into=response.outputs[name], content=self._content)
        return response

    @rpc("classify")
    async def Classify(self, request: classification_pb2.ClassificationRequest, context):
        response = classification_pb2.ClassificationResponse()
        await self._run_examples(CLASSIFY, request.model_spec, _examples(request),
                                 self._deadline(context), response.model_spec, response.result)
        return response

    @rpc("regress")
    async def Regress(self, request: regression_pb2.RegressionRequest, context):
        response = regression_pb2.RegressionResponse()
        await self._run_examples(REGRESS, request.model_spec, _examples(request),
                                 self._deadline(context), response.model_spec, response.result)
        return response

    @rpc("multi_inference")
    async def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context):
        if not request.tasks:
            raise InvalidArgument("Tasks are empty")
        specs = {(t.model_spec.name, t.model_spec.WhichOneof("version_choice"),
                  t.model_spec.version.value, t.model_spec.version_label) for t in request.tasks}
        if len(specs) > 1:
            raise InvalidArgument("All Tasks should have the same model name and version")
        examples = _examples(request)
        deadline = self._deadline(context)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result = response.results.add()
            if task.method_name == CLASSIFY:
                target = result.classification_result
            elif task.method_name == REGRESS:
                target = result.regression_result
            else:
                raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
            await self._run_examples(task.method_name, task.model_spec, examples, deadline,
                                     result.model_spec, target)
        return response

    async def _run_examples(self, method: str, spec: model_pb2.ModelSpec, examples: list[bytes],
                            deadline: float, echo: model_pb2.ModelSpec, result: Any) -> None:
        """Classify or regress ``examples`` and fill ``result`` (a Classification/RegressionResult)."""
        servable = self._resolve(spec)
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        _echo_spec(echo, servable, signature_name)
        if method == CLASSIFY:
            _fill_classifications(result, await self._service.classify(servable, signature_name, examples, deadline))
        else:
            _fill_regressions(result, await self._service.regress(servable, signature_name, examples, deadline))

    @rpc(None)
    async def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        fields = list(request.metadata_field)  # TF Serving's clients ask for signature_def alone
        if fields != [SIGNATURE_DEF] and not (RUNNER in fields and set(fields) <= {SIGNATURE_DEF, RUNNER}):
            raise InvalidArgument("Metadata field signature_def is required, and the only one supported")
        return self._service.model_metadata(self._resolve(request.model_spec), fields)


class ModelServicer(_Base, model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    @rpc(None)
    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        if spec.WhichOneof("version_choice") == "version_label":
            version = self._resolve(spec).version
        return self._service.model_status(spec.name, version)

    @rpc(None)
    async def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context):
        """Serve exactly the request's models, if the operator allows reloads and every base
        path lies within the model roots (``serving.model_roots``); otherwise PERMISSION_DENIED
        before anything is read, and nothing changes."""
        settings = self._service.settings
        if not settings.enable_reload_config_api:
            raise PermissionDenied("HandleReloadConfigRequest is switched off on this server "
                                   "(--enable_reload_config_api=false)")
        try:
            configs = models_from_server_config(request.config, "ReloadConfigRequest")
        except ConfigError as error:
            raise InvalidArgument(str(error)) from None
        ModelRoots.from_settings(settings).check(configs, "ReloadConfigRequest")
        await self._service.reload(configs)
        return model_management_pb2.ReloadConfigResponse()


def _fill_classifications(result: classification_pb2.ClassificationResult, checked: Classifications) -> None:
    scores = checked.scores.tolist() if checked.scores is not None else None
    for i, labels in enumerate(checked.label_rows()):
        entry = result.classifications.add()
        for j, label in enumerate(labels):
            item = entry.classes.add(label=label)
            if scores is not None:
                item.score = scores[i][j]


def _fill_regressions(result: regression_pb2.RegressionResult, values: np.ndarray) -> None:
    for value in values.tolist():
        result.regressions.add().value = value
