"""TF Serving's metrics and BatchingParameters on a real gateway.

The metrics are scraped from the gateway's monitoring path and read with prometheus_client's
text parser, after real REST and gRPC requests (answered and failing): names, labels,
counts, bucket boundaries and units as TF Serving exports them (see serving/metrics.py for
the TF Serving source of each). Large batch splitting runs TF Serving's half_plus_two.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.settings import ModelConfig
from serving.tfs_config import read_batching_parameters_file
from tests.conftest import free_port

TFS = ":tensorflow:serving:"


def scrape(gateway, path: str = "/metrics") -> tuple[str, dict]:
    """The raw exposition and its families by name, as a Prometheus server would read them."""
    text = httpx.get(gateway.url + path, timeout=30).text
    return text, {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, suffix: str = "", **labels: str) -> list:
    """The family's samples named NAME+suffix whose labels include ``labels``."""
    return [s for s in family.samples if s.name == family.name + suffix
            and all(s.labels.get(k) == v for k, v in labels.items())]


def value(family, suffix: str = "", **labels: str) -> float:
    found = samples(family, suffix, **labels)
    assert len(found) == 1, (family.name, suffix, labels, family.samples)
    return found[0].value


def bucket_bounds(family, **labels: str) -> list[str]:
    return [s.labels["le"] for s in samples(family, "_bucket", **labels)]


def predict_request(model: str, x) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
    return request


def half_plus_two(tfserving_dir: Path) -> tuple[ModelConfig, ...]:
    return (ModelConfig(name="half", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)


def batching_file(tmp_path: Path, text: str):
    path = tmp_path / "batching.config"
    path.write_text(text, encoding="utf-8")
    return read_batching_parameters_file(path)


def test_tf_serving_metrics_after_rest_and_grpc_requests(gateway_factory, tfserving_dir, tmp_path):
    batching = batching_file(tmp_path, 'max_batch_size { value: 8 } batch_timeout_micros { value: 0 }'
                                       ' thread_pool_name { value: "tp" }')
    gateway = gateway_factory(models=half_plus_two(tfserving_dir), port=free_port(),
                              enable_batching=True, batching=batching)
    predict = gateway.url + "/v1/models/half:predict"
    client_started = time.perf_counter()

    # One answered REST request alone first: TF Serving's microseconds against our seconds.
    assert httpx.post(predict, json={"instances": [1.0, 2.0]}, timeout=30).json() == {
        "predictions": [2.5, 3.0]}
    _, families = scrape(gateway)
    ours = gateway.metric("tfgw_request_duration_seconds_sum", model="half", method="predict", api="tfserving")
    tfs_us = value(families[TFS + "request_latency"], "_sum",
                   model_name="half", API="predict", entrypoint="REST")
    assert tfs_us == pytest.approx(ours * 1e6, rel=1e-9)  # the same interval, in microseconds

    # More traffic, answered and failing, on both APIs.
    assert httpx.post(predict, json={"instances": [3.0]}, timeout=30).status_code == 200
    assert httpx.post(gateway.url + "/v1/models/half:regress", timeout=30,
                      json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
                      ).json() == {"results": [3.0]}
    assert httpx.post(predict, json={"instances": [[1.0], [2.0, 3.0]]}, timeout=30).status_code == 400
    assert httpx.post(gateway.url + "/v1/models/nope:predict", json={"instances": [1.0]},
                      timeout=30).status_code == 404
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for x in ([1.0], [2.0, 4.0, 6.0]):
            stub.Predict(predict_request("half", x), timeout=30)
        bad = predict_request("half", [1.0])
        bad.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(["a"])))  # a string for a float
        for request, code in ((bad, grpc.StatusCode.INVALID_ARGUMENT),
                              (predict_request("nope", [1.0]), grpc.StatusCode.NOT_FOUND)):
            with pytest.raises(grpc.RpcError) as failed:
                stub.Predict(request, timeout=30)
            assert failed.value.code() == code
    client_elapsed_us = (time.perf_counter() - client_started) * 1e6

    text, families = scrape(gateway)

    # request_count{model_name,status}: a counter named as TF Serving's exporter names it,
    # every request counted with its gRPC code name; unknown models count as "".
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="half",status="OK"} 5.0' in text
    count = families[TFS + "request_count"]
    assert count.type == "counter"
    assert {(s.labels["model_name"], s.labels["status"]): s.value for s in count.samples} == {
        ("half", "OK"): 5.0, ("half", "INVALID_ARGUMENT"): 2.0, ("", "NOT_FOUND"): 2.0}

    # request_latency{model_name,API,entrypoint}: answered requests only, in microseconds,
    # TF Serving's buckets: 10 · 1.8^i for i < 33, then +Inf.
    latency = families[TFS + "request_latency"]
    assert latency.type == "histogram"
    counts = {(s.labels["model_name"], s.labels["API"], s.labels["entrypoint"]): s.value
              for s in samples(latency, "_count")}
    assert counts == {("half", "predict", "REST"): 2.0, ("half", "regress", "REST"): 1.0,
                      ("half", "Predict", "GRPC"): 2.0}
    bounds = bucket_bounds(latency, API="Predict")
    assert bounds[:6] == ["10", "18", "32.4", "58.32", "104.976", "188.957"]
    assert len(bounds) == 34 and bounds[-1] == "+Inf"
    assert float(bounds[-2]) == pytest.approx(10 * 1.8 ** 32, rel=1e-5)
    total_us = sum(s.value for s in samples(latency, "_sum"))
    assert 0 < total_us < client_elapsed_us  # microseconds: within what the client measured

    # runtime_latency{model_name,API,runtime}: the model path (batch queue and run) of each
    # answered request, inside its request_latency.
    runtime = families[TFS + "runtime_latency"]
    assert {(s.labels["API"], s.labels["runtime"]): s.value for s in samples(runtime, "_count")} == {
        ("Predict", "TF1"): 4.0, ("Regress", "TF1"): 1.0}
    assert bucket_bounds(runtime, API="Predict") == bounds
    assert 0 < sum(s.value for s in samples(runtime, "_sum")) <= total_us

    # batching_session: TF Serving's session batching metrics, from the batcher.
    queuing = families[TFS + "batching_session:queuing_latency"]
    assert value(queuing, "_count", thread_pool_name="tp") == 5.0  # the requests queued
    queuing_bounds = bucket_bounds(queuing, thread_pool_name="tp")
    assert queuing_bounds[:4] == ["100", "120", "144", "172.8"] and len(queuing_bounds) == 53
    assert value(queuing, "_sum", thread_pool_name="tp") == pytest.approx(
        gateway.metric("tfgw_queue_wait_seconds_sum", model="half") * 1e6, rel=1e-6)
    inputs = families[TFS + "batching_session:input_batch_size"]
    assert (value(inputs, "_count"), value(inputs, "_sum")) == (5.0, 2 + 1 + 1 + 1 + 3)
    assert bucket_bounds(inputs) == [str(2 ** i) for i in range(14)] + ["+Inf"]
    processed = families[TFS + "batching_session:processed_batch_size"]
    calls = gateway.metric("tfgw_batch_size_rows_count", model="half")
    assert value(processed, "_count") == calls and value(processed, "_sum") == 8.0
    runs = families[TFS + "batching_session:wrapped_run_count"]
    assert runs.type == "counter" and runs.samples[0].value == calls
    assert "# TYPE :tensorflow:serving:batching_session:wrapped_run_count counter" in text
    padding = families[TFS + "batching_session:padding_size"]
    assert sum(s.value for s in samples(padding, "_sum")) == 0.0  # no allowed_batch_sizes

    # Process, GC and platform collectors.
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "python_gc_collections",
                 "python_info"):
        assert name in families, name


