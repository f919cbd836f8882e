"""Pub/Sub -> natality -> Pub/Sub on Beam's local streaming runner, against the real Pub/Sub
emulator (started here; without it the tests skip, and fail under CI=true: tests/conftest.py)."""
from __future__ import annotations

import json
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from batch.model_handler import ModelLocation
from loadtests.support.emulator import pubsub_emulator
from serving.examples import natality
from streaming.pipeline import StreamJob, build
from tests.conftest import require_pubsub_emulator, wait_until

PROJECT = "demo-project"


@pytest.fixture(scope="module")
def emulator():
    require_pubsub_emulator()
    with pubsub_emulator(PROJECT) as host:
        yield host


def stop(result, publisher, source: str) -> None:
    """Cancel the pipeline. Beam's DirectRunner reads Pub/Sub with a blocking pull of up to
    30 s, and its cancel waits for that pull: one more message on the source ends it at once."""
    publisher.publish(source, b"{}")
    result.cancel()


def topic_and_subscription(publisher, subscriber, name: str) -> tuple[str, str]:
    topic = publisher.topic_path(PROJECT, f"{name}-topic")
    subscription = subscriber.subscription_path(PROJECT, f"{name}-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    return topic, subscription


@pytest.mark.slow
def test_messages_are_answered_or_dead_lettered_one_for_one(emulator, models_dir):
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    source, source_sub = topic_and_subscription(publisher, subscriber, "in")
    output, output_sub = topic_and_subscription(publisher, subscriber, "out")
    dead, dead_sub = topic_and_subscription(publisher, subscriber, "dead")
    job = StreamJob(output_topic=output, dead_letter_topic=dead, input_subscription=source_sub,
                    model=ModelLocation(str(models_dir / "natality")))
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"]))
    build(pipeline, job)
    result = pipeline.run()
    try:
        columns = natality.sample_rows(24, seed=31)
        rows = [{k: v.tolist()[i] for k, v in columns.items()} for i in range(24)]
        good = [{"id": i, **rows[i]} for i in range(16)] + [[rows[16], rows[17]], [rows[18]]]
        bad = [b"not json", json.dumps({"id": 99, "is_male": "True"}).encode(),
               json.dumps({**rows[19], "is_male": "maybe"}).encode(), b"[]"]
        sent = {}
        for n, body in enumerate([json.dumps(g).encode() for g in good] + bad):
            message_id = publisher.publish(source, body, origin="test", n=str(n)).result(timeout=30)
            sent[message_id] = body
        received: dict[str, list] = {"out": [], "dead": []}

        def drain() -> bool:
            for kind, sub in (("out", output_sub), ("dead", dead_sub)):
                response = subscriber.pull(subscription=sub, max_messages=50, timeout=5,
                                           return_immediately=True)
                if response.received_messages:
                    subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in response.received_messages])
                    received[kind] += [m.message for m in response.received_messages]
            return len(received["out"]) + len(received["dead"]) >= len(sent)

        wait_until(drain, timeout=180, what="every message answered")
    finally:
        stop(result, publisher, source)
    assert len(received["out"]) == len(good) and len(received["dead"]) == len(bad)
    answered = [m.attributes["input_message_id"] for m in received["out"] + received["dead"]]
    assert sorted(answered) == sorted(sent)  # one for one
    for message in received["out"]:
        assert message.attributes["origin"] == "test" and message.attributes["model_version"] == "1"
        body = json.loads(message.data)
        source_doc = json.loads(sent[message.attributes["input_message_id"]])
        inputs = source_doc if isinstance(source_doc, list) else [source_doc]
        predictions = body["predictions"] if isinstance(source_doc, list) else [body["predictions"]]
        expected = natality.expected_weight(**{k: np.array([r[k] for r in inputs]) for k in columns})
        got = np.array([p["weight_pounds"] for p in predictions])
        assert np.abs(got - expected).max() < natality.TOLERANCE_POUNDS
    reasons = sorted(m.attributes["error"].split(":")[0] for m in received["dead"])
    assert reasons == ["inference failed", "missing input(s) ['gestation_weeks', 'mother_age', 'plurality']",
                       "no rows", "not JSON"]
    assert all(m.data == sent[m.attributes["input_message_id"]] for m in received["dead"])


def test_a_new_version_is_picked_up_mid_stream(emulator, models_dir, tmp_path):
    from google.cloud import pubsub_v1

    base = tmp_path / "natality"
    shutil.copytree(models_dir / "natality" / "1", base / "1")
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    source, source_sub = topic_and_subscription(publisher, subscriber, "v-in")
    output, output_sub = topic_and_subscription(publisher, subscriber, "v-out")
    dead, _ = topic_and_subscription(publisher, subscriber, "v-dead")
    job = StreamJob(output_topic=output, dead_letter_topic=dead, input_subscription=source_sub,
                    model=ModelLocation(str(base)), refresh_interval_s=1)
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"]))
    build(pipeline, job)
    result = pipeline.run()
    row = {k: v.tolist()[0] for k, v in natality.sample_rows(1, seed=3).items()}
    versions: list[str] = []

    def answered_by(version: str) -> bool:
        publisher.publish(source, json.dumps(row).encode()).result(timeout=30)
        response = subscriber.pull(subscription=output_sub, max_messages=50, timeout=5, return_immediately=True)
        if response.received_messages:
            subscriber.acknowledge(subscription=output_sub, ack_ids=[m.ack_id for m in response.received_messages])
            versions.extend(m.message.attributes["model_version"] for m in response.received_messages)
        return version in versions

    try:
        wait_until(lambda: answered_by("1"), timeout=180, what="answers from version 1")
        shutil.copytree(models_dir / "natality" / "1", tmp_path / "staging")
        (tmp_path / "staging").rename(base / "2")
        wait_until(lambda: answered_by("2"), timeout=180, what="answers from version 2")
    finally:
        stop(result, publisher, source)
    assert versions[0] == "1" and versions[-1] == "2"


