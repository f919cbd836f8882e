"""The Open Inference Protocol's gRPC messages and service (package ``inference``), built at
import from the descriptor set checked in beside ``open_inference.proto``.

No generated ``_pb2`` modules: grpcio-tools 1.85 needs protobuf 7, above our pin, and its
code would fail protobuf 6.33's runtime version check. A private pool, not protobuf's default
one: tritonclient's ``grpc_service.proto`` (and kserve's ``grpc_predict_v2.proto``) register
the same ``inference.*`` names there under other file names, and the tests run the gateway and
tritonclient in one process, so a second registration would fail as a duplicate symbol. Ours
and theirs are the same messages on the wire (``tests/v2/test_protos.py``).

``SERVICE`` is what ``serving.grpc.servicers.add_to_server`` registers; nested messages are
attributes of their parents (``ModelInferRequest.InferInputTensor``).
"""
from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

DESCRIPTOR_SET = "open_inference.binpb"
"""``open_inference.proto`` compiled (``make v2-protos``), shipped as package data."""


def _load() -> FileDescriptor:
    pool = descriptor_pool.DescriptorPool()
    data = resources.files(__package__).joinpath(DESCRIPTOR_SET).read_bytes()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    return pool.FindFileByName("open_inference.proto")


FILE = _load()
"""The ``open_inference.proto`` descriptor, in a pool of its own."""

SERVICE: ServiceDescriptor = FILE.services_by_name["GRPCInferenceService"]
"""``inference.GRPCInferenceService``: the OIP's six methods and Triton's three repository ones."""


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(FILE.message_types_by_name[name])


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
InferParameter = _message("InferParameter")
InferTensorContents = _message("InferTensorContents")
ModelRepositoryParameter = _message("ModelRepositoryParameter")
RepositoryIndexRequest = _message("RepositoryIndexRequest")
RepositoryIndexResponse = _message("RepositoryIndexResponse")
RepositoryModelLoadRequest = _message("RepositoryModelLoadRequest")
RepositoryModelLoadResponse = _message("RepositoryModelLoadResponse")
RepositoryModelUnloadRequest = _message("RepositoryModelUnloadRequest")
RepositoryModelUnloadResponse = _message("RepositoryModelUnloadResponse")
