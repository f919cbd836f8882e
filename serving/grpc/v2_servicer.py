"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``), translated
onto the core service as TF Serving's ``PredictionService`` is (``serving.grpc.servicers``):
the same ``rpc`` wrapper (ServingError -> status, request accounting), deadlines, limits,
prediction-store keys and batches, so a v2 and a TF Serving request for one signature merge.

``ModelInfer`` takes its inputs either all in ``raw_input_contents`` (one entry per input, in
``inputs`` order; what tritonclient always sends) or all in each input's typed ``contents``
(the datatype's own field, exactly one value per element: no broadcast, narrow integers
range-checked; FP16/BF16 have no typed field), never mixed. Every input's datatype and shape is
checked, and the request's limits applied to all of them together, before any is decoded
(``serving.v2``). It answers in ``raw_output_contents`` when the request used raw inputs or an
output is FP16/BF16 (KServe's rule; tritonclient reads outputs only from there), in typed
``contents`` otherwise. The model repository extension's methods are ``serving.core.repository``'s,
as over REST.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.core.service import InferenceService
from serving.errors import InvalidArgument, NotFound
from serving.grpc.contract import CallContext
from serving.grpc.servicers import deadline, rpc
from serving.runtime.savedmodel import DEFAULT_SIGNATURE
from serving.runtime.shapes import MAX_RANK, TensorLimits, check_total, what
from serving.runtime.signature import SignatureSpec, shape_text
from serving.runtime.tensors import packed_values
from serving.v2 import datatypes, metadata, protos, raw, shapes
from serving.v2 import request as v2
from serving.v2.datatypes import BYTES, Datatype
from serving.v2.repository import check_load_parameters, check_repository_name

_INFER = "infer"
"""The method ``InferenceService.track`` counts ModelInfer as."""


def _model_name(request: Any) -> str:
    return request.model_name


def _values(params: Mapping[str, Any]) -> dict[str, object]:
    """A ``map<string, InferParameter>`` as plain values (None: a parameter that sets none,
    which ``serving.v2.request`` refuses by name)."""
    values: dict[str, object] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(param, choice)
    return values


class _Input:
    """One input of a ModelInfer request once its datatype and shape passed (per request)."""

    __slots__ = ("tensor", "name", "datatype", "shape", "elements")

    def __init__(self, tensor: Any, name: str, datatype: Datatype, shape: tuple[int, ...], elements: int) -> None:
        self.tensor = tensor
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.elements = elements


class InferenceServicer:
    """inference.GRPCInferenceService: health, metadata, inference and the model repository."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service
        settings = service.settings
        self._limits = TensorLimits(settings.max_rows_per_request, settings.max_request_bytes)
        self._key_field = settings.prediction_key_field

    @rpc(None)
    async def ServerLive(self, request: Any, context: CallContext) -> Any:
        """Live while the process answers, draining too (as ``/healthz``)."""
        return protos.ServerLiveResponse(live=True)

    @rpc(None)
    async def ServerReady(self, request: Any, context: CallContext) -> Any:
        return protos.ServerReadyResponse(ready=self._service.ready())

    @rpc(None)
    async def ModelReady(self, request: Any, context: CallContext) -> Any:
        """``ready=false`` with OK for a model or label we do not know (as Triton)."""
        version, label = v2.version_choice(request.version)
        try:
            ready = self._service.model_ready(request.name, version, label)
        except (NotFound, InvalidArgument):
            ready = False
        return protos.ModelReadyResponse(ready=ready)

    @rpc(None)
    async def ServerMetadata(self, request: Any, context: CallContext) -> Any:
        server = metadata.server_metadata()
        return protos.ServerMetadataResponse(name=server.name, version=server.version,
                                             extensions=server.extensions)

    @rpc(None)
    async def ModelMetadata(self, request: Any, context: CallContext) -> Any:
        """The default signature's tensors (the message has no parameter for another)."""
        servable = self._service.resolve(request.name, *v2.version_choice(request.version))
        spec = self._service.signature(servable, DEFAULT_SIGNATURE)
        model = metadata.model_metadata(servable.name, self._service.versions(servable.name), spec)
        tensor = protos.ModelMetadataResponse.TensorMetadata
        return protos.ModelMetadataResponse(
            name=model.name, versions=model.versions, platform=model.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs])

    @rpc(_INFER, _model_name)
    async def ModelInfer(self, request: Any, context: CallContext) -> Any:
        params = v2.parameters(_values(request.parameters))
        servable = self._service.resolve(request.model_name, *v2.version_choice(request.model_version))
        signature_name = params.signature_name or DEFAULT_SIGNATURE
        spec = self._service.signature(servable, signature_name)
        tensors = decode_inputs(request, spec, self._limits, self._key_field)
        wanted = [v2.wanted(o.name, _values(o.parameters)) for o in request.outputs]
        selected = v2.select_outputs(spec, wanted, servable.name)
        contents = request.raw_input_contents
        keys = None
        if self._key_field in tensors:  # the prediction store's key: not an input, unless named so
            field = self._key_field
            keys = tensors[field] if field in spec.inputs else tensors.pop(field)
        due = deadline(context, self._service)
        if params.timeout_us is not None:
            due = min(due, time.monotonic() + params.timeout_us / 1e6)
        outputs = await self._service.predict(servable, signature_name, tensors, due, keys, api="ModelInfer")
        response = protos.ModelInferResponse(model_name=servable.name, model_version=str(servable.version),
                                             id=request.id)
        answer_raw = bool(contents) or any(o.datatype.field is None for o in selected)
        for output in selected:
            array = outputs[output.name]
            tensor = response.outputs.add(name=output.name, datatype=output.datatype.name, shape=array.shape)
            if answer_raw:
                response.raw_output_contents.append(raw.encode(array, output.datatype))
            else:
                _fill(tensor.contents, array, output.datatype)
        return response

    @rpc(None)
    async def RepositoryIndex(self, request: Any, context: CallContext) -> Any:
        """Every configured model version and unloaded model (``ready``: READY ones only)."""
        check_repository_name(request.repository_name)
        entry = protos.RepositoryIndexResponse.ModelIndex
        return protos.RepositoryIndexResponse(models=[
            entry(name=e.name, version=e.version or "", state=e.state, reason=e.reason)
            for e in self._service.repository.index(request.ready)])

    @rpc(None)
    async def RepositoryModelLoad(self, request: Any, context: CallContext) -> Any:
        """Serve the model (again) from its folder under the model roots (``serving.core.repository``)."""
        check_repository_name(request.repository_name)
        check_load_parameters(request.parameters)
        await self._service.repository.load(request.model_name)
        return protos.RepositoryModelLoadResponse()

    @rpc(None)
    async def RepositoryModelUnload(self, request: Any, context: CallContext) -> Any:
        """Stop serving the model (``unload_dependents``: nothing depends on a model here)."""
        check_repository_name(request.repository_name)
        await self._service.repository.unload(request.model_name)
        return protos.RepositoryModelUnloadResponse()


