"""Microseconds per call of the REST codec's hot path: ``parse_json`` + ``decode_predict``
+ ``encode_predict``, on natality :predict bodies of 1, 64 and 512 rows, row
(``instances``) and columnar (``inputs``) form; each stage timed alone, then the three together.

The codec alone: no HTTP, no batcher, no model (the outputs are the formula's answers as
float32, shaped like the model's ``weight_pounds``). The best of ``--repeat`` runs is
reported, each run long enough (``timeit``'s autorange) to swamp the timer. Imports no
TensorFlow.

    python -m loadtests.benchmarks.bench_codec [--repeat 5]
"""
from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import numpy as np
import orjson

from loadtests.support.payloads import instances
from serving.examples import natality
from serving.rest import codec
from serving.runtime.signature import PREDICT, STRING, SignatureSpec, TensorSpec

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per body; the best is reported")
    args = parser.parse_args(argv)
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
