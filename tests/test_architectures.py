"""Real architectures beyond our examples (tests/architectures.py), served without recorded
warm-up files: every answer over REST (row and columnar), gRPC Predict, the batch pipeline
and the streaming pipeline equals ``tf.saved_model.load(path).signatures[...]``'s on the same
inputs (floats to 1e-5, as ``same_answers``), whichever runner serves.

One gateway serves them all and moves each on its first ``LIVE_CALLS`` live calls, so its
answers are compared before the choice (TF2 functions) and after it (its final runner);
one batch pipeline runs every model, and one streaming pipeline per signature runs at once. The runner each ends on is
printed as a table at the end of the module.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from batch.model_handler import ModelLocation, open_model
from serving.settings import ModelConfig, Settings
from tests.architectures import ARCHITECTURES, Inputs
from tests.conftest import Gateway, free_port, require_pubsub_emulator, wait_until

pytestmark = pytest.mark.slow

LIVE_CALLS = 4  # fewer than the calls of the first pass, so the choice is made during it
PROJECT = "demo-project"
KEY = "row_key"  # the batch rows' key: no output is named so (lookup_module has an output "id")
CASES = [(arch, signature, index) for arch, spec in ARCHITECTURES.items()
         for signature, requests in spec.requests.items() for index in range(len(requests))]
TABLE: dict[str, dict[str, str]] = {arch: {} for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Each architecture's base path (version 1 under it)."""
    base = tmp_path_factory.mktemp("architectures")
    for arch, spec in ARCHITECTURES.items():
        spec.build(base / arch / "1")
    return {arch: base / arch for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def expected(built) -> dict[tuple[str, str, int], dict[str, np.ndarray]]:
    """``tf.saved_model.load``'s answer to every request."""
    answers = {}
    for arch, spec in ARCHITECTURES.items():
        signatures = tf.saved_model.load(str(built[arch] / "1")).signatures
        for signature, requests in spec.requests.items():
            for index, inputs in enumerate(requests):
                outputs = signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
                answers[arch, signature, index] = {k: v.numpy() for k, v in outputs.items()}
    return answers


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Print, at the end, which runner each architecture ended on and what was equal."""
    yield TABLE
    columns = ["gateway runner", "rest rows", "rest columns", "grpc", "batch runner", "batch", "streaming runner",
               "streaming"]
    lines = ["| architecture | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += [f"| {arch} | " + " | ".join(row.get(c, "not run") for c in columns) + " |" for arch, row in TABLE.items()]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


def assert_same(got: dict[str, Any], want: dict[str, np.ndarray], where: str) -> None:
    assert sorted(got) == sorted(want), where
    for name, value in want.items():
        have = np.asarray(got[name])
        if value.dtype == object:
            have = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(have)
            assert have.tolist() == value.tolist(), f"{where}: {name}"
        else:
            assert have.shape == value.shape, f"{where}: {name} {have.shape} != {value.shape}"
            if value.dtype.kind == "f":
                np.testing.assert_allclose(have, value, rtol=1e-5, atol=1e-6, err_msg=f"{where}: {name}")
            else:
                np.testing.assert_array_equal(have, value, err_msg=f"{where}: {name}")


def jsonable(value: np.ndarray) -> list:
    if value.dtype == object:
        return np.vectorize(lambda v: v.decode(), otypes=[object])(value).tolist()
    return value.tolist()


def rows_of(inputs: Inputs) -> list[dict[str, Any]]:
    columns = {name: jsonable(value) for name, value in inputs.items()}
    return [{name: values[i] for name, values in columns.items()} for i in range(len(next(iter(inputs.values()))))]


def from_rows(predictions: list, names: list[str]) -> dict[str, Any]:
    """TF Serving's row answer: plain values for one output, an object per row for several."""
    if len(names) == 1:
        return {names[0]: predictions}
    return {name: [row[name] for row in predictions] for name in names}


def from_columns(outputs: Any, names: list[str]) -> dict[str, Any]:
    return {names[0]: outputs} if len(names) == 1 else outputs


@pytest.fixture(scope="module")
def gateway(built):
    models = tuple(ModelConfig(name=arch, base_path=str(path)) for arch, path in built.items())
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models, tf2_session_live_calls=LIVE_CALLS)
    with Gateway(settings) as running:
        yield running