def decode_inputs(request: Any, spec: SignatureSpec, limits: TensorLimits,
                  key_field: str | None) -> dict[str, np.ndarray]:
    """A ModelInferRequest's tensors, from ``raw_input_contents`` or each input's typed
    ``contents``: every input checked (``_checked_inputs``) before any is decoded."""
    inputs = _checked_inputs(request, spec, limits, key_field)
    contents = request.raw_input_contents
    if contents:
        return {i.name: raw.decode_checked(data, i.datatype, i.shape, i.elements, i.name)
                for i, data in zip(inputs, contents)}
    return {i.name: _typed(i) for i in inputs}


def _checked_inputs(request: Any, spec: SignatureSpec, limits: TensorLimits, key_field: str | None) -> list[_Input]:
    """Every input's name, datatype and shape checked, and the limits applied to them
    together, before any data is looked at."""
    tensors = list(request.inputs)  # once: each pass over the repeated field makes new wrappers
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for name in names:  # one pass: a hostile request may list 100,000 inputs
            if name in seen:
                raise InvalidArgument(f"{what('Input', name)} is given twice")
            seen.add(name)
    given = [name for name in names if name in spec.inputs or name != key_field]
    if len(given) != len(spec.inputs) or any(name not in spec.inputs for name in given):
        spec.check_names(given)
    contents = request.raw_input_contents
    if contents:
        if len(contents) != len(tensors):
            raise InvalidArgument(f"raw_input_contents has {len(contents)} entries for {len(tensors)} "
                                  "inputs: one per input, in the order of inputs")
        typed = next((t.name for t in tensors if t.HasField("contents")), None)
        if typed is not None:
            raise InvalidArgument(f"{what('Input', typed)} sets contents while the request uses "
                                  "raw_input_contents: send every input one way")
    checked = []
    for tensor, name in zip(tensors, names):
        if tensor.parameters:
            v2.binary_data_size(_values(tensor.parameters), name)  # refuses the extensions we lack
        tensor_spec = spec.inputs.get(name)
        datatype = (datatypes.check(tensor.datatype, tensor_spec) if tensor_spec is not None
                    else datatypes.by_name(tensor.datatype, name))
        dims = tensor.shape  # as a list (one C copy) unless check is to refuse its rank unbuilt
        shape, count = shapes.check(dims[:] if len(dims) <= MAX_RANK else dims, datatype, name, limits, tensor_spec)
        checked.append(_Input(tensor, name, datatype, shape, count))
    if len(checked) > 1:
        check_total(sum(i.elements * i.datatype.dtype.itemsize for i in checked), limits)
    return checked


