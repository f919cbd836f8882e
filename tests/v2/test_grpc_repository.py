"""The model repository extension over v2 gRPC (``serving.core.repository``, as over REST:
``tests/v2/test_rest_repository.py``) through tritonclient.grpc on each gRPC server: index,
load from a folder under the model roots, unload, and the refusals with their codes."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from serving.settings import ModelConfig
from serving.v2 import protos
from tests.conftest import free_port
from tests.v2.test_grpc import call

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = "saved_model_half_plus_three"


def start(gateway_factory, tfserving_dir, **overrides):
    gateway = gateway_factory(port=free_port(), max_num_load_retries=0, **overrides,
                              models=(ModelConfig(name="half_plus_two", base_path=str(tfserving_dir / HALF_PLUS_TWO)),))
    return gateway, triton.InferenceServerClient(gateway.grpc_target)


def refused(ask, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        ask(*args, **kwargs)
    return info.value.status().removeprefix("StatusCode."), info.value.message()


def index(client) -> list[dict]:
    return client.get_model_repository_index(as_json=True).get("models", [])


def test_load_infer_unload_and_the_index(gateway_factory, tfserving_dir, grpc_server):
    gateway, client = start(gateway_factory, tfserving_dir, grpc_server=grpc_server)
    assert index(client) == [{"name": "half_plus_two", "version": "123", "state": "READY"}]
    assert not client.is_model_ready(HALF_PLUS_THREE)

    client.load_model(HALF_PLUS_THREE)  # found beside half_plus_two: the default model root
    assert client.is_model_ready(HALF_PLUS_THREE)
    x = np.array([2.0, 4.0], np.float32)
    tensor = triton.InferInput("x", [2], "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer(HALF_PLUS_THREE, [tensor]).as_numpy("y"), x / 2 + 3)

    client.unload_model(HALF_PLUS_THREE)
    assert not client.is_model_ready(HALF_PLUS_THREE)
    assert refused(client.infer, HALF_PLUS_THREE, [tensor])[0] == "NOT_FOUND"
    assert index(client) == [{"name": "half_plus_two", "version": "123", "state": "READY"},
                             {"name": HALF_PLUS_THREE, "state": "UNAVAILABLE", "reason": "unloaded"}]
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        ready = call(channel, "RepositoryIndex", protos.RepositoryIndexRequest(ready=True))
        assert [m.name for m in ready.models] == ["half_plus_two"]
        named = protos.RepositoryIndexRequest(repository_name="other")
        with pytest.raises(grpc.RpcError) as info:
            call(channel, "RepositoryIndex", named)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.is_server_ready()


def test_refusals(gateway_factory, tfserving_dir, tmp_path):
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a model")
    _, client = start(gateway_factory, tfserving_dir, model_roots=(str(tfserving_dir), str(tmp_path)))
    code, message = refused(client.load_model, "nothing_here")
    assert (code, "no folder of that name in the model roots" in message) == ("NOT_FOUND", True)
    code, message = refused(client.load_model, "broken")
    assert (code, "failed to load model 'broken'" in message) == ("FAILED_PRECONDITION", True)
    assert [e["name"] for e in index(client)] == ["half_plus_two"] and client.is_server_ready()
    code, message = refused(client.load_model, HALF_PLUS_THREE, config="{}")
    assert (code, "'config' is not supported" in message) == ("INVALID_ARGUMENT", True)
    code, message = refused(client.load_model, HALF_PLUS_THREE, files={"file:1/saved_model.pb": b"x"})
    assert (code, "'file:1/saved_model.pb' is not supported" in message) == ("INVALID_ARGUMENT", True)
    for name in ("..", "a/b", "a\\b", ""):
        assert refused(client.load_model, name)[0] == "INVALID_ARGUMENT", name
    assert refused(client.unload_model, "nothing_here") == ("NOT_FOUND",
                                                             "failed to unload model 'nothing_here': it is not loaded")


def test_switched_off(gateway_factory, tfserving_dir):
    _, client = start(gateway_factory, tfserving_dir, enable_reload_config_api=False)
    assert refused(client.load_model, HALF_PLUS_THREE)[0] == "PERMISSION_DENIED"
    assert refused(client.unload_model, "half_plus_two")[0] == "PERMISSION_DENIED"
    assert index(client)[0]["state"] == "READY"  # read-only: not gated
