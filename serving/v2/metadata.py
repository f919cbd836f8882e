"""What the server and model metadata calls answer (``GET /v2``, ``GET /v2/models/{m}``,
gRPC ``ServerMetadata`` / ``ModelMetadata``), as dataclasses each adapter writes out.

A v2 model is one signature of a served model (the default one unless the caller names
another): its inputs and outputs with their v2 datatypes and shapes, -1 for a dimension of
any size, ``[-1]`` for a tensor of unknown rank (which any rank fits). The platform is
``tensorflow_savedmodel``, one of the names the spec lists. Versions are strings in v2.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from serving.runtime.signature import SignatureSpec, TensorSpec
from serving.v2.datatypes import type_name
from serving.version import version

PLATFORM = "tensorflow_savedmodel"
SERVER_NAME = "tf-gateway"
EXTENSIONS = ("binary_tensor_data", "model_repository")
"""The protocol extensions we implement, by the names Triton advertises them under."""


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    """A v2 datatype, or TensorFlow's name without ``DT_`` for a dtype v2 has none for."""
    shape: list[int]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


def model_metadata(name: str, versions: Iterable[int], spec: SignatureSpec) -> ModelMetadata:
    """The metadata of model ``name`` whose available ``versions`` serve signature ``spec``;
    tensors sorted by name (a signature's tensors have no order of their own)."""
    return ModelMetadata(name, [str(v) for v in sorted(versions)], PLATFORM,
                         [_tensor(spec.inputs[key]) for key in sorted(spec.inputs)],
                         [_tensor(spec.outputs[key]) for key in sorted(spec.outputs)])


@cache
def server_metadata() -> ServerMetadata:
    """Our name, installed version and extensions (read once, on the first call)."""
    return ServerMetadata(SERVER_NAME, version(), EXTENSIONS)


def _tensor(spec: TensorSpec) -> TensorMetadata:
    shape = [-1] if spec.shape is None else [-1 if size is None else size for size in spec.shape]
    return TensorMetadata(spec.name, type_name(spec), shape)
