"""The gateway in front of a TF Serving upstream: here a second gateway on the embedded
backend, which speaks the same PredictionService protocol (tensorflow_model_server cannot
be installed on these machines)."""
from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import httpx
import pytest

from serving.settings import BatchingConfig, ModelConfig, Settings
from tests.conftest import Gateway, free_port, wait_until


def upstream_settings(tfserving_dir, port: int) -> dict:
    return dict(port=port, enable_batching=False,
                models=(ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),))


@pytest.fixture
def pair(gateway_factory, tfserving_dir):
    upstream = gateway_factory(**upstream_settings(tfserving_dir, free_port()))
    front = gateway_factory(
        upstream=upstream.grpc_target, enable_batching=True, file_system_poll_wait_seconds=0.2,
        models=(ModelConfig(name="default", base_path="served-by-the-upstream"),),
        batching=BatchingConfig(max_batch_size=64, batch_timeout_micros=2000, num_batch_threads=2))
    return upstream, front


def upstream_predicts(upstream: Gateway) -> float:
    return upstream.metric("tfgw_requests_total", model="default", method="predict", code="OK",
                           api="tfserving")


@pytest.mark.slow
def test_concurrent_requests_become_few_upstream_predicts(pair):
    upstream, front = pair
    before = upstream_predicts(upstream)

    async def scenario():
        async with httpx.AsyncClient(base_url=front.url, timeout=60,
                                     limits=httpx.Limits(max_connections=200)) as client:
            return await asyncio.gather(*(
                client.post("/v1/models/default:predict", json={"instances": [float(i)]})
                for i in range(200)))

    for i, response in enumerate(asyncio.run(scenario())):
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [0.5 * i + 2]}
    calls = upstream_predicts(upstream) - before
    assert 0 < calls < 100, f"{calls} upstream Predict calls for 200 client requests"
    assert calls == front.metric("tfgw_batch_size_rows_count", model="default")


def test_metadata_and_status_are_the_upstreams(pair, tfserving_files):
    _, front = pair
    expected = json.loads((tfserving_files / "half_plus_two_model_metadata.json").read_text())
    assert httpx.get(front.url + "/v1/models/default/metadata", timeout=10).json() == expected
    status = httpx.get(front.url + "/v1/models/default", timeout=10).json()
    assert [s["version"] for s in status["model_version_status"]] == ["123"]


@pytest.mark.slow
def test_upstream_down_fails_fast_and_recovery_is_automatic(pair, tfserving_dir):
    upstream, front = pair
    port = int(upstream.grpc_target.rsplit(":", 1)[1])
    outcomes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=front.url, timeout=30) as client:
            while not stop.is_set():
                outcomes.append(client.post("/v1/models/default:predict", json={"instances": [1.0]}).status_code)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_until(lambda: outcomes.count(200) > 20, what="load through the upstream")
        upstream.__exit__(None, None, None)  # the upstream dies mid-load
        wait_until(lambda: httpx.get(front.url + "/readyz", timeout=5).status_code == 503, what="readiness false")
        failed_at = len(outcomes)
        wait_until(lambda: len(outcomes) > failed_at + 20, what="requests while the upstream is down")
        assert set(outcomes[failed_at:]) == {503}, Counter(outcomes[failed_at:])  # fast and clean
        with Gateway(Settings(rest_api_port=free_port(), **upstream_settings(tfserving_dir, port))):
            wait_until(lambda: httpx.get(front.url + "/readyz", timeout=5).status_code == 200, what="recovery")
            recovered_at = len(outcomes)
            wait_until(lambda: outcomes[recovered_at:].count(200) > 20, what="answers after recovery")
            stop.set()
            thread.join(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert set(outcomes) <= {200, 503}, Counter(outcomes)
