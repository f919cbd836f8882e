"""Hostile v2 ModelInfer requests (``raw_input_contents`` and typed ``contents``) against a real
gateway process over gRPC, on each gRPC server: every one is refused by name with a deliberate
code, nothing is allocated for a size the data does not back, and the process's resident
memory stays flat (the method and limits of ``tests/grpc/test_hostile_tensors.py``, whose
helpers this shares)."""
from __future__ import annotations

import random
import sys

import grpc
import numpy as np
import pytest

from loadtests.support.processes import Server, free_port
from serving.v2 import protos
from tests.grpc.test_hostile_tensors import fuzz, fuzz_corpus
from tests.v2.models import hostile_models_config

INFER = "/inference.GRPCInferenceService/ModelInfer"
Tensor = protos.ModelInferRequest.InferInputTensor
Contents = protos.InferTensorContents
FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
          "fp32_contents", "fp64_contents", "bytes_contents")
DATATYPES = ("BOOL", "UINT8", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "BF16", "FP32",
             "FP64", "BYTES", "", "FLOAT", "fp32", "X" * 300)


def _request(model: str, *inputs, raw=(), **fields) -> protos.ModelInferRequest:
    return protos.ModelInferRequest(model_name=model, inputs=list(inputs), raw_input_contents=list(raw), **fields)


def _x(shape, datatype="FP32", **fields) -> Tensor:
    return Tensor(name="x", datatype=datatype, shape=shape, **fields)


def _text(shape, **fields) -> Tensor:
    return Tensor(name="text", datatype="BYTES", shape=shape, **fields)


def _prefixed(*strings: bytes) -> bytes:
    return b"".join(len(s).to_bytes(4, "little") + s for s in strings)


def _known_hostile() -> list[tuple[str, protos.ModelInferRequest]]:
    four = b"\0" * 4
    return [
        ("1000 BYTES elements in 4 bytes", _request("text", _text([1000]), raw=[four])),
        ("BYTES length prefix 2**32-1", _request("text", _text([1]), raw=[b"\xff\xff\xff\xff" + b"a" * 8])),
        ("BYTES prefix past the end", _request("text", _text([2]), raw=[_prefixed(b"ab") + b"\x05\0\0\0ab"])),
        ("BYTES bytes left over", _request("text", _text([1]), raw=[_prefixed(b"ab") + b"zz"])),
        ("BYTES prefix cut short", _request("text", _text([2]), raw=[_prefixed(b"ab") + b"\x01\0"])),
        ("2**31 rows from 4 bytes", _request("half_plus_two", _x([2**31, 1]), raw=[four])),
        ("2**40 x 1000 floats", _request("half_plus_two", _x([1000, 2**40]), raw=[four])),
        ("2**62 x 4 elements", _request("half_plus_two", _x([2**62, 4]), raw=[four])),
        ("negative dim", _request("half_plus_two", _x([-3, 1]), raw=[four])),
        ("65 dimensions", _request("half_plus_two", _x([1] * 65), raw=[four])),
        ("100000 dimensions", _request("half_plus_two", _x([1] * 100_000), raw=[four])),
        ("raw size off by one", _request("half_plus_two", _x([1, 1]), raw=[four + b"\0"])),
        ("raw entries over inputs", _request("half_plus_two", _x([1, 1]), raw=[four, four])),
        ("typed and raw mixed", _request("half_plus_two", _x([1, 1], contents=Contents(fp32_contents=[1])),
                                         raw=[four])),
        ("2**31 typed floats from one value", _request("half_plus_two", _x([2**31], contents=Contents(
            fp32_contents=[1])))),
        ("typed value count short", _request("half_plus_two", _x([3, 1], contents=Contents(fp32_contents=[1, 2])))),
        ("typed value in another field", _request("half_plus_two", _x([1, 1], contents=Contents(
            fp32_contents=[1], int64_contents=[1])))),
        ("typed FP16", _request("half_plus_two", _x([1, 1], "FP16", contents=Contents(fp32_contents=[1])))),
        ("long garbage datatype", _request("half_plus_two", _x([1, 1], "Z" * 10_000), raw=[four])),
        ("duplicate inputs", _request("half_plus_two", _x([1, 1]), _x([1, 1]), raw=[four, four])),
        ("parameter without a value", _request("half_plus_two", _x([1, 1]), raw=[four],
                                               parameters={"p": protos.InferParameter()})),
        ("shared memory input", _request("half_plus_two", _x([1, 1], parameters={
            "shared_memory_region": protos.InferParameter(string_param="r")}), raw=[four])),
        ("unknown model", _request("nope", _x([1, 1]), raw=[four])),
    ]


def _many_inputs() -> list[tuple[str, protos.ModelInferRequest]]:
    """Requests of 100,000 inputs: refused in one pass, the refusal short enough for a gRPC
    trailer. Not in the fuzz corpus: parsing their megabytes moves the allocator's high water,
    which a VmRSS reading would take for growth."""
    return [
        ("100000 inputs, the last a duplicate", _request("half_plus_two", *[
            Tensor(name=f"in{i}", datatype="FP32", shape=[1]) for i in range(100_000)], _x([1]), _x([1]))),
        ("100000 unknown inputs beside x", _request("half_plus_two", _x([1]), *[
            Tensor(name=f"unknown_input_{i}" + "z" * (i % 2) * 500, datatype="FP32", shape=[1])
            for i in range(100_000)])),
    ]


