"""Hostile TensorProtos and raw bytes against a real gateway process over gRPC.

The gateway runs as its own process (``loadtests.support.processes.Server``) so its resident memory
(``/proc/PID/status`` VmRSS) is the server's alone, not the test's TensorFlow, gRPC client
and fuzz corpus too; and a crash (the OOM kill this guards against) shows as a dead process.
"""
from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from loadtests.support.processes import Server, free_port, rss_kb

PREDICT = "/tensorflow.serving.PredictionService/Predict"
DELIBERATE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
"""What a malformed request may be answered with (NOT_FOUND: a garbled model name)."""
FUZZ_CASES = 400
FUZZ_SECONDS = 120.0
RSS_SLACK_KB = 8 * 1024


def _request(tensor: tensor_pb2.TensorProto, name: str = "x", model: str = "half_plus_two"
             ) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(tensor)
    return request


def _shape(dims: list[int], unknown_rank: bool = False) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims], unknown_rank=unknown_rank)


def _known_hostile() -> list[tuple[str, predict_pb2.PredictRequest]]:
    D = types_pb2
    t = tensor_pb2.TensorProto
    return [
        ("2**31 strings, no values (the OOM)", _request(t(dtype=D.DT_STRING, tensor_shape=_shape([2**31])))),
        ("2**31 floats, no values", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([2**31])))),
        ("2**31 floats from one value", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([2**31]), float_val=[1]))),
        ("rows over the limit from one value", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([10**6, 1]),
                                                          float_val=[1]))),
        ("2**62 x 4 elements", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([2**62, 4]), float_val=[1]))),
        ("negative dim", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([-5]), float_val=[1]))),
        ("unknown rank", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([], True), float_val=[1]))),
        ("short content", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([3]), tensor_content=b"\0" * 4))),
        ("long content", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([1]), tensor_content=b"\0" * 40))),
        ("too few values", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([3]), float_val=[1, 2]))),
        ("wrong dtype", _request(t(dtype=D.DT_STRING, tensor_shape=_shape([2**31]), string_val=[b"a"]))),
        ("DT_INVALID", _request(t(dtype=D.DT_INVALID, tensor_shape=_shape([1]), float_val=[1]))),
        ("DT_RESOURCE", _request(t(dtype=D.DT_RESOURCE, tensor_shape=_shape([1])))),
        ("DT_VARIANT", _request(t(dtype=D.DT_VARIANT, tensor_shape=_shape([1])))),
        ("unknown input", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([2**31]), float_val=[1]), "nope")),
        ("unknown model", _request(t(dtype=D.DT_FLOAT, tensor_shape=_shape([1]), float_val=[1]), model="nope")),
    ]


def _many_inputs() -> list[tuple[str, predict_pb2.PredictRequest]]:
    """x and 100,000 inputs the model lacks, some with long names: the refusal must still fit
    the trailer gRPC clients accept. Not in the fuzz corpus: parsing its megabytes moves the
    allocator's high water, which a VmRSS reading would take for growth."""
    request = _request(tf.make_tensor_proto(np.array([1.0], np.float32)))
    for i in range(100_000):
        request.inputs[f"unknown_input_{i}" + "z" * (i % 2) * 500].dtype = types_pb2.DT_FLOAT
    return [("100000 unknown inputs beside x", request)]


def _random_tensor(rng: random.Random) -> tensor_pb2.TensorProto:
    dtype = rng.choice([*range(0, 34), 101, 107, 120, 999])
    dims = [rng.choice([-1, 0, 1, 2, 3, 7, 2**31, 2**40, 2**63 - 1, rng.randrange(-2**63, 2**63)])
            for _ in range(rng.choice([0, 1, 1, 2, 3, 5]))]
    tensor = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=_shape(dims, rng.random() < 0.05))
    kind = rng.randrange(4)
    if kind == 0:
        tensor.tensor_content = rng.randbytes(rng.choice([0, 1, 3, 4, 8, 12, 64]))
    elif kind == 1:
        count = rng.choice([0, 1, 2, 3, 7])
        field = rng.choice(["float_val", "double_val", "int_val", "int64_val", "half_val", "bool_val",
                            "uint32_val", "uint64_val", "scomplex_val", "dcomplex_val"])
        if field in ("float_val", "double_val", "scomplex_val", "dcomplex_val"):
            values = [rng.choice([0.0, 1.5, float("nan"), float("inf"), -1e300]) for _ in range(count)]
        elif field == "bool_val":
            values = [rng.random() < 0.5 for _ in range(count)]
        elif field in ("uint32_val", "uint64_val"):
            values = [rng.randrange(0, 2**32 if field == "uint32_val" else 2**64) for _ in range(count)]
        else:
            values = [rng.randrange(-2**31, 2**31) for _ in range(count)]
        getattr(tensor, field).extend(values)
    elif kind == 2:
        tensor.string_val.extend(rng.randbytes(rng.randrange(0, 9)) for _ in range(rng.choice([0, 1, 2, 5])))
    if rng.random() < 0.05:
        tensor.float8_val = rng.randbytes(rng.choice([1, 2, 3]))
    return tensor