@pytest.mark.parametrize("store", ["gs"], indirect=True)
@pytest.mark.slow
def test_a_model_in_a_bucket_serves_and_its_new_version_is_picked_up(emulator, store, store_env, models_dir):
    """``--model_base_path gs://...`` on the GCS emulator: resolved and loaded by the workers,
    and a version uploaded mid-stream answers the next messages."""
    from google.cloud import pubsub_v1

    base = f"{store.bucket()}/natality"
    store.upload_dir(models_dir / "natality" / "1", f"{base}/1")
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    source, source_sub = topic_and_subscription(publisher, subscriber, "gs-in")
    output, output_sub = topic_and_subscription(publisher, subscriber, "gs-out")
    dead, _ = topic_and_subscription(publisher, subscriber, "gs-dead")
    job = StreamJob(output_topic=output, dead_letter_topic=dead, input_subscription=source_sub,
                    model=ModelLocation(base), refresh_interval_s=1)
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"]))
    build(pipeline, job)
    result = pipeline.run()
    columns = natality.sample_rows(1, seed=5)
    row = {k: v.tolist()[0] for k, v in columns.items()}
    answers: list[tuple[str, float]] = []

    def answered_by(version: str) -> bool:
        publisher.publish(source, json.dumps(row).encode()).result(timeout=30)
        response = subscriber.pull(subscription=output_sub, max_messages=50, timeout=5, return_immediately=True)
        if response.received_messages:
            subscriber.acknowledge(subscription=output_sub, ack_ids=[m.ack_id for m in response.received_messages])
            answers.extend((m.message.attributes["model_version"],
                            json.loads(m.message.data)["predictions"]["weight_pounds"])
                           for m in response.received_messages)
        return any(v == version for v, _ in answers)

    try:
        wait_until(lambda: answered_by("1"), timeout=180, what="answers from version 1 in the bucket")
        store.upload_dir(models_dir / "natality" / "1", f"{base}/2")
        wait_until(lambda: answered_by("2"), timeout=180, what="answers from version 2 uploaded mid-stream")
    finally:
        stop(result, publisher, source)
    assert answers[0][0] == "1" and answers[-1][0] == "2"
    expected = natality.expected_weight(**columns)[0]
    assert all(abs(weight - expected) < natality.TOLERANCE_POUNDS for _, weight in answers)


@pytest.mark.slow
def test_the_microservice_approach_answers_through_the_gateway_over_grpc(emulator, models_dir, gateway_factory):
    """``--prediction_service``: the model is called on a gateway's PredictionService."""
    from google.cloud import pubsub_v1

    from serving.settings import ModelConfig
    from tests.conftest import free_port

    gateway = gateway_factory(port=free_port(), enable_batching=True,
                              models=(ModelConfig(name="natality", base_path=str(models_dir / "natality")),))
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    source, source_sub = topic_and_subscription(publisher, subscriber, "g-in")
    output, output_sub = topic_and_subscription(publisher, subscriber, "g-out")
    dead, _ = topic_and_subscription(publisher, subscriber, "g-dead")
    job = StreamJob(output_topic=output, dead_letter_topic=dead, input_subscription=source_sub,
                    model=ModelLocation(service=gateway.grpc_target, model_name="natality"))
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming", "--runner=DirectRunner"]))
    build(pipeline, job)
    result = pipeline.run()
    columns = natality.sample_rows(6, seed=7)
    rows = [{"id": i, **{k: v.tolist()[i] for k, v in columns.items()}} for i in range(6)]
    answers: dict[int, float] = {}

    def drain() -> bool:
        response = subscriber.pull(subscription=output_sub, max_messages=50, timeout=5, return_immediately=True)
        if response.received_messages:
            subscriber.acknowledge(subscription=output_sub, ack_ids=[m.ack_id for m in response.received_messages])
            for m in response.received_messages:
                body = json.loads(m.message.data)
                answers[body["id"]] = body["predictions"]["weight_pounds"]
        return len(answers) >= len(rows)

    try:
        for row in rows:
            publisher.publish(source, json.dumps(row).encode())
        wait_until(drain, timeout=120, what="every message answered through the gateway")
    finally:
        stop(result, publisher, source)
    expected = natality.expected_weight(**columns)
    assert sorted(answers) == list(range(6))
    assert all(abs(answers[i] - expected[i]) < natality.TOLERANCE_POUNDS for i in range(6))
    assert gateway.metric("tfgw_requests_total", model="natality", method="predict", code="OK", api="tfserving") >= 1
