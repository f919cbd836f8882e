"""Microseconds per call of the REST codec's hot path: ``parse_json`` + ``decode_predict``
+ ``encode_predict``, on natality :predict bodies of 1, 64 and 512 rows, row
(``instances``) and columnar (``inputs``) form; each stage timed alone, then the three together.

The codec alone: no HTTP, no batcher, no model (the outputs are the formula's answers as
float32, shaped like the model's ``weight_pounds``). The best of ``--repeat`` runs is
reported, each run long enough (``timeit``'s autorange) to swamp the timer. Imports no
TensorFlow unless ``--paths`` asks for the gRPC ones.

``--paths``: instead, the input decoding of one request on each path that reaches the same
tensors, the message already parsed (its parse timed beside it): TF Serving's REST columnar
form (``codec.decode_predict``) and gRPC Predict (``protos_to_numpy``), and the Open Inference
Protocol's REST JSON ``data``, REST binary extension, gRPC ``raw_input_contents`` and gRPC
typed ``contents`` (``serving.rest.v2.decode_inputs``, ``serving.grpc.v2_servicer.decode_inputs``),
all checked against the server's default limits.

    python -m loadtests.benchmarks.bench_codec [--repeat 5] [--paths] [--rows 1,64]
"""
from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from loadtests.support.payloads import instances
from serving.examples import natality
from serving.rest import codec
from serving.runtime.shapes import TensorLimits
from serving.runtime.signature import PREDICT, STRING, SignatureSpec, TensorSpec
from serving.settings import Settings

ROWS = (1, 64, 512)
FORMS = ("row", "columnar")

_DTYPES = {"is_male": (STRING, "DT_STRING"), "mother_age": (np.dtype(np.float32), "DT_FLOAT"),
           "plurality": (STRING, "DT_STRING"), "gestation_weeks": (np.dtype(np.float32), "DT_FLOAT")}
SIGNATURE = SignatureSpec(
    natality.SIGNATURE, PREDICT,
    {name: TensorSpec(name, _DTYPES[name][0], (None,), _DTYPES[name][1]) for name in natality.INPUTS},
    {natality.OUTPUT: TensorSpec(natality.OUTPUT, np.dtype(np.float32), (None,), "DT_FLOAT")},
    natality.INPUTS,
)
"""The natality model's serving signature, as ``serving.runtime.savedmodel`` reads it."""


def body(rows: int, form: str) -> tuple[bytes, dict[str, np.ndarray]]:
    """A :predict body of ``rows`` natality rows in ``form``, and the model's outputs for it."""
    data = instances("natality", rows, seed=5)
    if form == "row":
        doc = {"instances": data}
    else:
        doc = {"inputs": {name: [row[name] for row in data] for name in natality.INPUTS}}
    weights = natality.expected_weight(*([row[name] for row in data] for name in natality.INPUTS))
    return orjson.dumps(doc), {natality.OUTPUT: np.asarray(weights, dtype=np.float32)}


def hot_path(raw: bytes, outputs: dict[str, np.ndarray]) -> Callable[[], bytes]:
    """What the REST front does to a :predict request around the model call."""

    def call() -> bytes:
        _, form = codec.decode_predict(codec.parse_json(raw), SIGNATURE)
        return codec.encode_predict(outputs, form)

    return call


def check(raw: bytes, outputs: dict[str, np.ndarray], rows: int, form: str) -> None:
    """Refuse to time a call that does not do the whole job."""
    tensors, got_form = codec.decode_predict(codec.parse_json(raw), SIGNATURE)
    got_rows = SIGNATURE.validate(tensors)
    if (got_form, got_rows) != (form, rows):
        raise RuntimeError(f"{rows}-row {form} body decoded as {got_rows} {got_form} rows")
    answer = orjson.loads(hot_path(raw, outputs)())
    key = "predictions" if form == "row" else "outputs"
    if len(answer[key]) != rows:
        raise RuntimeError(f"{rows}-row {form} body: {len(answer[key])} answers")


def stages(raw: bytes, outputs: dict[str, np.ndarray]) -> dict[str, Callable[[], object]]:
    """Each stage of ``hot_path`` alone (decode from an already parsed body), then all three."""
    doc = codec.parse_json(raw)
    form = "row" if "instances" in doc else "columnar"
    return {"parse": lambda: codec.parse_json(raw),
            "decode": lambda: codec.decode_predict(doc, SIGNATURE),
            "encode": lambda: codec.encode_predict(outputs, form),
            "total": hot_path(raw, outputs)}


def seconds_per_call(call: Callable[[], object], repeat: int) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


PATHS = ("tfs-rest", "tfs-grpc", "v2-json", "v2-binary", "v2-grpc-raw", "v2-grpc-typed")


def _limits() -> TensorLimits:
    settings = Settings()
    return TensorLimits(settings.max_rows_per_request, settings.max_request_bytes)