def _random_tensor(rng: random.Random) -> tuple[Tensor, bytes | None]:
    dims = [rng.choice([-1, 0, 1, 2, 3, 7, 2**31, 2**40, 2**63 - 1, rng.randrange(-2**63, 2**63)])
            for _ in range(rng.choice([0, 1, 1, 2, 3, 5]))]
    tensor = Tensor(name=rng.choice(["x", "x", "text", "text", "", "y"]), datatype=rng.choice(DATATYPES), shape=dims)
    roll = rng.random()
    if roll < 0.4:
        return tensor, rng.randbytes(rng.choice([0, 1, 3, 4, 8, 12, 64]))
    if roll < 0.6:
        strings = [rng.randbytes(rng.randrange(0, 6)) for _ in range(rng.choice([0, 1, 2, 5]))]
        data = bytearray(_prefixed(*strings))
        if data and rng.random() < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        return tensor, bytes(data)
    field = rng.choice(FIELDS)
    count = rng.choice([0, 1, 2, 3, 7])
    if field == "bytes_contents":
        values = [rng.randbytes(rng.randrange(0, 9)) for _ in range(count)]
    elif field in ("fp32_contents", "fp64_contents"):
        values = [rng.choice([0.0, 1.5, float("nan"), float("inf"), -1e300 if field == "fp64_contents" else -1e30])
                  for _ in range(count)]
    elif field == "bool_contents":
        values = [rng.random() < 0.5 for _ in range(count)]
    elif field.startswith("uint"):
        values = [rng.randrange(0, 2**32 if field == "uint_contents" else 2**64) for _ in range(count)]
    else:
        values = [rng.randrange(-2**31, 2**31) for _ in range(count)]
    getattr(tensor.contents, field).extend(values)
    return tensor, None


def _random_request(rng: random.Random) -> bytes:
    request = protos.ModelInferRequest(model_name=rng.choice(["half_plus_two", "half_plus_two", "text", "text", "n"]))
    raws = []
    for _ in range(rng.choice([1, 1, 1, 2])):
        tensor, data = _random_tensor(rng)
        request.inputs.append(tensor)
        if data is not None:
            raws.append(data)
    if raws and rng.random() < 0.9:
        request.raw_input_contents.extend(raws)
    if rng.random() < 0.1:
        request.outputs.add(name=rng.choice(["y", "upper", "nope"]))
    return request.SerializeToString()


def _valid_requests() -> list[protos.ModelInferRequest]:
    return [_request("half_plus_two", _x([3, 1]), raw=[np.array([2, 3, 4], "<f4").tobytes()]),
            _request("text", _text([2]), raw=[_prefixed(b"ab", "é".encode())]),
            _request("half_plus_two", _x([2, 1], contents=Contents(fp32_contents=[1, 2])))]


@pytest.fixture
def gateway(tmp_path, grpc_server, tfserving_dir, models_dir):
    config = hostile_models_config(tmp_path, tfserving_dir)
    port, rest_port = free_port(), free_port()
    argv = [sys.executable, "-m", "serving", f"--port={port}", f"--rest_api_port={rest_port}",
            f"--grpc_server={grpc_server}", f"--model_config_file={config}", "--max_rows_per_request=1000"]
    with Server("gateway", argv, tmp_path / "gateway.log", rest_port, ready_timeout=120) as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)


def _infer_ok(infer) -> None:
    for request in _valid_requests():
        answer = protos.ModelInferResponse.FromString(infer(request.SerializeToString(), timeout=30))
        assert answer.outputs, request.model_name
    first = protos.ModelInferResponse.FromString(infer(_valid_requests()[0].SerializeToString(), timeout=30))
    np.testing.assert_array_equal(np.frombuffer(first.raw_output_contents[0], "<f4"), [3.0, 3.5, 4.0])


@pytest.mark.slow
def test_known_hostile_v2_requests_are_refused_by_name(gateway):
    server, infer = gateway
    for name, request in _known_hostile() + _many_inputs():
        with pytest.raises(grpc.RpcError) as raised:
            infer(request.SerializeToString(), timeout=30)
        code, details = raised.value.code(), raised.value.details()
        expected = grpc.StatusCode.NOT_FOUND if name == "unknown model" else grpc.StatusCode.INVALID_ARGUMENT
        assert code == expected, f"{name}: {code} {details}"
        assert len(details) < 1000, f"{name}: {len(details)} characters of details"
    server.check_alive("after the hostile requests")
    _infer_ok(infer)


@pytest.mark.slow
def test_fuzzed_v2_requests_get_deliberate_codes_and_memory_stays_flat(gateway):
    server, infer = gateway
    known = [(name, r.SerializeToString()) for name, r in _known_hostile()]
    corpus = fuzz_corpus(known, _random_request, [r.SerializeToString() for r in _valid_requests()], seed=24,
                         random_from=0.85)
    fuzz(server, infer, corpus, lambda: _infer_ok(infer), "v2 gRPC fuzz")