def test_no_batching_session_metrics_without_batching(gateway_factory, tfserving_dir):
    gateway = gateway_factory(models=half_plus_two(tfserving_dir))
    assert httpx.post(gateway.url + "/v1/models/half:predict", json={"instances": [1.0]},
                      timeout=30).status_code == 200
    _, families = scrape(gateway)
    assert value(families[TFS + "request_count"], "_total", model_name="half", status="OK") == 1.0
    for name in ("queuing_latency", "input_batch_size", "processed_batch_size", "padding_size",
                 "wrapped_run_count"):
        assert families[TFS + "batching_session:" + name].samples == [], name


def test_large_batch_splitting_runs_calls_of_max_execution_batch_size(
        gateway_factory, tfserving_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="serving.tfs_config"):
        batching = batching_file(tmp_path, """
            max_batch_size { value: 16 }
            enable_large_batch_splitting { value: true }
            max_execution_batch_size { value: 4 }
            allowed_batch_sizes: 3
            allowed_batch_sizes: 4
            batch_timeout_micros { value: 0 }
            max_enqueued_batches { value: 8 }
            num_batch_threads { value: 1 }
            thread_pool_name { value: "split" }
        """)
    assert caplog.records == []  # every field set here acts
    gateway = gateway_factory(models=half_plus_two(tfserving_dir), enable_batching=True,
                              batching=batching)
    predict = gateway.url + "/v1/models/half:predict"

    x = [float(i) for i in range(10)]  # more rows than max_execution_batch_size
    answer = httpx.post(predict, json={"instances": x}, timeout=30)
    assert answer.json() == {"predictions": [v / 2 + 2 for v in x]}

    # The model saw 4 + 4 + 2 rows, the last padded to the allowed size 3: no call over 4.
    assert gateway.metric("tfgw_batch_size_rows_count", model="half") == 3
    assert gateway.metric("tfgw_batch_size_rows_sum", model="half") == 10
    assert gateway.metric("tfgw_batch_size_rows_bucket", model="half", le="4.0") == 3
    assert gateway.metric("tfgw_batch_size_rows_bucket", model="half", le="2.0") == 1
    _, families = scrape(gateway)
    processed = families[TFS + "batching_session:processed_batch_size"]
    assert (value(processed, "_count"), value(processed, "_sum")) == (3.0, 4 + 4 + 3)
    assert value(processed, "_bucket", le="4") == 3.0
    padding = families[TFS + "batching_session:padding_size"]
    assert value(padding, "_sum", execution_batch_size="3") == 1.0
    assert value(padding, "_sum", execution_batch_size="4") == 0.0

    # max_batch_size bounds a request, as TF Serving's input_batch_size_limit.
    refused = httpx.post(predict, json={"instances": [1.0] * 17}, timeout=30)
    assert refused.status_code == 400
    assert refused.json() == {"error": "Task size 17 is larger than maximum input batch size 16"}
    assert httpx.post(predict, json={"instances": [1.0] * 16}, timeout=30).json() == {
        "predictions": [2.5] * 16}
    assert gateway.metric("tfgw_batch_size_rows_count", model="half") == 3 + 4
