"""Deadlines, a full queue, disconnects and SIGTERM, on a real gateway and a real slow model.

The slow model (tests/conftest.py) runs a TF loop of ``max(spin)`` steps, so a test can
keep the single execution slot busy for as long as it needs and poll the server's own
metrics for the state it wants, instead of sleeping.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from loadtests.processes import Server
from serving.settings import BatchingConfig, ModelConfig
from tests.conftest import free_port, wait_until

BUSY_SPIN = 600_000  # a few seconds of model time on this machine


def slow_settings(slow_model_dir, **batching) -> dict:
    options = dict(max_batch_size=8, batch_timeout_micros=1000, max_enqueued_batches=4,
                   num_batch_threads=1)
    options.update(batching)
    return dict(models=(ModelConfig(name="slow", base_path=str(slow_model_dir)),),
                enable_batching=True, batching=BatchingConfig(**options))


def body(x: float, spin: int = 0) -> dict:
    return {"instances": [{"x": x, "spin": spin}]}


def start_busy_request(gateway) -> "tuple[ThreadPoolExecutor, object]":
    """Send a long request and wait until it has left the queue and is running."""
    pool = ThreadPoolExecutor(4)
    future = pool.submit(httpx.post, gateway.url + "/v1/models/slow:predict",
                         json=body(1.0, BUSY_SPIN), timeout=120)
    wait_until(lambda: gateway.metric("tfgw_in_flight_requests") == 1
               and gateway.metric("tfgw_queue_depth_rows", model="slow") == 0
               and gateway.metric("tfgw_queue_wait_seconds_count", model="slow") == 1,
               what="the busy request to run")
    return pool, future


def test_deadline_expiring_in_queue_gives_504_and_model_never_runs_it(gateway_factory, slow_model_dir):
    gateway = gateway_factory(**slow_settings(slow_model_dir))
    pool, busy = start_busy_request(gateway)
    late = httpx.post(gateway.url + "/v1/models/slow:predict", json=body(5.0),
                      headers={"X-Request-Timeout-Ms": "200"}, timeout=60)
    assert late.status_code == 504, late.text
    assert "Deadline" in late.json()["error"]
    assert busy.result().json() == {"predictions": [2.0]}
    assert gateway.metric("tfgw_batch_size_rows_count", model="slow") == 1  # only the busy one ran
    assert gateway.metric("tfgw_rejections_total", model="slow", reason="deadline") == 1
    pool.shutdown()


def test_full_queue_gives_429_with_retry_after(gateway_factory, slow_model_dir):
    gateway = gateway_factory(**slow_settings(slow_model_dir, max_batch_size=2, max_enqueued_batches=1))
    pool, busy = start_busy_request(gateway)
    queued = [pool.submit(httpx.post, gateway.url + "/v1/models/slow:predict", json=body(i), timeout=120)
              for i in (10.0, 20.0)]
    wait_until(lambda: gateway.metric("tfgw_queue_depth_rows", model="slow") == 2, what="two queued rows")
    refused = httpx.post(gateway.url + "/v1/models/slow:predict", json=body(3.0), timeout=60)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["error"]
    assert busy.result().status_code == 200
    assert [f.result().json() for f in queued] == [{"predictions": [11.0]}, {"predictions": [21.0]}]
    pool.shutdown()


def test_client_disconnect_removes_the_request_from_the_queue(gateway_factory, slow_model_dir):
    gateway = gateway_factory(**slow_settings(slow_model_dir))
    pool, busy = start_busy_request(gateway)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/models/slow:predict", json=body(7.0), timeout=0.5)
    wait_until(lambda: gateway.metric("tfgw_rejections_total", model="slow", reason="cancelled") == 1,
               what="the disconnect to be noticed")
    assert gateway.metric("tfgw_queue_depth_rows", model="slow") == 0
    assert busy.result().status_code == 200
    assert gateway.metric("tfgw_batch_size_rows_count", model="slow") == 1
    pool.shutdown()


def test_sigterm_under_load_loses_no_accepted_request(slow_model_dir, tmp_path):
    port = free_port()
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
                        "num_batch_threads { value: 1 }\n")
    server = Server(
        "gateway",
        [sys.executable, "-m", "serving", "--port=0", f"--rest_api_port={port}", "--model_name=slow",
         f"--model_base_path={slow_model_dir}", "--enable_batching",
         f"--batching_parameters_file={batching}", "--drain_timeout_seconds=60"],
        tmp_path / "gateway.log", port, ready_timeout=120)
    url = server.url
    try:
        server.wait_ready()
        records: list[tuple[float, float, str, object]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                n = 0
                while not stop.is_set():
                    x = float(worker * 1000 + n)
                    n += 1
                    started = time.monotonic()
                    try:
                        response = http.post("/v1/models/slow:predict", json=body(x, 20_000))
                        outcome = (response.status_code, response.json())
                    except (httpx.ConnectError, httpx.RemoteProtocolError) as error:
                        outcome = ("refused", repr(error))  # never read by the server
                    with lock:
                        records.append((started, time.monotonic(), x, outcome))
                    if outcome[0] != 200:
                        return

        threads = [threading.Thread(target=client, args=(w,)) for w in range(16)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(records) >= 50, what="load to build up")
        term_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        def not_ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=5).status_code == 503
            except httpx.TransportError:
                return True  # already gone

        wait_until(not_ready, what="readiness to turn false")
        for thread in threads:
            thread.join(timeout=120)
        stop.set()
        assert server.proc.wait(timeout=120) == 0
    finally:
        server.stop()
    in_flight_at_term = [r for r in records if r[0] < term_at < r[1]]
    assert in_flight_at_term, "no request was in flight at SIGTERM: the test proved nothing"
    for started, _, x, (status, answer) in records:
        if started < term_at:
            assert status == 200, (x, status, answer)
            assert answer == {"predictions": [x + 1.0]}
        else:
            assert status in (200, 503, "refused"), (x, status, answer)
            if status == 503:
                assert "shutting down" in answer["error"]
    log = server.log_path.read_text()
    assert "drained" in log, log


def test_metrics_at_the_monitoring_config_path(gateway_factory, tfserving_dir):
    gateway = gateway_factory(
        models=(ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),),
        metrics_path="/monitoring/prometheus/metrics")
    httpx.post(gateway.url + "/v1/models/default:predict", json={"instances": [1.0]}, timeout=30)
    text = httpx.get(gateway.url + "/monitoring/prometheus/metrics", timeout=30).text
    assert 'tfgw_requests_total{code="OK",method="predict",model="default"} 1.0' in text
    assert httpx.get(gateway.url + "/metrics", timeout=30).status_code == 404