def _random_request(rng: random.Random) -> bytes:
    request = _request(_random_tensor(rng), rng.choice(["x"] * 3 + ["y", ""]))
    if rng.random() < 0.1:
        request.inputs["x2"].CopyFrom(_random_tensor(rng))
    return request.SerializeToString()


def fuzz_corpus(known: list[tuple[str, bytes]], random_request: Callable[[random.Random], bytes],
                valid: list[bytes], seed: int, mutated_from: float = 0.6, random_from: float = 0.8
                ) -> list[tuple[str, bytes]]:
    """``known`` cases, then ``FUZZ_CASES`` in all: random requests (``random_request``), up to
    ``mutated_from`` of them; then ``valid`` requests with 1-5 random bytes changed, up to
    ``random_from``; then random bytes."""
    rng = random.Random(seed)
    cases = list(known)
    while len(cases) < FUZZ_CASES:
        roll = rng.random()
        if roll < mutated_from:
            cases.append(("random request", random_request(rng)))
        elif roll < random_from:
            mutated = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            cases.append(("mutated valid request", bytes(mutated)))
        else:
            cases.append(("random bytes", rng.randbytes(rng.randrange(0, 200))))
    return cases


@pytest.fixture
def gateway(tfserving_dir, tmp_path, grpc_server):
    port, rest_port = free_port(), free_port()
    argv = [sys.executable, "-m", "serving", f"--port={port}", f"--rest_api_port={rest_port}",
            f"--grpc_server={grpc_server}", "--model_name=half_plus_two",
            f"--model_base_path={tfserving_dir / 'saved_model_half_plus_two_cpu'}",
            "--max_rows_per_request=1000"]
    with Server("gateway", argv, tmp_path / "gateway.log", rest_port, ready_timeout=120) as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, channel


def _valid_request() -> predict_pb2.PredictRequest:
    return _request(tf.make_tensor_proto(np.array([2.0, 3.0, 4.0], np.float32)))


def _predict_ok(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    answer = stub.Predict(_valid_request(), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["y"]), [3.0, 3.5, 4.0])


@pytest.mark.slow
def test_known_hostile_requests_are_refused_by_name(gateway):
    server, channel = gateway
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for name, request in _known_hostile() + _many_inputs():
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request, timeout=30)
        code = raised.value.code()
        assert code in DELIBERATE, f"{name}: {code} {raised.value.details()}"
        expected = grpc.StatusCode.NOT_FOUND if name == "unknown model" else grpc.StatusCode.INVALID_ARGUMENT
        assert code == expected, f"{name}: {raised.value.details()}"
        assert "input" in raised.value.details().lower() or code == grpc.StatusCode.NOT_FOUND, name
    _predict_ok(channel)


def fuzz(server: Server, call: Callable[..., bytes], corpus: list[tuple[str, bytes]],
         valid_call: Callable[[], None], what: str) -> None:
    """Send every ``(name, body)`` of ``corpus`` to the raw method ``call`` of the gateway
    process ``server``, after warming its allocator and caches on both paths (``valid_call``
    20 times, the first 40 cases): each answer must be OK (a mutation that still parses and
    fits) or a deliberate code, most INVALID_ARGUMENT, the process alive, its VmRSS grown by
    under ``RSS_SLACK_KB``, and ``valid_call`` still answered. Prints the codes and VmRSS."""
    for _ in range(20):
        valid_call()
    for _, body in corpus[:40]:
        try:
            call(body, timeout=30)
        except grpc.RpcError:
            pass
    before = rss_kb(server.proc.pid)
    codes: dict[str, int] = {}
    bad: list[str] = []
    started = time.monotonic()
    for name, body in corpus:
        assert time.monotonic() - started < FUZZ_SECONDS, f"fuzzing took over {FUZZ_SECONDS} s"
        try:
            call(body, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            if code not in DELIBERATE:
                bad.append(f"{name}: {code.name} {error.details()}")
        codes[code.name] = codes.get(code.name, 0) + 1
    server.check_alive("after the fuzz requests")
    after = rss_kb(server.proc.pid)
    print(f"{what}: {len(corpus)} requests, codes {codes}, VmRSS {before} kB -> {after} kB")
    assert not bad, "\n".join(bad[:20])
    assert codes.get("INVALID_ARGUMENT", 0) > len(corpus) // 2
    assert after - before < RSS_SLACK_KB, f"VmRSS grew from {before} to {after} kB"
    valid_call()


@pytest.mark.slow
def test_fuzzed_requests_get_deliberate_codes_and_memory_stays_flat(gateway):
    server, channel = gateway
    raw = channel.unary_unary(PREDICT, request_serializer=None, response_deserializer=None)
    known = [(name, r.SerializeToString()) for name, r in _known_hostile()]
    corpus = fuzz_corpus(known, _random_request, [_valid_request().SerializeToString()], seed=12)
    fuzz(server, raw, corpus, lambda: _predict_ok(channel), "fuzz")
