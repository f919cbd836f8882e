"""Models and config files on gs:// and s3://, against real emulators the tests start: a GCS
emulator (gcp-storage-emulator) and an S3 server (moto), each on a free loopback port."""
from __future__ import annotations

import gc
import os

import httpx
import pytest

from loadtests.support.processes import wait_until

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu/00000123"
HALF_PLUS_THREE = "saved_model_half_plus_three/00000123"


def cached_copies(root) -> list[str]:
    from serving.runtime.storage import CACHE_PREFIX

    return sorted(p.name for p in root.iterdir() if p.name.startswith(CACHE_PREFIX))


def test_versions_are_listed_once_their_saved_model_is_there(store, store_env, tfserving_dir):
    from serving.runtime.versions import version_dirs

    bucket = store.bucket()
    with pytest.raises(FileNotFoundError):
        version_dirs(f"{bucket}/model")
    store.upload_dir(tfserving_dir / HALF_PLUS_TWO, f"{bucket}/model/00000123")
    store.write_text(f"{bucket}/model/7/variables/variables.index", "partial upload")
    store.write_text(f"{bucket}/model/not_a_version/saved_model.pb", "ignored")
    assert version_dirs(f"{bucket}/model") == {123: f"{bucket}/model/00000123"}
    assert version_dirs(f"{bucket}/model/") == {123: f"{bucket}/model/00000123"}
    # removed, then put back: it counts again only once its saved_model.pb is back
    store.remove(f"{bucket}/model/00000123")
    assert version_dirs(f"{bucket}/model") == {}
    store.write_text(f"{bucket}/model/00000123/variables/variables.index", "upload under way")
    assert version_dirs(f"{bucket}/model") == {}
    store.upload_dir(tfserving_dir / HALF_PLUS_TWO, f"{bucket}/model/00000123")
    assert version_dirs(f"{bucket}/model") == {123: f"{bucket}/model/00000123"}


def test_endpoints_in_the_other_forms_people_set(store, store_env, monkeypatch, tfserving_dir):
    """``STORAGE_EMULATOR_HOST=host:port`` (no scheme, as the Go emulator's docs write it) and
    TF Serving's ``S3_ENDPOINT=host:port`` with ``S3_USE_HTTPS=0`` instead of ``AWS_ENDPOINT_URL``."""
    from serving.runtime.versions import version_dirs

    bucket = store.bucket()
    store.upload_dir(tfserving_dir / HALF_PLUS_TWO, f"{bucket}/model/1")
    host_port = store.endpoint.removeprefix("http://")
    if store.scheme == "gs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host_port)
    else:
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        monkeypatch.setenv("S3_ENDPOINT", host_port)
        monkeypatch.setenv("S3_USE_HTTPS", "0")
    assert version_dirs(f"{bucket}/model") == {1: f"{bucket}/model/1"}


def test_s3_endpoint_variables():
    from serving.runtime.storage import s3_endpoint

    assert s3_endpoint({}) is None
    assert s3_endpoint({"S3_ENDPOINT": "minio:9000"}) == "https://minio:9000"
    assert s3_endpoint({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}) == "http://minio:9000"
    assert s3_endpoint({"S3_ENDPOINT": "minio:9000", "AWS_ENDPOINT_URL": "http://a:1"}) == "http://a:1"
    assert s3_endpoint({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2"}) == "http://b:2"


def test_a_version_loads_from_a_local_copy_with_its_warmup_file(store, store_env, models_dir):
    """natality ships TF Serving's assets.extra/tf_serving_warmup_requests: it is found in the
    copy, the answers equal the local model's, and the copy goes with the model."""
    from serving.runtime import savedmodel, warmup

    bucket = store.bucket()
    store.upload_dir(models_dir / "natality" / "1", f"{bucket}/natality/1")
    remote = savedmodel.load(f"{bucket}/natality/1")
    local = savedmodel.load(models_dir / "natality" / "1")
    assert remote.source == f"{bucket}/natality/1"
    assert cached_copies(store_env) == [os.path.basename(remote.path)]
    recorded = warmup.recorded_requests(remote)
    assert recorded, "the warm-up file was not found in the local copy"
    assert warmup.run(remote, (1,)) == len(recorded)
    for request in recorded:
        ours, theirs = remote.run(request.signature_name, request.inputs), local.run(
            request.signature_name, request.inputs)
        assert savedmodel.same_answers(ours, theirs)  # ours may run in a Session: the last bit may differ
    del remote
    gc.collect()
    assert cached_copies(store_env) == []


def test_a_missing_version_fails_cleanly_and_leaves_no_copy(store, store_env):
    from serving.runtime import savedmodel

    bucket = store.bucket()
    with pytest.raises(OSError):
        savedmodel.load(f"{bucket}/none/1")
    assert cached_copies(store_env) == []


def predict(gateway, values):
    response = httpx.post(f"{gateway.url}/v1/models/hp:predict", json={"instances": values}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def versions(gateway) -> dict[int, str]:
    body = httpx.get(f"{gateway.url}/v1/models/hp", timeout=30).json()
    return {int(v["version"]): v["state"] for v in body["model_version_status"]}


def test_gateway_serves_from_the_bucket_and_rolls_in_a_new_version(store, store_env, tfserving_dir,
                                                                   gateway_factory):
    """The config file and the model both in the bucket (read through the CLI, as
    ``--model_config_file=gs://...``); version 2 uploaded while serving is loaded and served
    without a restart, version 1 unloaded and its local copy removed."""
    from serving.cli import build_settings

    bucket = store.bucket()
    store.upload_dir(tfserving_dir / HALF_PLUS_TWO, f"{bucket}/hp/1")
    config = f"{bucket}/config/models.config"
    store.write_text(config, f'model_config_list {{ config {{ name: "hp" base_path: "{bucket}/hp" '
                             f'model_platform: "tensorflow" }} }}')
    settings = build_settings([f"--model_config_file={config}"], environ={})
    assert settings.model_config_file == config
    assert [(m.name, m.base_path) for m in settings.models] == [("hp", f"{bucket}/hp")]
    gateway = gateway_factory(models=settings.models, model_config_file=config,
                              model_config_file_poll_wait_seconds=1, file_system_poll_wait_seconds=0.2)
    assert predict(gateway, [1.0, 2.0, 5.0]) == [2.5, 3.0, 4.5]
    first_copy = cached_copies(store_env)
    assert len(first_copy) == 1

    store.upload_dir(tfserving_dir / HALF_PLUS_THREE, f"{bucket}/hp/2")
    wait_until(lambda: versions(gateway) == {1: "END", 2: "AVAILABLE"}, timeout=120,
               what="version 2 AVAILABLE and version 1 unloaded")
    assert predict(gateway, [1.0, 2.0, 5.0]) == [3.5, 4.0, 5.5]

    def only_the_new_copy_left() -> bool:
        gc.collect()
        copies = cached_copies(store_env)
        return len(copies) == 1 and copies != first_copy

    wait_until(only_the_new_copy_left, timeout=60, what="version 1's local copy removed")
