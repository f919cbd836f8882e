"""Failed version loads are retried as TF Serving does (--max_num_load_retries,
--load_retry_interval_micros), seen through a real gateway's model status."""
from __future__ import annotations

import os
import shutil

import httpx
import pytest

from serving.settings import ModelConfig, VersionPolicy
from tests.conftest import wait_until

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


@pytest.fixture
def broken_124(tfserving_dir, tmp_path):
    """(base path, good saved_model.pb bytes): version 123 loads, 124's graph is corrupt."""
    base = tmp_path / "m"
    shutil.copytree(tfserving_dir / TWO_VERSIONS, base)
    graph = base / "00000124" / "saved_model.pb"
    good = graph.read_bytes()
    graph.write_bytes(b"garbage")
    return base, good


def status_of(gateway, version: str) -> dict:
    response = httpx.get(f"{gateway.url}/v1/models/m/versions/{version}", timeout=10)
    return response.json()["model_version_status"][0] if response.status_code == 200 else {}


def start(gateway_factory, base, retries: int, interval_micros: int):
    """Ready as soon as 123 is AVAILABLE, whatever 124 does."""
    return gateway_factory(models=(ModelConfig(name="m", base_path=str(base),
                                               version_policy=VersionPolicy(kind="all")),),
                           max_num_load_retries=retries, load_retry_interval_micros=interval_micros)


def test_a_version_fixed_between_retries_becomes_available(gateway_factory, broken_124):
    base, good = broken_124
    gateway = start(gateway_factory, base, retries=100_000, interval_micros=20_000)
    loading = wait_until(lambda: (s := status_of(gateway, "124")).get("state") == "LOADING"
                         and s.get("status", {}).get("error_message") and s, what="124 retrying")
    assert loading["status"]["error_code"] == "UNKNOWN" and "Failed to load" in loading["status"]["error_message"]
    fixed = base / "fixed.pb"
    fixed.write_bytes(good)
    os.replace(fixed, base / "00000124" / "saved_model.pb")
    available = wait_until(lambda: (s := status_of(gateway, "124")).get("state") == "AVAILABLE" and s,
                           what="124 loaded on a retry")
    assert available["status"] == {"error_code": "OK", "error_message": ""}
    answer = httpx.post(gateway.url + "/v1/models/m/versions/124:predict", json={"instances": [2.0]}, timeout=10)
    assert answer.json() == {"predictions": [3.0]}
    assert gateway.service.registry.statuses("m", 124)[0].attempts > 1


def test_a_version_that_never_loads_ends_with_its_error_after_the_retries(gateway_factory, broken_124):
    base, _ = broken_124
    gateway = start(gateway_factory, base, retries=2, interval_micros=1_000)
    ended = wait_until(lambda: (s := status_of(gateway, "124")).get("state") == "END" and s,
                       what="124 given up")
    assert ended["status"]["error_code"] == "UNKNOWN" and "Failed to load" in ended["status"]["error_message"]
    assert gateway.service.registry.statuses("m", 124)[0].attempts == 3  # 1 + --max_num_load_retries
    assert status_of(gateway, "123")["state"] == "AVAILABLE"
    answer = httpx.post(gateway.url + "/v1/models/m:predict", json={"instances": [2.0]}, timeout=10)
    assert answer.json() == {"predictions": [3.0]}  # latest available: 123
