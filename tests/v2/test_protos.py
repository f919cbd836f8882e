"""serving/v2/protos.py: the checked-in descriptor set is the checked-in .proto compiled, its
messages are tritonclient's on the wire, and they live in a pool of their own."""
from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator

import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pb2 import FieldDescriptorProto
from tritonclient.grpc import service_pb2 as triton

from serving.v2 import protos
from tests.conftest import REPO

PROTO = REPO / "serving" / "v2" / "open_inference.proto"
OIP_ONLY = {("inference.ModelMetadataResponse", "properties")}
"""Fields of the OIP proto that Triton's grpc_service.proto lacks (it has no model properties)."""
OIP_ONLY_MESSAGES = {"inference.ModelMetadataResponse.PropertiesEntry"}
"""The map entry message that ``properties`` brings."""


def messages(descriptors: Iterable[Descriptor]) -> Iterator[Descriptor]:
    """Every message, nested ones included, map entries too."""
    for message in descriptors:
        yield message
        yield from messages(message.nested_types)


def fields(message: Descriptor) -> dict[str, tuple]:
    """Name -> what decides its wire format and meaning: number, type, repeated, message type, oneof."""
    return {f.name: (f.number, f.type, f.is_repeated, f.message_type and f.message_type.full_name,
                     f.containing_oneof and f.containing_oneof.name) for f in message.fields}