def runners(gateway: Gateway) -> dict[str, dict]:
    return {v["model"]: v for v in httpx.get(gateway.url + "/runners", timeout=10).json()["versions"]}


def ask_everything(gateway: Gateway, expected, stage: str) -> None:
    """Every request over REST rows, REST columns and gRPC, each answer compared."""
    with httpx.Client(base_url=gateway.url, timeout=60) as client, grpc.insecure_channel(gateway.grpc_target) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        for arch, signature, index in CASES:
            inputs = ARCHITECTURES[arch].requests[signature][index]
            want = expected[arch, signature, index]
            names = sorted(want)
            where = f"{arch}:{signature}#{index} {stage}"
            url = f"/v1/models/{arch}:predict"
            response = client.post(url, json={"signature_name": signature, "instances": rows_of(inputs)})
            assert response.status_code == 200, f"{where}: {response.text}"
            assert_same(from_rows(response.json()["predictions"], names), want, f"{where} REST rows")
            body = {"signature_name": signature, "inputs": {k: jsonable(v) for k, v in inputs.items()}}
            response = client.post(url, json=body)
            assert response.status_code == 200, f"{where}: {response.text}"
            assert_same(from_columns(response.json()["outputs"], names), want, f"{where} REST columns")
            request = predict_pb2.PredictRequest()
            request.model_spec.name = arch
            request.model_spec.signature_name = signature
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            answer = stub.Predict(request, timeout=60)
            assert_same({k: tf.make_ndarray(v) for k, v in answer.outputs.items()}, want, f"{where} gRPC")


@pytest.mark.slow
def test_the_gateway_answers_as_tf_saved_model_load(gateway, expected):
    assert {arch: v["state"] for arch, v in runners(gateway).items()} == {arch: "comparing" for arch in ARCHITECTURES}
    ask_everything(gateway, expected, "while the runner is chosen")
    wait_until(lambda: all(v["state"] == "settled" for v in runners(gateway).values()), timeout=300,
               what="every model's runner chosen on its live calls")
    ask_everything(gateway, expected, "on the chosen runner")
    for arch, shown in runners(gateway).items():
        assert shown["evidence"] == "live_requests", shown
        TABLE[arch].update({"gateway runner": f"{shown['runner']} ({shown['evidence']})",
                            "rest rows": "yes", "rest columns": "yes", "grpc": "yes"})


def pipeline_choice(location: ModelLocation) -> str:
    """The runner the pipeline's model ran on (the process-level cache holds the model it used)."""
    choice = open_model(location)[1].choice
    return f"{choice.runner} ({choice.evidence})"


