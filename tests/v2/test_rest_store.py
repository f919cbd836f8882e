"""Prediction-store keys over v2 REST: an input named like ``--prediction_key_field`` carries
each instance's key (as TF Serving's ``:predict`` carries them), is taken out before the model
sees the inputs, and stored instances are answered from the store (SQLite, as
``tests/precomputed/test_gateway_store`` does)."""
from __future__ import annotations

import contextlib

import httpx
import pytest

from serving.examples.natality import INPUTS
from serving.precomputed import open_store
from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway
from tests.precomputed.test_gateway_store import FIELD, NATALITY, OUTPUT, natality_rows, planted, settings_for, write


@pytest.fixture(scope="module")
def served(tmp_path_factory, models_dir):
    url = f"sqlite://{tmp_path_factory.mktemp('v2store') / 'predictions.db'}"
    models = (ModelConfig(name=NATALITY, base_path=str(models_dir / NATALITY)),)
    with (Gateway(Settings(**settings_for(url, models, prediction_store_timeout_ms=5000))) as gateway,
          contextlib.closing(open_store(url, timeout_s=5)) as store):
        yield gateway, store


def infer(gateway: Gateway, rows: list[dict], keys: list[str] | None) -> httpx.Response:
    inputs = [{"name": name, "datatype": "BYTES" if isinstance(rows[0][name], str) else "FP32",
               "shape": [len(rows)], "data": [row[name] for row in rows]} for name in INPUTS]
    if keys is not None:
        inputs.append({"name": FIELD, "datatype": "BYTES", "shape": [len(keys)], "data": keys})
    return httpx.post(f"{gateway.url}/v2/models/{NATALITY}/infer", json={"inputs": inputs}, timeout=60)


def weights(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == OUTPUT
    return output["data"]


def test_keyed_instances_are_answered_from_the_store(served):
    gateway, store = served
    rows = natality_rows(4, start=700)
    keys = [f"v2-{i}" for i in range(4)]
    write(store, [keys[1], keys[3]], planted(2001.0, 2003.0))
    computed = weights(infer(gateway, rows, None))
    hits = gateway.metric("tfgw_precomputed_rows_total", model=NATALITY, outcome="hit")
    answer = weights(infer(gateway, rows, keys))
    # the model's rows ran in another batch than ``computed``: floats may differ in the last digit
    assert answer == pytest.approx([computed[0], 2001.0, computed[2], 2003.0], rel=1e-6)
    assert (answer[1], answer[3]) == (2001.0, 2003.0)
    assert gateway.metric("tfgw_precomputed_rows_total", model=NATALITY, outcome="hit") == hits + 2


def test_a_key_input_of_another_length_is_refused(served):
    gateway, _ = served
    response = infer(gateway, natality_rows(3, start=800), ["a", "b"])
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