def proto_type(field: FieldDescriptor) -> str:
    """The field's type as the .proto spells it, without spaces: `repeated int64`, `map<string,X>`."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (proto_type(field.message_type.fields_by_name[n]) for n in ("key", "value"))
        return f"map<{key},{value}>"
    name = field.message_type.name if field.message_type else FieldDescriptorProto.Type.Name(field.type)[5:].lower()
    return f"repeated{name}" if field.is_repeated else name


DECLARATION = re.compile(r"""(?P<block>message|oneof|service)\s+(?P<name>\w+)\s*\{
    | rpc\s+(?P<rpc>\w+)\s*\(\s*(?P<input>\w+)\s*\)\s*returns\s*\(\s*(?P<output>\w+)\s*\)\s*\{\s*\}
    | (?P<type>(?:repeated\s+)?(?:map<[^>]*>|[\w.]+))\s+(?P<field>\w+)\s*=\s*(?P<number>\d+)\s*;
    | (?P<close>\})""", re.VERBOSE)


def declared(text: str) -> tuple[set[tuple], set[tuple]]:
    """(message path, field, number, type) of each field and (rpc, input, output) of each method
    written in the .proto: enough of its grammar for this file (no enums, options or imports)."""
    blocks: list[tuple[str, str]] = []
    found_fields, found_rpcs = set(), set()
    for m in DECLARATION.finditer(re.sub(r"//[^\n]*", "", text)):
        if m["block"]:
            blocks.append((m["block"], m["name"]))
        elif m["close"]:
            blocks.pop()
        elif m["rpc"]:
            found_rpcs.add((m["rpc"], m["input"], m["output"]))
        else:
            path = ".".join(name for kind, name in blocks if kind == "message")
            found_fields.add((path, m["field"], int(m["number"]), re.sub(r"\s", "", m["type"])))
    assert blocks == []
    return found_fields, found_rpcs


def test_the_descriptor_set_is_the_proto_compiled():
    """Fails when the .proto was edited without `make v2-protos` (which needs grpcio-tools, absent here)."""
    compiled = {(m.full_name.removeprefix("inference."), f.name, f.number, proto_type(f))
                for m in messages(protos.FILE.message_types_by_name.values()) if not m.GetOptions().map_entry
                for f in m.fields}
    methods = {(m.name, m.input_type.name, m.output_type.name) for m in protos.SERVICE.methods}
    assert declared(PROTO.read_text()) == (compiled, methods)
    assert (protos.FILE.package, list(protos.FILE.dependencies)) == ("inference", [])


def test_the_service_is_the_oips_and_the_repository_extensions():
    assert protos.SERVICE.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in protos.SERVICE.methods] == [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"]


def test_every_message_has_tritonclients_fields():
    ours = [m for m in messages(protos.FILE.message_types_by_name.values()) if m.full_name not in OIP_ONLY_MESSAGES]
    assert len(ours) == 33  # 21 top-level, 5 nested tensor/index messages, 7 parameter maps' entries
    for message in ours:
        theirs = triton.DESCRIPTOR.pool.FindMessageTypeByName(message.full_name)
        mine = {name: f for name, f in fields(message).items() if (message.full_name, name) not in OIP_ONLY}
        assert mine == fields(theirs), message.full_name


def test_every_method_has_tritonclients_types():
    theirs = triton.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in protos.SERVICE.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            other.input_type.full_name, other.output_type.full_name), method.name
        assert not (method.client_streaming or method.server_streaming or other.server_streaming)


def test_every_message_of_the_file_is_exported_under_its_name():
    for name, descriptor in protos.FILE.message_types_by_name.items():
        assert getattr(protos, name).DESCRIPTOR is descriptor
    nested = protos.ModelInferRequest.InferInputTensor
    assert nested.DESCRIPTOR.full_name == "inference.ModelInferRequest.InferInputTensor"


def test_the_pool_is_private_so_tritonclients_protos_load_beside_ours():
    assert protos.FILE.pool is not descriptor_pool.Default()
    assert triton.DESCRIPTOR.pool is descriptor_pool.Default()
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindFileByName(protos.FILE.name)
    assert protos.ModelInferRequest is not triton.ModelInferRequest


def _infer_request():
    tensor = triton.ModelInferRequest.InferInputTensor
    return triton.ModelInferRequest(
        model_name="half_plus_two", model_version="2", id="req-1",
        parameters={"binary_data_output": triton.InferParameter(bool_param=True),
                    "timeout": triton.InferParameter(int64_param=1_500_000),
                    "priority": triton.InferParameter(uint64_param=2**64 - 1),
                    "signature_name": triton.InferParameter(string_param="serving_default"),
                    "scale": triton.InferParameter(double_param=0.5)},
        inputs=[tensor(name="x", datatype="FP32", shape=[2, 1]),
                tensor(name="words", datatype="BYTES", shape=[1],
                       parameters={"p": triton.InferParameter(bool_param=False)},
                       contents=triton.InferTensorContents(bytes_contents=[b"\x00\xff"]))],
        outputs=[triton.ModelInferRequest.InferRequestedOutputTensor(
            name="y", parameters={"binary_data": triton.InferParameter(bool_param=True)})],
        raw_input_contents=[b"\x00\x00\x80?\x00\x00\x00@"])


def _infer_response():
    output = triton.ModelInferResponse.InferOutputTensor
    return triton.ModelInferResponse(
        model_name="m", model_version="1", id="req-1",
        outputs=[output(name="y", datatype="INT64", shape=[2], contents=triton.InferTensorContents(
            int64_contents=[-(2**63), 2**63 - 1], fp32_contents=[1.5], uint_contents=[2**32 - 1]))],
        raw_output_contents=[b"", b"\x01"])


def _metadata():
    tensor = triton.ModelMetadataResponse.TensorMetadata
    return triton.ModelMetadataResponse(name="m", versions=["1", "2"], platform="tensorflow_savedmodel",
                                        inputs=[tensor(name="x", datatype="FP32", shape=[-1, 3])], outputs=[])


def _load():
    return triton.RepositoryModelLoadRequest(
        model_name="m", parameters={"config": triton.ModelRepositoryParameter(string_param="{}"),
                                    "file:1/model.savedmodel": triton.ModelRepositoryParameter(bytes_param=b"\x00"),
                                    "n": triton.ModelRepositoryParameter(int64_param=-1)})


def _index():
    entry = triton.RepositoryIndexResponse.ModelIndex
    return triton.RepositoryIndexResponse(models=[entry(name="m", version="1", state="READY", reason="")])


@pytest.mark.parametrize("build", [_infer_request, _infer_response, _metadata, _load, _index,
                                   lambda: triton.ServerMetadataResponse(name="n", version="1", extensions=["a"]),
                                   lambda: triton.ModelReadyRequest(name="m", version="3")],
                         ids=["infer-request", "infer-response", "metadata", "load", "index", "server", "ready"])
def test_a_message_round_trips_through_tritonclients(build):
    """tritonclient's bytes parse with ours into the same field values, and ours back into the same message."""
    original = build()
    ours = getattr(protos, original.DESCRIPTOR.name).FromString(original.SerializeToString())
    assert json_format.MessageToDict(ours) == json_format.MessageToDict(original) != {}
    assert type(original).FromString(ours.SerializeToString()) == original


def test_the_descriptor_set_ships_with_the_package():
    """`pip install .` (the images) copies package data only when pyproject lists it."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert protos.DESCRIPTOR_SET in package_data["serving.v2"]
