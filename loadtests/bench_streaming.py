"""``make bench-streaming``: end-to-end latency of streaming/run.py through the Pub/Sub
emulator, minibatched across messages vs one message per model call, at two rates.

Messages are published at a fixed rate (open loop) with their publish time; latency is the
time from publish to the output message's arrival at a subscriber. Local DirectRunner
numbers: they say how the two settings compare here, not what Dataflow does.

    python -m loadtests.bench_streaming [--rates 20,100] [--seconds 20]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.emulator import pubsub_emulator
from loadtests.processes import REPO, Job, log, wait_until

PROJECT = "bench-project"
SETTINGS = {"minibatched (10 ms, up to 256 messages)": ["--max_wait_ms=10", "--messages_per_call=256"],
            "one message per call": ["--max_wait_ms=0", "--messages_per_call=1"]}
ANSWER_TIMEOUT_S = 120.0
MEASURED = "measured"
"""Attribute of the measured messages (the pipeline copies attributes to its answers)."""


@dataclass(frozen=True)
class Latencies:
    """Publish-to-answer latency of one setting at one rate."""

    sent: int
    received: int
    p50_ms: float
    p99_ms: float


def measure(setting: list[str], rate: float, seconds: float, run_id: str, logs: Path) -> Latencies:
    from google.cloud import pubsub_v1

    from serving.examples import natality

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    paths = {}
    for name in ("in", "out", "dead"):
        topic = publisher.topic_path(PROJECT, f"{run_id}-{name}")
        publisher.create_topic(name=topic)
        subscription = subscriber.subscription_path(PROJECT, f"{run_id}-{name}-sub")
        subscriber.create_subscription(name=subscription, topic=topic)
        paths[name] = (topic, subscription)
    argv = [sys.executable, "streaming/run.py", "--input_subscription", paths["in"][1],
            "--output_topic", paths["out"][0], "--dead_letter_topic", paths["dead"][0],
            "--model_base_path", str(REPO / "models" / "natality"), "--runner=DirectRunner",
            *setting]
    latencies: list[float] = []
    warm_answers: list[float] = []

    def on_output(message: Any) -> None:
        sent = float(message.attributes.get("sent_at", "nan"))
        answers = latencies if MEASURED in message.attributes else warm_answers
        answers.append(time.time() - sent)
        message.ack()

    row = {k: v.tolist()[0] for k, v in natality.sample_rows(1, seed=5).items()}
    body = json.dumps(row).encode()
    warm_sent = 0

    with Job(f"pipeline {run_id}", argv, logs / f"{run_id}.log") as pipeline:
        stream = subscriber.subscribe(paths["out"][1], callback=on_output)
        try:
            def answering() -> bool:
                """Warm-up: a message a second until the pipeline answers one."""
                nonlocal warm_sent
                pipeline.check_alive("before it answered")
                if warm_answers:
                    return True
                publisher.publish(paths["in"][0], body, sent_at=str(time.time()))
                warm_sent += 1
                return False

            wait_until(answering, ANSWER_TIMEOUT_S, "the streaming pipeline's first answer",
                       interval=1.0)
            wait_until(lambda: len(warm_answers) >= warm_sent, ANSWER_TIMEOUT_S,
                       "answers to every warm-up message (they are not measured)")
            interval, sent, started = 1.0 / rate, 0, time.monotonic()
            while time.monotonic() - started < seconds:
                publisher.publish(paths["in"][0], body, sent_at=str(time.time()),
                                  **{MEASURED: "1"})
                sent += 1
                time.sleep(max(0.0, started + sent * interval - time.monotonic()))  # pacing

            def all_answered() -> bool:
                pipeline.check_alive("while answering")
                return len(latencies) >= sent

            wait_until(all_answered, ANSWER_TIMEOUT_S, "answers to every measured message")
        finally:
            stream.cancel()
    values = np.array(latencies[:sent]) * 1000.0
    return Latencies(sent, len(latencies), float(np.percentile(values, 50)),
                     float(np.percentile(values, 99)))


def main(argv: list[str] | None = None) -> dict[tuple[str, float], Latencies]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,100", help="messages per second, comma separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    results: dict[tuple[str, float], Latencies] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as logs, pubsub_emulator(PROJECT):
        for rate in (float(r) for r in args.rates.split(",")):
            for index, (name, setting) in enumerate(SETTINGS.items()):
                run_id = f"r{int(rate)}-s{index}-{int(time.time())}"
                result = measure(setting, rate, args.seconds, run_id, Path(logs))
                results[(name, rate)] = result
                log(f"{name} at {rate:g} msg/s: {result}")
    print("\n### streaming, natality, local DirectRunner via the Pub/Sub emulator\n")
    print("| setting | rate msg/s | messages | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for (name, rate), r in results.items():
        print(f"| {name} | {rate:g} | {r.sent} | {r.p50_ms:.0f} | {r.p99_ms:.0f} |")
    return results


if __name__ == "__main__":
    main()
