"""v2 ModelInfer over gRPC with a prediction store: the ``--prediction_key_field`` input is a
key, not a model input, as in TF Serving's Predict (``tests/precomputed/test_gateway_store.py``,
whose helpers this uses), and keyed rows are answered from the store (a SQLite file)."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import tritonclient.grpc as triton

from serving.precomputed import open_store
from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway
from tests.precomputed.test_gateway_store import (
    FIELD,
    NATALITY,
    OUTPUT,
    as_arrays,
    counts,
    model_outputs,
    natality_rows,
    planted,
    settings_for,
    since,
    write,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, models_dir):
    url = f"sqlite://{tmp_path_factory.mktemp('store') / 'predictions.db'}"
    models = (ModelConfig(name=NATALITY, base_path=str(models_dir / NATALITY)),)
    with (Gateway(Settings(**settings_for(url, models, prediction_store_timeout_ms=5000))) as gateway,
          contextlib.closing(open_store(url, timeout_s=5)) as store,
          triton.InferenceServerClient(gateway.grpc_target) as client):
        yield gateway, store, client


def infer(client: triton.InferenceServerClient, columns: dict[str, np.ndarray]) -> np.ndarray:
    tensors = []
    for name, array in columns.items():
        tensor = triton.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return client.infer(NATALITY, tensors, client_timeout=60).as_numpy(OUTPUT)


def test_keyed_rows_are_answered_from_the_store_and_the_rest_by_the_model(served):
    gateway, store, client = served
    rows = natality_rows(4, start=40)
    keys = [f"v2-grpc-{i}" for i in range(4)]
    write(store, [keys[1], keys[3]], planted(1001.0, 1003.0))
    before = counts(gateway)
    answer = infer(client, {**as_arrays(rows), FIELD: np.array([k.encode() for k in keys], dtype=object)})
    model = model_outputs(gateway, rows)[OUTPUT]
    np.testing.assert_allclose(answer[[0, 2]], model[[0, 2]], rtol=1e-6)
    np.testing.assert_array_equal(answer[[1, 3]], [1001.0, 1003.0])
    assert since(before, gateway) == {"hit": 2, "miss": 2, "fallback": 0}
    unkeyed = infer(client, as_arrays(rows))  # the same rows without keys: the model's answers
    np.testing.assert_allclose(unkeyed, model, rtol=1e-6)
