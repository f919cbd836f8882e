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
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from loadtests.emulator import pubsub_emulator

REPO = Path(__file__).resolve().parents[1]
PROJECT = "bench-project"
SETTINGS = {"minibatched (10 ms, up to 256 messages)": ["--max_wait_ms=10", "--messages_per_call=256"],
            "one message per call": ["--max_wait_ms=0", "--messages_per_call=1"]}


def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(setting: list[str], rate: float, seconds: float, run_id: str) -> dict:
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
    pipeline = subprocess.Popen(
        [sys.executable, "streaming/run.py", "--input_subscription", paths["in"][1],
         "--output_topic", paths["out"][0], "--dead_letter_topic", paths["dead"][0],
         "--model_base_path", str(REPO / "models" / "natality"), "--runner=DirectRunner", *setting],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    latencies: list[float] = []
    arrived = threading.Event()

    def on_output(message) -> None:
        sent = float(message.attributes.get("sent_at", "nan"))
        latencies.append(time.time() - sent)
        arrived.set()
        message.ack()

    stream = subscriber.subscribe(paths["out"][1], callback=on_output)
    try:
        row = {k: v.tolist()[0] for k, v in natality.sample_rows(1, seed=5).items()}
        body = json.dumps(row).encode()
        end = time.monotonic() + 120
        while not arrived.is_set():  # warm-up: until the pipeline answers
            if time.monotonic() > end:
                raise RuntimeError("the streaming pipeline never answered")
            publisher.publish(paths["in"][0], body, sent_at=str(time.time()))
            arrived.wait(1.0)
        time.sleep(2.0)  # let warm-up messages drain; they are not measured
        latencies.clear()
        interval, sent, started = 1.0 / rate, 0, time.monotonic()
        while time.monotonic() - started < seconds:
            publisher.publish(paths["in"][0], body, sent_at=str(time.time()))
            sent += 1
            time.sleep(max(0.0, started + sent * interval - time.monotonic()))
        wait_until(lambda: len(latencies) >= sent, 120, "every measured message")
    finally:
        stream.cancel()
        os.killpg(pipeline.pid, signal.SIGKILL)
        pipeline.wait()
    values = np.array(latencies[:sent]) * 1000.0
    return {"sent": sent, "received": len(latencies), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,100", help="messages per second, comma separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    results: dict = {}
    with pubsub_emulator(PROJECT):
        for rate in (float(r) for r in args.rates.split(",")):
            for index, (name, setting) in enumerate(SETTINGS.items()):
                run_id = f"r{int(rate)}-s{index}-{int(time.time())}"
                results[(name, rate)] = measure(setting, rate, args.seconds, run_id)
                print(f"[bench-streaming] {name} at {rate:g} msg/s: {results[(name, rate)]}", file=sys.stderr)
    print("\n### streaming, natality, local DirectRunner via the Pub/Sub emulator\n")
    print("| setting | rate msg/s | messages | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for (name, rate), r in results.items():
        print(f"| {name} | {rate:g} | {r['sent']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    return results


if __name__ == "__main__":
    main()
