"""Model lifecycle as TF Serving does it: new versions roll in, configs reload, under load."""
from __future__ import annotations

import shutil
import threading

import grpc
import httpx
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from serving.settings import ModelConfig
from serving.tfs_config import read_model_config_file
from tests.conftest import free_port, wait_until

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


def versions(gateway, name: str) -> dict[str, str]:
    response = httpx.get(f"{gateway.url}/v1/models/{name}", timeout=10)
    if response.status_code != 200:
        return {}
    return {s["version"]: s["state"] for s in response.json()["model_version_status"]}


@pytest.mark.slow
def test_new_version_rolls_in_under_load_with_no_failed_request(gateway_factory, tfserving_dir, tmp_path):
    base = tmp_path / "m"
    base.mkdir()
    shutil.copytree(tfserving_dir / TWO_VERSIONS / "00000123", base / "00000123")
    gateway = gateway_factory(models=(ModelConfig(name="m", base_path=str(base)),),
                              enable_batching=True, file_system_poll_wait_seconds=0.2)
    answers: list[tuple[int, object]] = []  # (status, body) of every request, checked below
    errors: list[Exception] = []  # a load thread that fails stops and leaves its error here
    stop = threading.Event()

    def load() -> None:
        """Only records: an assert in this thread could not fail the test."""
        try:
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                while not stop.is_set():
                    response = client.post("/v1/models/m:predict", json={"instances": [2.0]})
                    answers.append((response.status_code, response.json()))
        except Exception as error:  # noqa: BLE001 - reported by the test's own thread
            errors.append(error)

    def served_more_than(n: int) -> bool:
        return bool(errors) or len(answers) > n

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: served_more_than(20), what="load")
    shutil.copytree(tfserving_dir / TWO_VERSIONS / "00000124", tmp_path / "staging")
    (tmp_path / "staging").rename(base / "00000124")  # appears whole, as a real deploy should
    wait_until(lambda: versions(gateway, "m") == {"123": "END", "124": "AVAILABLE"}, what="the roll-over")
    served_after = len(answers)
    wait_until(lambda: served_more_than(served_after + 20), what="load on the new version")
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a load thread did not stop"
    assert not errors, errors
    wrong = [answer for answer in answers if answer != (200, {"predictions": [3.0]})]
    assert len(answers) > 40 and not wrong, wrong[:5]


@pytest.fixture
def grpc_gateway(gateway_factory, tfserving_dir):
    gateway = gateway_factory(
        port=free_port(),
        models=(ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),))
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        yield gateway, model_service_pb2_grpc.ModelServiceStub(channel)


def reload_request(tfserving_dir, *names: str) -> model_management_pb2.ReloadConfigRequest:
    paths = {"default": "saved_model_half_plus_two_cpu", "half_plus_three": "saved_model_half_plus_three"}
    request = model_management_pb2.ReloadConfigRequest()
    for name in names:
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, str(tfserving_dir / paths[name]), "tensorflow"
    return request


def test_reload_config_request_adds_and_removes_models(grpc_gateway, tfserving_dir):
    gateway, stub = grpc_gateway
    stub.HandleReloadConfigRequest(reload_request(tfserving_dir, "default", "half_plus_three"), timeout=60)
    answer = httpx.post(gateway.url + "/v1/models/half_plus_three:predict", json={"instances": [1.0]}, timeout=10)
    assert answer.json() == {"predictions": [3.5]}
    stub.HandleReloadConfigRequest(reload_request(tfserving_dir, "half_plus_three"), timeout=60)
    gone = httpx.post(gateway.url + "/v1/models/default:predict", json={"instances": [1.0]}, timeout=10)
    assert gone.status_code == 404


def test_reload_with_a_bad_config_is_invalid_and_changes_nothing(grpc_gateway):
    gateway, stub = grpc_gateway
    with pytest.raises(grpc.RpcError) as info:
        stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert versions(gateway, "default") == {"123": "AVAILABLE"}


@pytest.mark.slow
def test_config_file_polling_adds_a_model(gateway_factory, tfserving_dir, tmp_path):
    config = tmp_path / "models.config"
    entry = 'config {{ name: "{}" base_path: "{}" model_platform: "tensorflow" }}'
    one = entry.format("default", tfserving_dir / "saved_model_half_plus_two_cpu")
    config.write_text(f"model_config_list {{ {one} }}")
    gateway = gateway_factory(models=read_model_config_file(config), model_config_file=str(config),
                              model_config_file_poll_wait_seconds=1)
    two = entry.format("half_plus_three", tfserving_dir / "saved_model_half_plus_three")
    config.write_text(f"model_config_list {{ {one} {two} }}")
    wait_until(lambda: versions(gateway, "half_plus_three") == {"123": "AVAILABLE"}, what="the new model")
    config.write_text("not a config")
    answer = httpx.post(gateway.url + "/v1/models/half_plus_three:predict", json={"instances": [1.0]}, timeout=10)
    assert answer.json() == {"predictions": [3.5]}