def decoders(rows: int) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """Per path, (parse the message, decode its inputs from the parsed message), for a request
    of ``rows`` natality rows; each decode checked to give the same tensors first."""
    from tensorflow_serving.apis import predict_pb2

    from loadtests.support.payloads import columns, v2_infer
    from serving.grpc import v2_servicer
    from serving.rest import v2 as rest_v2
    from serving.runtime.tensors import protos_to_numpy, to_proto
    from serving.v2 import protos, raw
    from serving.v2.datatypes import for_dtype

    limits, data = _limits(), instances("natality", rows, seed=5)
    arrays = {name: a if a.dtype != object else np.array([v.encode() for v in a.tolist()], dtype=object)
              for name, a in columns("natality", data).items()}  # as the decoders give strings: bytes
    tfs_body, _ = body(rows, "columnar")
    predict = predict_pb2.PredictRequest(inputs={name: to_proto(a) for name, a in arrays.items()})
    infer_raw, infer_typed = protos.ModelInferRequest(), protos.ModelInferRequest()
    for name, array in arrays.items():
        datatype = for_dtype(array.dtype)
        for message in (infer_raw, infer_typed):
            tensor = message.inputs.add(name=name, datatype=datatype.name, shape=array.shape)
        getattr(tensor.contents, datatype.field).extend(array.tolist())
        infer_raw.raw_input_contents.append(raw.encode(array, datatype))
    json_body, _ = v2_infer("natality", data, binary=False)
    binary_body, headers = v2_infer("natality", data, binary=True)
    head = int(headers["Inference-Header-Content-Length"])

    def rest(raw_body: bytes, split: int) -> tuple[Callable[[], object], Callable[[], object]]:
        doc, tail = codec.parse_json(raw_body[:split]), memoryview(raw_body)[split:]
        return (lambda: codec.parse_json(raw_body[:split]),
                lambda: rest_v2.decode_inputs(doc["inputs"], tail, SIGNATURE, limits, None, "natality"))

    def grpc(message_type: Any, wire: bytes, decode: Callable[[Any], object]
             ) -> tuple[Callable[[], object], Callable[[], object]]:
        message = message_type.FromString(wire)
        return lambda: message_type.FromString(wire), lambda: decode(message)

    tfs_doc = codec.parse_json(tfs_body)
    paths = {
        "tfs-rest": (lambda: codec.parse_json(tfs_body), lambda: codec.decode_predict(tfs_doc, SIGNATURE)[0]),
        "tfs-grpc": grpc(predict_pb2.PredictRequest, predict.SerializeToString(),
                         lambda m: protos_to_numpy(m.inputs, limits, SIGNATURE.inputs)),
        "v2-json": rest(json_body, len(json_body)),
        "v2-binary": rest(binary_body, head),
        **{name: grpc(protos.ModelInferRequest, message.SerializeToString(),
                      lambda m: v2_servicer.decode_inputs(m, SIGNATURE, limits, None))
           for name, message in (("v2-grpc-raw", infer_raw), ("v2-grpc-typed", infer_typed))},
    }
    for name, (_, decode) in paths.items():
        tensors = decode()
        if tensors.keys() != arrays.keys() or any(
                tensors[k].dtype != a.dtype or tensors[k].tolist() != a.tolist() for k, a in arrays.items()):
            raise RuntimeError(f"{name}: {rows} rows decoded to other tensors")
    return paths


def paths_main(rows: list[int], repeat: int) -> None:
    print("Input decoding of one natality request (4 inputs) per path, the message already parsed; "
          "its parse beside it; us per call, best of", repeat)
    print(f"{'rows':>5} {'path':<14} {'parse':>8} {'decode':>8}")
    for count in rows:
        for name, (parse, decode) in decoders(count).items():
            print(f"{count:>5} {name:<14} {seconds_per_call(parse, repeat) * 1e6:>8.1f} "
                  f"{seconds_per_call(decode, repeat) * 1e6:>8.1f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per body; the best is reported")
    parser.add_argument("--paths", action="store_true",
                        help="time the input decoding of TF Serving's and the v2 paths instead")
    parser.add_argument("--rows", default="1,64", help="--paths: comma-separated rows per request")
    args = parser.parse_args(argv)
    if args.paths:
        paths_main([int(n) for n in args.rows.split(",")], args.repeat)
        return
    print("parse_json, decode_predict, encode_predict and the three together, natality (4 inputs), "
          "us per call, best of", args.repeat)
    print(f"{'rows':>5} {'form':<9} {'parse':>8} {'decode':>8} {'encode':>8} {'total':>8} {'us/row':>8}")
    for rows in ROWS:
        for form in FORMS:
            raw, outputs = body(rows, form)
            check(raw, outputs, rows, form)
            us = {name: seconds_per_call(call, args.repeat) * 1e6
                  for name, call in stages(raw, outputs).items()}
            print(f"{rows:>5} {form:<9} {us['parse']:>8.1f} {us['decode']:>8.1f} {us['encode']:>8.1f} "
                  f"{us['total']:>8.1f} {us['total'] / rows:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
