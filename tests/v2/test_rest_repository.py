"""The model repository extension over v2 REST (``serving.core.repository``) through
tritonclient.http: index, load from a folder under the model roots, unload, and the refusals
(gate off, names that are not one path segment, unknown folders, a new model that does not
load, parameters we do not take)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving.settings import ModelConfig

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = "saved_model_half_plus_three"


def start(gateway_factory, tfserving_dir, **overrides):
    gateway = gateway_factory(models=(ModelConfig(name="half_plus_two", base_path=str(tfserving_dir / HALF_PLUS_TWO)),),
                              max_num_load_retries=0, **overrides)
    return gateway, triton.InferenceServerClient(gateway.url.removeprefix("http://"))


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return info.value.message()


def x() -> np.ndarray:
    return np.array([2.0, 4.0], np.float32)


def test_load_infer_unload_and_the_index(gateway_factory, tfserving_dir):
    gateway, client = start(gateway_factory, tfserving_dir)
    assert client.get_model_repository_index() == [
        {"name": "half_plus_two", "version": "123", "state": "READY", "reason": ""}]
    assert not client.is_model_ready(HALF_PLUS_THREE)

    client.load_model(HALF_PLUS_THREE)  # found beside half_plus_two: the default model root
    assert client.is_model_ready(HALF_PLUS_THREE)
    tensor = triton.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(x())
    np.testing.assert_array_equal(client.infer(HALF_PLUS_THREE, [tensor]).as_numpy("y"), x() / 2 + 3)
    assert {e["name"]: e["state"] for e in client.get_model_repository_index()} == {
        "half_plus_two": "READY", HALF_PLUS_THREE: "READY"}

    client.unload_model(HALF_PLUS_THREE)
    assert not client.is_model_ready(HALF_PLUS_THREE)
    assert "Servable not found" in refused(client.infer, HALF_PLUS_THREE, [tensor])
    assert client.get_model_repository_index() == [
        {"name": "half_plus_two", "version": "123", "state": "READY", "reason": ""},
        {"name": HALF_PLUS_THREE, "state": "UNAVAILABLE", "reason": "unloaded"}]
    ready = httpx.post(gateway.url + "/v2/repository/index", json={"ready": True}, timeout=30).json()
    assert [e["name"] for e in ready] == ["half_plus_two"]
    assert client.is_server_ready()

    client.load_model("half_plus_two")  # a reload of a configured model
    assert client.is_model_ready("half_plus_two")


def test_refusals(gateway_factory, tfserving_dir, tmp_path):
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a model")
    gateway, client = start(gateway_factory, tfserving_dir, model_roots=(str(tfserving_dir), str(tmp_path)))
    assert "no folder of that name in the model roots" in refused(client.load_model, "nothing_here")
    assert "failed to load model 'broken'" in refused(client.load_model, "broken")
    assert [e["name"] for e in client.get_model_repository_index()] == ["half_plus_two"]
    assert client.is_server_ready()
    assert "is not supported" in refused(client.load_model, HALF_PLUS_THREE, config="{}")
    assert "it is not loaded" in refused(client.unload_model, "nothing_here")
    for name in ("%2E%2E", "a%5Cb"):
        response = httpx.post(f"{gateway.url}/v2/repository/models/{name}/load", timeout=30)
        assert (response.status_code, set(response.json())) == (400, {"error"}), name
    named = httpx.post(gateway.url + "/v2/repository/index", json={"repository_name": "other"}, timeout=30)
    assert named.status_code == 400


def test_switched_off(gateway_factory, tfserving_dir):
    gateway, client = start(gateway_factory, tfserving_dir, enable_reload_config_api=False)
    assert "switched off" in refused(client.load_model, HALF_PLUS_THREE)
    assert "switched off" in refused(client.unload_model, "half_plus_two")
    assert client.get_model_repository_index()[0]["state"] == "READY"  # read-only: not gated
