"""HandleReloadConfigRequest on a real gateway: inside the model roots it is served, outside
(``..``, symlinks, look-alike folders) it is refused and changes nothing, and operators can
switch it off. Models are copies of TF Serving's half_plus_two/half_plus_three in a tmp tree:

    tmp/models/a         (served at start: the default root is tmp/models)
    tmp/models/b         (a model beside it: inside)
    tmp/models/link  ->  tmp/outside/evil      (a symlink out)
    tmp/models-evil/x    (a sibling whose name starts with the root's)
    tmp/outside/evil     (a loadable model no client may point the server at)
"""
from __future__ import annotations

import shutil

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, model_service_pb2_grpc

from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port, wait_until


@pytest.fixture(scope="module")
def tree(tmp_path_factory, tfserving_dir):
    root = tmp_path_factory.mktemp("reload")
    two, three = tfserving_dir / "saved_model_half_plus_two_cpu", tfserving_dir / "saved_model_half_plus_three"
    for folder, model in (("models/a", two), ("models/b", three), ("models-evil/x", three),
                          ("outside/evil", three)):
        shutil.copytree(model, root / folder)
    (root / "models" / "link").symlink_to(root / "outside" / "evil")
    return root


def start(tree, **settings) -> Gateway:
    models = (ModelConfig(name="a", base_path=str(tree / "models" / "a")),)
    return Gateway(Settings(port=free_port(), rest_api_port=free_port(), host="127.0.0.1",
                            models=models, **settings))


def reload(stub, **base_paths: str) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    for name, base_path in base_paths.items():
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, base_path, "tensorflow"
    stub.HandleReloadConfigRequest(request, timeout=60)


def statuses(stub) -> dict[str, object]:
    """GetModelStatus of every name the tests use: (version, state) pairs, or the error code."""
    found: dict[str, object] = {}
    for name in ("a", "b", "evil"):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        try:
            response = stub.GetModelStatus(request, timeout=30)
        except grpc.RpcError as error:
            found[name] = error.code()
        else:
            found[name] = sorted((s.version, s.state) for s in response.model_version_status)
    return found


@pytest.fixture(scope="module")
def default_roots(tree):
    """A gateway with the default roots (tmp/models), and a ModelService stub on it."""
    with start(tree) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel:
        yield model_service_pb2_grpc.ModelServiceStub(channel)


ESCAPES = {
    "elsewhere": "outside/evil",
    "dot-dot": "models/../outside/evil",
    "dot-dot from inside a model": "models/a/../../outside/evil/",
    "symlink out": "models/link",
    "symlink out, trailing slash": "models/link/",
    "look-alike sibling": "models-evil/x",
}


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_reload_outside_the_roots_is_refused_and_changes_nothing(default_roots, tree, escape):
    stub = default_roots
    before = statuses(stub)
    assert before == {"a": [(123, 30)], "b": grpc.StatusCode.NOT_FOUND, "evil": grpc.StatusCode.NOT_FOUND}
    with pytest.raises(grpc.RpcError) as info:
        # the model already served comes first: the whole request is refused, not a part of it
        reload(stub, a=str(tree / "models" / "a"), evil=f"{tree}/{escape}")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "model 'evil'" in info.value.details() and "outside the model roots" in info.value.details()
    assert "nothing was changed" in info.value.details()
    assert statuses(stub) == before


def test_reload_of_a_model_beside_the_configured_one_is_served(tree):
    with start(tree) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        reload(stub, a=f"{tree}/models/a/", b=f"{tree}/models/./a/../b")  # trailing slash, '.', '..' inside
        wait_until(lambda: statuses(stub)["b"] == [(123, 30)], timeout=60, what="model b AVAILABLE")
        assert statuses(stub)["a"] == [(123, 30)]


def test_explicit_roots_replace_the_default(tree):
    with start(tree, model_roots=f"{tree}/models/a,{tree}/outside") as gateway, \
            grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            reload(stub, a=str(tree / "models" / "a"), b=str(tree / "models" / "b"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        reload(stub, a=str(tree / "models" / "a"), evil=str(tree / "outside" / "evil"))
        wait_until(lambda: statuses(stub)["evil"] == [(123, 30)], timeout=60, what="model evil AVAILABLE")


def test_reload_api_switched_off_refuses_everything(tree):
    with start(tree, enable_reload_config_api=False) as gateway, \
            grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        before = statuses(stub)
        for request in ({"a": str(tree / "models" / "a")}, {"b": str(tree / "models" / "b")}, {}):
            with pytest.raises(grpc.RpcError) as info:
                reload(stub, **request)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "switched off" in info.value.details()
        assert statuses(stub) == before == {"a": [(123, 30)], "b": grpc.StatusCode.NOT_FOUND,
                                            "evil": grpc.StatusCode.NOT_FOUND}