def _typed(item: _Input) -> np.ndarray:
    """An input's values from its typed ``contents``: the datatype's field only, exactly one
    value per element."""
    datatype, name = item.datatype, item.name
    field = datatype.field
    if field is None:
        raise InvalidArgument(f"{what('Input', name)}: {datatype.name} has no typed contents; "
                              "send it in raw_input_contents")
    contents = item.tensor.contents
    other = next((f.name for f, _ in contents.ListFields() if f.name != field), None)
    if other is not None:
        raise InvalidArgument(f"{what('Input', name)} of {datatype.name} sets contents.{other}; "
                              f"its values go in contents.{field}")
    values = getattr(contents, field)
    count = len(values)
    if count != item.elements:
        raise InvalidArgument(f"{what('Input', name)} has {count} values in contents.{field}; shape "
                              f"{shape_text(item.shape)} needs {item.elements}")
    dtype = datatype.dtype
    if datatype is BYTES:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    elif dtype.kind in "iu" and dtype.itemsize < 4:  # 8 and 16 bits travel in the 32-bit field
        wide = np.fromiter(values, dtype=np.int64, count=count)
        info = np.iinfo(dtype)
        if count and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidArgument(f"{what('Input', name)}: contents.{field} holds a value outside "
                                  f"{datatype.name}'s range [{info.min}, {info.max}]")
        array = wide.astype(dtype)
    else:
        array = None
        if dtype.kind == "f":  # bit for bit (a Python float would quiet a signalling NaN), and fast
            array = packed_values(contents, contents.DESCRIPTOR.fields_by_name[field].number, datatype.wire, count)
        if array is None:
            array = np.fromiter(values, dtype=dtype, count=count)
    return array.reshape(item.shape)


def _fill(contents: Any, array: np.ndarray, datatype: Datatype) -> None:
    """An output's values into its datatype's typed ``contents`` field."""
    assert datatype.field is not None  # FP16/BF16 answers are raw
    values = array.ravel().tolist()
    if datatype is BYTES:
        values = [v.encode() if isinstance(v, str) else v for v in values]
    getattr(contents, datatype.field).extend(values)
