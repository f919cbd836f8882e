"""The stock Beam batch-prediction path people write today, for comparison with batch/run.py.

ReadFromText -> json.loads per line -> a dict of numpy scalars per row -> RunInference
(Beam batches rows up to 512) -> json.dumps per row -> WriteToText. Beam's own
TFModelHandlerNumpy cannot load SavedModel directories under Keras 3, so the handler is the
minimal per-row one its documentation leads to.

    python -m loadtests.baselines.stock_beam INPUT OUTPUT MODEL_BASE_PATH

The newest version under MODEL_BASE_PATH is loaded.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from loadtests.baselines import latest_version


class PerRowHandler(ModelHandler[dict, PredictionResult, Any]):
    def __init__(self, path: str) -> None:
        self._path = path

    def load_model(self) -> Any:
        import tensorflow as tf

        return tf.saved_model.load(self._path).signatures["serving_default"]

    def run_inference(self, batch: Sequence[dict], model: Any, inference_args=None) -> Iterable[PredictionResult]:
        import tensorflow as tf

        inputs = {k: tf.constant(np.stack([row[k] for row in batch])) for k in batch[0] if k != "id"}
        outputs = {k: v.numpy() for k, v in model(**inputs).items()}
        for i, row in enumerate(batch):
            yield PredictionResult(row, {k: v[i] for k, v in outputs.items()})

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"max_batch_size": 512}


def to_row(line: str) -> dict:
    doc = json.loads(line)
    return {k: (np.float32(v) if isinstance(v, float) else v) for k, v in doc.items()}


def to_line(result: PredictionResult) -> str:
    return json.dumps({"id": result.example["id"],
                       **{k: float(v) for k, v in result.inference.items()}})


def main(argv: Sequence[str]) -> None:
    source, output, base_path = argv[:3]
    handler = PerRowHandler(latest_version(base_path))
    with beam.Pipeline(argv=["--runner=FnApiRunner"]) as pipeline:
        (pipeline | beam.io.ReadFromText(source) | beam.Map(to_row)
         | RunInference(handler) | beam.Map(to_line) | beam.io.WriteToText(output))


if __name__ == "__main__":
    main(sys.argv[1:])
