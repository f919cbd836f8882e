"""Microseconds per gRPC Predict answer built the two ways TF Serving can write it: every
output in its typed field (``AsProtoField``, TF Serving's default and ours) or in
``tensor_content`` (``--enable_serialization_as_tensor_content``); and per upstream hop
request (the front's ``to_proto`` + serialize, then the upstream's parse + decode) each way
and as the front sends it (numbers in ``tensor_content``, strings in ``string_val``).

Answers: ``to_proto`` into a ``PredictResponse`` and ``SerializeToString`` (what the server
does per answer), for outputs shaped like our models' (natality's one float, vec16's sum and
16-wide list, text's int32 and strings), at 1, 64 and 512 rows. The best of ``--repeat``
runs is reported, each long enough (``timeit``'s autorange) to swamp the timer.

    python -m loadtests.benchmarks.bench_answers [--repeat 5]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from tensorflow_serving.apis import predict_pb2

from loadtests.benchmarks.bench_codec import seconds_per_call
from serving.runtime.tensors import protos_to_numpy, to_proto

ROWS = (1, 64, 512)


def outputs(model: str, rows: int) -> dict[str, np.ndarray]:
    """Model-shaped outputs for ``rows`` rows (values do not matter to the cost, sizes do)."""
    rng = np.random.default_rng(rows)
    if model == "natality":
        return {"weight_pounds": rng.normal(7, 1, rows).astype(np.float32)}
    if model == "vec16":
        scaled = rng.normal(size=(rows, 16)).astype(np.float32)
        return {"total": scaled.sum(axis=1), "scaled": scaled}
    words = [f"word {i}".upper().encode() for i in range(rows)]
    return {"length": np.array([len(w) for w in words], np.int32), "upper": np.array(words, dtype=object)}


MODELS = ("natality", "vec16", "text")


def answer(arrays: dict[str, np.ndarray], content: bool) -> Callable[[], bytes]:
    def call() -> bytes:
        response = predict_pb2.PredictResponse()
        response.model_spec.name = "m"
        for name, array in arrays.items():
            to_proto(array, into=response.outputs[name], content=content)
        return response.SerializeToString()

    return call


def hop(arrays: dict[str, np.ndarray], content: bool | None) -> Callable[[], dict[str, np.ndarray]]:
    """The front builds and sends, the upstream parses and decodes (both sides' CPU);
    ``content`` None: as ``serving.upstream.source`` sends it."""

    def call() -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        for name, array in arrays.items():
            to_proto(array, into=request.inputs[name],
                     content=array.dtype != object if content is None else content)
        received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
        return protos_to_numpy(received.inputs)

    return call


def check(arrays: dict[str, np.ndarray]) -> None:
    """Refuse to time a call that does not carry every value."""
    for content in (False, True, None):
        decoded = hop(arrays, content)()
        for name, array in arrays.items():
            if decoded[name].tolist() != array.tolist():
                raise RuntimeError(f"{name} did not round-trip (content={content})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case; the best is reported")
    args = parser.parse_args(argv)
    print(f"us per call, best of {args.repeat}: a Predict answer built and serialized, and an upstream "
          "hop request built, serialized, parsed and decoded; typed fields vs tensor_content")
    print(f"{'model':<9} {'rows':>5} {'answer fields':>14} {'answer content':>15} {'ratio':>6} "
          f"{'hop fields':>11} {'hop content':>12} {'hop as sent':>12}")
    for model in MODELS:
        for rows in ROWS:
            arrays = outputs(model, rows)
            check(arrays)
            us = {(kind, content): seconds_per_call(make(arrays, content), args.repeat) * 1e6
                  for kind, make, forms in (("answer", answer, (False, True)), ("hop", hop, (False, True, None)))
                  for content in forms}
            print(f"{model:<9} {rows:>5} {us['answer', False]:>14.1f} {us['answer', True]:>15.1f} "
                  f"{us['answer', False] / us['answer', True]:>6.2f} {us['hop', False]:>11.1f} "
                  f"{us['hop', True]:>12.1f} {us['hop', None]:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
