"""(a) of ``make bench``: the model alone, in process, at each batch size (the limit no
server can beat): loaded and warmed up as the gateway does it, so it runs in a TF1 Session
where the gateway's would (``LoadedModel.prefer_session``; its restored functions cost 3-7x
more per call, which would put this "limit" below the gateway).

``python -m loadtests.baselines.raw_model MODEL MODEL_BASE_PATH --batch-sizes 1,8 --calls N``
prints one line ``RAW_JSON {...}`` (a ``RawResult``). The benchmark runs it as a pinned
subprocess, so the benchmark itself never imports TensorFlow. Inputs are prepared
beforehand; each timed call includes fetching every output as numpy (what a server must do).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from loadtests.baselines import latest_version
from loadtests.benchmarks.bench_results import BatchTiming, RawResult, to_json

SIGNATURE = "serving_default"
PREFIX = "RAW_JSON "


def _inputs(model: str, batch: int) -> dict[str, Any]:
    if model == "natality":
        from serving.examples.natality import sample_rows

        return sample_rows(batch, seed=batch)
    if model == "image_classifier":
        from serving.examples.image import sample_jpegs

        pool = sample_jpegs(min(batch, 32), seed=7)
        return {"image_bytes": [pool[i % len(pool)] for i in range(batch)]}
    raise ValueError(f"no raw inputs for model {model!r}")


def measure(model: str, base_path: str, batch_sizes: Sequence[int], calls: int) -> RawResult:
    """Rows/s of the serving signature at each batch size (after a few untimed calls)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from serving.runtime import savedmodel, warmup

    started = time.perf_counter()
    loaded = savedmodel.load(latest_version(base_path))
    warmup.run(loaded, (1,))
    load_s = time.perf_counter() - started
    spec = loaded.signature(SIGNATURE)

    def call(inputs: dict[str, Any]) -> None:
        loaded.run(SIGNATURE, inputs)

    timings = []
    for batch in batch_sizes:
        inputs = {k: np.asarray(v, dtype=spec.inputs[k].dtype) for k, v in _inputs(model, batch).items()}
        for _ in range(max(2, calls // 20)):
            call(inputs)
        started = time.perf_counter()
        for _ in range(calls):
            call(inputs)
        seconds = time.perf_counter() - started
        timings.append(BatchTiming(batch, calls, seconds, seconds / calls * 1e3,
                                   batch * calls / seconds))
    return RawResult(tf.__version__, load_s, tuple(timings))


def parse_line(text: str) -> RawResult | None:
    """The result in a log written by ``main``, if it got that far."""
    for line in text.splitlines():
        if line.startswith(PREFIX):
            return RawResult.from_json(json.loads(line[len(PREFIX):]))
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("model_base_path")
    parser.add_argument("--batch-sizes", required=True,
                        type=lambda text: [int(size) for size in text.split(",")])
    parser.add_argument("--calls", type=int, required=True, help="timed calls per batch size")
    args = parser.parse_args(argv)
    result = measure(args.model, args.model_base_path, args.batch_sizes, args.calls)
    print(PREFIX + json.dumps(to_json(result)), flush=True)


if __name__ == "__main__":
    main()
