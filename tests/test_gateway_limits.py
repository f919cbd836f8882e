"""Deadlines, a full queue, disconnects and SIGTERM, on a real gateway and real models.

The in-process tests serve a model held on an event (``held_model``): a request whose
``hold`` input is set waits inside the model until the test opens the gate, so a test keeps
the single execution slot busy exactly as long as it needs, whatever the machine's speed,
and polls the server's own metrics for the state it wants instead of sleeping.

The SIGTERM test runs the server in a process of its own, which that event cannot reach: it
uses the slow model of tests/conftest.py (a TF loop of ``max(spin)`` steps) and checks that
requests were in flight when the signal came.
"""
from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from loadtests.support.processes import Server
from serving.settings import BatchingConfig, ModelConfig
from tests.conftest import Gate, free_port, wait_until


@pytest.fixture(scope="module")
def slow_model_dir(tmp_path_factory) -> Path:
    """A real SavedModel whose cost the caller chooses: y = x + 1 after max(spin) loop steps.

    Lets tests hold the model busy for as long as they need, with no fake in the server.
    """
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int64, name="spin")])
        def serve(self, x, spin):
            steps = tf.reduce_max(tf.concat([spin, tf.zeros([1], tf.int64)], 0))
            _, acc = tf.while_loop(lambda i, a: i < steps, lambda i, a: (i + 1, a * 0.5 + 1.0),
                                   (tf.constant(0, tf.int64), tf.constant(0.0)))
            return {"y": x + 1.0 + 0.0 * acc}

    base = tmp_path_factory.mktemp("slow")
    module = Slow()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


@pytest.fixture
def held_gateway(gateway_factory, held_model, gate):
    # gateway_factory before gate: the gate opens at teardown before the gateways stop.
    """Start an in-process gateway serving the held model as "held", one execution slot."""

    def start(**batching):
        options = dict(max_batch_size=8, batch_timeout_micros=1000, max_enqueued_batches=4,
                       num_batch_threads=1)
        options.update(batching)
        base, _ = held_model
        return gateway_factory(models=(ModelConfig(name="held", base_path=str(base)),),
                               enable_batching=True, batching=BatchingConfig(**options))

    return start


def body(x: float, spin: int = 0) -> dict:
    return {"instances": [{"x": x, "spin": spin}]}


def held_body(x: float, hold: bool = False) -> dict:
    return {"instances": [{"x": x, "hold": int(hold)}]}


def predict(gateway, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/models/held:predict", json=body, timeout=120, **kwargs)


def start_busy_request(gateway, gate: Gate) -> tuple[ThreadPoolExecutor, object]:
    """Send a held request and wait until it is running, stopped at the gate."""
    pool = ThreadPoolExecutor(4)
    future = pool.submit(predict, gateway, held_body(1.0, hold=True))
    wait_until(lambda: gate.waiting == 1, what="the busy request to reach the gate")
    assert gateway.metric("tfgw_queue_depth_rows", model="held") == 0
    return pool, future


def metric(gateway, name: str, **labels: str) -> float:
    return gateway.metric(name, model="held", **labels)


def test_deadline_expiring_in_queue_gives_504_and_model_never_runs_it(held_gateway, gate):
    gateway = held_gateway()
    pool, busy = start_busy_request(gateway, gate)
    late = predict(gateway, held_body(5.0), headers={"X-Request-Timeout-Ms": "200"})
    assert late.status_code == 504, late.text
    assert "Deadline exceeded while the request waited in the batch queue" in late.json()["error"]
    gate.open()
    assert busy.result().json() == {"predictions": [2.0]}
    assert metric(gateway, "tfgw_batch_size_rows_count") == 1  # only the busy one ran
    assert metric(gateway, "tfgw_rejections_total", reason="deadline") == 1
    pool.shutdown()


def test_full_queue_gives_429_with_retry_after(held_gateway, gate):
    gateway = held_gateway(max_batch_size=2, max_enqueued_batches=1)
    pool, busy = start_busy_request(gateway, gate)
    queued = [pool.submit(predict, gateway, held_body(x)) for x in (10.0, 20.0)]
    wait_until(lambda: metric(gateway, "tfgw_queue_depth_rows") == 2, what="two queued rows")
    refused = predict(gateway, held_body(3.0))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["error"]
    gate.open()
    assert busy.result().status_code == 200
    assert [f.result().json() for f in queued] == [{"predictions": [11.0]}, {"predictions": [21.0]}]
    pool.shutdown()


def test_client_disconnect_removes_the_request_from_the_queue(held_gateway, gate):
    gateway = held_gateway()
    pool, busy = start_busy_request(gateway, gate)
    payload = json.dumps(held_body(7.0)).encode()
    head = (f"POST /v1/models/held:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.settings.rest_api_port)) as client:
        client.sendall(head.encode() + payload)
        wait_until(lambda: metric(gateway, "tfgw_queue_depth_rows") == 1, what="the request to queue")
    # The client has hung up while its request waits behind the busy one.
    wait_until(lambda: metric(gateway, "tfgw_rejections_total", reason="cancelled") == 1,
               what="the disconnect to be noticed")
    assert metric(gateway, "tfgw_queue_depth_rows") == 0
    gate.open()
    assert busy.result().status_code == 200
    assert metric(gateway, "tfgw_batch_size_rows_count") == 1  # the abandoned request never ran
    pool.shutdown()


@pytest.mark.slow
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
    drained = [r for r in records if r[0] < term_at < r[1] and r[3][0] == 200]
    assert drained, "no request in flight at SIGTERM was answered: the test proved nothing"
    for _, ended, x, (status, answer) in records:
        if ended < term_at:
            assert status == 200, (x, status, answer)
        # A request sent just before the signal may reach the server after it and be refused
        # at the door; one the server accepted is answered, and rightly (not "unloaded").
        assert status in (200, 503, "refused"), (x, status, answer)
        if status == 200:
            assert answer == {"predictions": [x + 1.0]}, x
        if status == 503:
            assert "shutting down" in answer["error"], answer
    log = server.log_path.read_text()
    assert "drained" in log, log


def test_metrics_at_the_monitoring_config_path(gateway_factory, tfserving_dir):
    gateway = gateway_factory(
        models=(ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),),
        metrics_path="/monitoring/prometheus/metrics")
    httpx.post(gateway.url + "/v1/models/default:predict", json={"instances": [1.0]}, timeout=30)
    text = httpx.get(gateway.url + "/monitoring/prometheus/metrics", timeout=30).text
    assert 'tfgw_requests_total{api="tfserving",code="OK",method="predict",model="default"} 1.0' in text
    assert httpx.get(gateway.url + "/metrics", timeout=30).status_code == 404