def write_inputs(folder: Path, arch: str, signature: str) -> str:
    """One JSON lines file per request (a chunk each: a request's rows share one shape)."""
    folder.mkdir(parents=True)
    for index, inputs in enumerate(ARCHITECTURES[arch].requests[signature]):
        lines = [json.dumps({**row, KEY: f"{index}:{n}"}) for n, row in enumerate(rows_of(inputs))]
        (folder / f"in-{index}.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder / "in-*.jsonl")


class Composite(beam.PTransform):
    """A pipeline's ``build(pipeline, job)`` as a named transform, so several jobs share one
    pipeline (their transforms labelled under the job's name)."""

    def __init__(self, build: Callable[[Any, Any], None], job: Any) -> None:
        super().__init__()
        self._build, self._job = build, job

    def expand(self, begin: Any) -> Any:
        self._build(begin, self._job)
        return beam.pvalue.PDone(begin.pipeline)


@pytest.mark.slow
def test_the_batch_pipeline_answers_as_tf_saved_model_load(built, expected, tmp_path):
    from batch.pipeline import BatchJob, build

    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    outputs = {}
    for arch, spec in ARCHITECTURES.items():
        for signature in spec.requests:
            folder = tmp_path / arch / signature
            outputs[arch, signature] = folder / "out"
            job = BatchJob(write_inputs(folder, arch, signature), str(folder / "out"),
                           ModelLocation(str(built[arch])), signature, key_field=KEY)
            pipeline | f"{arch}-{signature}" >> Composite(build, job)
    pipeline.run().wait_until_finish()
    for (arch, signature), prefix in outputs.items():
        errors = [line for path in prefix.parent.glob("out-errors-*") for line in path.read_text().splitlines()]
        assert errors == [], errors[:3]
        records = {r[KEY]: r for path in prefix.parent.glob("out-0*.jsonl")
                   for r in map(json.loads, path.read_text().splitlines())}
        for index in range(len(ARCHITECTURES[arch].requests[signature])):
            want = expected[arch, signature, index]
            rows = [records[f"{index}:{n}"] for n in range(len(next(iter(want.values()))))]
            assert_same({name: [r[name] for r in rows] for name in want}, want, f"{arch}:{signature}#{index} batch")
    for arch in ARCHITECTURES:
        TABLE[arch].update({"batch runner": pipeline_choice(ModelLocation(str(built[arch]))), "batch": "yes"})


@pytest.mark.slow
def test_the_streaming_pipeline_answers_as_tf_saved_model_load(built, expected):
    require_pubsub_emulator()
    from google.cloud import pubsub_v1

    from loadtests.support.emulator import pubsub_emulator
    from streaming.pipeline import StreamJob, build

    with pubsub_emulator(PROJECT):
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

        def topic(name: str) -> tuple[str, str]:
            path = publisher.topic_path(PROJECT, name)
            publisher.create_topic(name=path)
            subscription = subscriber.subscription_path(PROJECT, f"{name}-sub")
            subscriber.create_subscription(name=subscription, topic=path)
            return path, subscription

        answers, dead = topic("answers"), topic("dead")
        sources, results = {}, []
        try:
            for arch, spec in ARCHITECTURES.items():
                location = ModelLocation(str(built[arch]), model_name="streaming")  # its own load, not the batch job's
                for signature in spec.requests:
                    # A pipeline each: the local runner pulls its sources one at a time on one
                    # thread, each pull waiting up to 30 s on an empty subscription.
                    sources[arch, signature] = topic(f"in-{arch}-{signature}".replace("_", "-"))
                    job = StreamJob(output_topic=answers[0], dead_letter_topic=dead[0],
                                    input_subscription=sources[arch, signature][1], model=location,
                                    signature_name=signature)
                    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"]))
                    build(pipeline, job)
                    results.append(pipeline.run())
            sent = {}
            for arch, signature, index in CASES:
                rows = rows_of(ARCHITECTURES[arch].requests[signature][index])
                message_id = publisher.publish(sources[arch, signature][0], json.dumps(rows).encode(),
                                               case=f"{arch}|{signature}|{index}").result(timeout=30)
                sent[message_id] = (arch, signature, index)
            received: dict[str, list] = {"answers": [], "dead": []}

            def drain() -> bool:
                for kind, (_, subscription) in (("answers", answers), ("dead", dead)):
                    pulled = subscriber.pull(subscription=subscription, max_messages=100, timeout=5,
                                             return_immediately=True).received_messages
                    if pulled:
                        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in pulled])
                        received[kind] += [m.message for m in pulled]
                return len(received["answers"]) + len(received["dead"]) >= len(sent)

            wait_until(drain, timeout=300, what="every message answered")
        finally:
            for source, _ in sources.values():  # the local runner's cancel waits for its blocking pull
                publisher.publish(source, b"{}")
            for result in results:
                result.cancel()
    assert [m.attributes["error"] for m in received["dead"]] == []
    assert sorted(m.attributes["input_message_id"] for m in received["answers"]) == sorted(sent)
    for message in received["answers"]:
        arch, signature, index = message.attributes["case"].split("|")
        want = expected[arch, signature, int(index)]
        predictions = json.loads(message.data)["predictions"]
        assert_same({name: [row[name] for row in predictions] for name in want}, want,
                    f"{arch}:{signature}#{index} streaming")
    for arch in ARCHITECTURES:
        location = ModelLocation(str(built[arch]), model_name="streaming")
        TABLE[arch].update({"streaming runner": pipeline_choice(location), "streaming": "yes"})
