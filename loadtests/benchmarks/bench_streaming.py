"""``make bench-streaming``: publish-to-answer latency of streaming/run.py through the Pub/Sub
emulator, with the model loaded in the pipeline (direct SavedModel) or called through the
gateway over gRPC (the microservice), each minibatched across messages or one message per
call: the streaming table of Google's course on ML in Dataflow pipelines.

One pipeline runs per setup (local DirectRunner, pinned alone to one core; the emulator, this
publisher/subscriber and the gateway share the other core, as services that live elsewhere).
Messages are published at a fixed rate (open loop) with their publish time; latency runs to
the answer's arrival at a subscriber. Each setup is measured at ``--rates``, then the highest
rate it holds is searched (``next_rate``): a rate holds when every message is answered, p99
stays within ``--p99_bound_ms`` and latency does not grow while publishing (answers keep up:
the median of the last fifth of the messages is within ``GROWTH_BOUND_MS`` of the first
fifth's). A stage still unanswered ``DRAIN_TIMEOUT_S`` after its last publish fails, and its
backlog is dropped before the next. Beside each setup, its Predict step alone (the pipelines'
model handler outside Beam, ms per message): what the model path costs, next to what the
runner costs. Local DirectRunner numbers compare the setups here; they are not what Dataflow
does.

    python -m loadtests.benchmarks.bench_streaming [--rates 20,100] [--seconds 10] [--search_steps 4]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loadtests.benchmarks.bench_batch import MODEL, gateway
from loadtests.support.emulator import pubsub_emulator
from loadtests.support.processes import Job, Pinning, log, wait_until

if TYPE_CHECKING:
    from batch.model_handler import ModelLocation

PROJECT = "bench-project"
MODELS = {"direct": "direct SavedModel", "gateway": "gateway over gRPC"}


@dataclass(frozen=True)
class Batching:
    """How the pipeline gathers messages into model calls (streaming/run.py's flags)."""

    label: str
    max_wait_ms: float
    messages_per_call: int

    def flags(self) -> list[str]:
        return [f"--max_wait_ms={self.max_wait_ms:g}", f"--messages_per_call={self.messages_per_call}"]


BATCHING = {"minibatched": Batching("minibatched (10 ms, up to 256)", 10, 256),
            "per-message": Batching("one message per call", 0, 1)}
GROWTH_BOUND_MS = 100.0
"""How much later the last fifth of a stage's messages may be answered than the first fifth
(median against median) for the rate to count as held: more means a growing backlog."""
CLOSE_ENOUGH = 0.1
"""The search ends once the lowest failing rate is within this fraction of the highest held."""
LOWEST_RATE = 5.0
"""The search goes no lower (msg/s): below it a setup holds nothing worth a row."""
ANSWER_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 20.0
"""How long a stage's answers may trail its last publish; past that its backlog is dropped
(the input subscription is sought to now) so that the next stage starts clean."""
SETTLED_S = 2.0
"""After a backlog is dropped: how long without answers means the pipeline is idle again."""


@dataclass(frozen=True)
class Stage:
    """Messages published at one rate to one setup, and how they were answered."""

    rate: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    growth_ms: float
    """Median latency of the last fifth of the messages minus that of the first fifth."""
    cpu_ms_per_message: float | None
    """CPU of the pipeline process per answered message, from the first publish to the last
    answer."""

    def holds(self, p99_bound_ms: float) -> bool:
        return (self.received >= self.sent and self.p99_ms <= p99_bound_ms
                and self.growth_ms <= GROWTH_BOUND_MS)


@dataclass(frozen=True)
class SetupResult:
    predict_ms_per_message: float
    """The Predict step alone, outside the runner (``predict_step_ms``)."""
    stages: list[Stage]
    held: float | None
    """The highest rate that held (None: not even the lowest tried)."""
    failed: float | None
    """The lowest rate that did not hold (None: every rate tried held)."""


def message_row() -> dict[str, Any]:
    """The natality row each message carries."""
    from serving.examples import natality

    return {k: v.tolist()[0] for k, v in natality.sample_rows(1, seed=5).items()}


def predict_step_ms(location: ModelLocation, messages_per_call: int, calls: int = 200) -> float:
    """Median ms per message of the pipeline's Predict step alone (batch.model_handler's
    handler, outside Beam), ``messages_per_call`` one-row messages per call: what the model
    path costs, next to what the local runner costs."""
    from batch.chunks import rows_to_chunk
    from batch.model_handler import SavedModelHandler

    handler = SavedModelHandler(location)
    model = handler.load_model()
    spec = model.model.signature("serving_default")
    messages = [rows_to_chunk([message_row()], spec)[0] for _ in range(messages_per_call)]
    seconds = []
    for _ in range(calls + 20):  # the first 20 warm up
        started = time.perf_counter()
        handler.run_inference(messages, model)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds[20:])) * 1000.0 / messages_per_call


class StreamingRun:
    """One streaming/run.py pipeline on fresh topics, a publisher and a subscriber on its
    answers; ``stage`` publishes at a rate and waits for every answer."""

    def __init__(self, run_id: str, argv: list[str], log_path: Path) -> None:
        from google.cloud import pubsub_v1

        self._publisher, self._subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        paths = {}
        for name in ("in", "out", "dead"):
            topic = self._publisher.topic_path(PROJECT, f"{run_id}-{name}")
            self._publisher.create_topic(name=topic)
            subscription = self._subscriber.subscription_path(PROJECT, f"{run_id}-{name}-sub")
            self._subscriber.create_subscription(name=subscription, topic=topic)
            paths[name] = (topic, subscription)
        self._input, self._input_subscription = paths["in"]
        self._answers_path = paths["out"][1]
        self._argv = [*argv, "--input_subscription", paths["in"][1], "--output_topic", paths["out"][0],
                      "--dead_letter_topic", paths["dead"][0], "--runner=DirectRunner"]
        self._name, self._log_path = f"pipeline {run_id}", log_path
        self._body = json.dumps(message_row()).encode()
        self._lock = threading.Lock()
        self._answers: dict[str, list[tuple[int, float]]] = {}
        """Stage id -> (sequence number, latency s) of each answer."""
        self._stages = 0

    def __enter__(self) -> StreamingRun:
        self._job = Job(self._name, self._argv, self._log_path)
        try:
            self._stream = self._subscriber.subscribe(self._answers_path, callback=self._on_answer)
        except BaseException:
            self._job.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.cancel()
        self._job.stop()

    def _on_answer(self, message: Any) -> None:
        latency = time.time() - float(message.attributes["sent_at"])
        with self._lock:
            self._answers.setdefault(message.attributes["stage"], []).append(
                (int(message.attributes["seq"]), latency))
        message.ack()

    def _answered(self, stage: str) -> int:
        with self._lock:
            return len(self._answers.get(stage, ()))

    def _publish(self, stage: str, seq: int) -> None:
        self._publisher.publish(self._input, self._body, sent_at=repr(time.time()), stage=stage,
                                seq=str(seq))

    def _drop_backlog(self, stage: str) -> None:
        """Drop what the pipeline has not pulled yet, and wait until it answers no more."""
        from google.protobuf import timestamp_pb2

        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        self._subscriber.seek(request={"subscription": self._input_subscription, "time": now})
        last = (self._answered(stage), time.monotonic())

        def settled() -> bool:
            nonlocal last
            self._job.check_alive("while its backlog was dropped")
            count = self._answered(stage)
            if count != last[0]:
                last = (count, time.monotonic())
            return time.monotonic() - last[1] >= SETTLED_S

        wait_until(settled, ANSWER_TIMEOUT_S, "the pipeline to go idle", interval=0.2)

    def warm_up(self) -> None:
        """A message a second until the pipeline answers one (model loaded, channel open)."""
        sent = 0

        def answering() -> bool:
            nonlocal sent
            self._job.check_alive("before it answered")
            if self._answered("warm-up"):
                return True
            self._publish("warm-up", sent)
            sent += 1
            return False

        wait_until(answering, ANSWER_TIMEOUT_S, "the streaming pipeline's first answer", interval=1.0)
        wait_until(lambda: self._answered("warm-up") >= sent, ANSWER_TIMEOUT_S, "the warm-up answers")

    def stage(self, rate: float, seconds: float) -> Stage:
        """Publish at ``rate`` for ``seconds``, then wait (up to ``DRAIN_TIMEOUT_S``, then
        drop the backlog) for every answer."""
        self._stages += 1
        stage = str(self._stages)
        cpu_before = self._job.cpu_seconds()
        interval, sent, started = 1.0 / rate, 0, time.monotonic()
        while time.monotonic() - started < seconds:
            self._publish(stage, sent)
            sent += 1
            time.sleep(max(0.0, started + sent * interval - time.monotonic()))  # pacing

        def all_answered() -> bool:
            self._job.check_alive("while answering")
            return self._answered(stage) >= sent

        try:
            wait_until(all_answered, DRAIN_TIMEOUT_S, "the stage's answers")
            cpu_after = self._job.cpu_seconds()
        except TimeoutError:
            cpu_after = self._job.cpu_seconds()
            self._drop_backlog(stage)
        with self._lock:
            answers = sorted(self._answers.get(stage, ()))
        latencies = np.array([latency for _, latency in answers]) * 1000.0
        fifth = max(1, len(latencies) // 5)
        cpu = (None if cpu_before is None or cpu_after is None or not answers
               else (cpu_after - cpu_before) * 1000.0 / len(answers))
        if len(latencies) == 0:
            return Stage(rate, sent, 0, float("inf"), float("inf"), float("inf"), cpu)
        return Stage(rate, sent, len(answers), float(np.percentile(latencies, 50)),
                     float(np.percentile(latencies, 99)),
                     float(np.median(latencies[-fifth:]) - np.median(latencies[:fifth])), cpu)


def next_rate(held: float | None, failed: float | None) -> float | None:
    """The next rate to try: double the highest held until one fails, halve the lowest
    failed until one holds (down to ``LOWEST_RATE``), then bisect; None once the two are
    within ``CLOSE_ENOUGH``."""
    if failed is None:
        assert held is not None, "a rate was measured"
        return 2 * held
    if held is None:
        return failed / 2 if failed / 2 >= LOWEST_RATE else None
    if failed - held <= CLOSE_ENOUGH * held:
        return None
    return float(round((held + failed) / 2))


def measure(run: StreamingRun, predict_ms: float, rates: list[float], seconds: float, search_seconds: float,
            search_steps: int, p99_bound_ms: float) -> SetupResult:
    """The fixed ``rates`` for ``seconds`` each, then up to ``search_steps`` rates of the
    search for the highest that holds, for ``search_seconds`` each."""
    stages: list[Stage] = []
    held: float | None = None
    failed: float | None = None
    plan = [(rate, seconds) for rate in rates]
    while plan:
        rate, duration = plan.pop(0)
        stage = run.stage(rate, duration)
        stages.append(stage)
        ok = stage.holds(p99_bound_ms)
        log(f"  {rate:g} msg/s: {'holds' if ok else 'FAILS'} {stage}")
        if ok and (held is None or rate > held):
            held = rate
        if not ok and (failed is None or rate < failed):
            failed = rate
        if not plan and len(stages) - len(rates) < search_steps:
            upcoming = next_rate(held, failed)
            if upcoming is not None:
                plan.append((upcoming, search_seconds))
    return SetupResult(predict_ms, stages, held, failed)


@contextlib.contextmanager
def on_cores(taskset_prefix: tuple[str, ...]) -> Iterator[None]:
    """This process, and what it starts meanwhile, on the cores of a ``taskset -c CORES``
    prefix (unchanged when it is empty); the affinity is restored afterwards."""
    if not taskset_prefix:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(core) for core in taskset_prefix[-1].split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main(argv: list[str] | None = None) -> dict[tuple[str, str], SetupResult]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,100", help="messages per second, comma separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per fixed rate")
    parser.add_argument("--search_seconds", type=float, default=6.0, help="per searched rate")
    parser.add_argument("--search_steps", type=int, default=4, help="searched rates per setup")
    parser.add_argument("--p99_bound_ms", type=float, default=500.0)
    parser.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    parser.add_argument("--batching", default=",".join(BATCHING), help=f"of {', '.join(BATCHING)}")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    models, batchings = args.models.split(","), args.batching.split(",")
    unknown = sorted(set(models) - set(MODELS) | set(batchings) - set(BATCHING))
    if unknown:
        parser.error(f"unknown --models or --batching: {', '.join(unknown)}")
    from batch.model_handler import ModelLocation

    pinning = Pinning.detect()
    log(f"pipelines: {' '.join(pinning.server) or 'not pinned'}; emulator, publisher, subscriber "
        f"and gateway: {' '.join(pinning.loadgen) or 'not pinned'}")
    results: dict[tuple[str, str], SetupResult] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp, \
            on_cores(pinning.loadgen), pubsub_emulator(PROJECT), contextlib.ExitStack() as stack:
        logs = Path(tmp)
        for model in models:
            if model == "direct":
                location, model_flags = ModelLocation(str(MODEL)), ["--model_base_path", str(MODEL)]
            else:
                service = stack.enter_context(gateway(logs))
                location = ModelLocation(service=service, model_name="natality")
                model_flags = ["--prediction_service", service, "--model_name", "natality"]
            for batching in batchings:
                label = BATCHING[batching].label
                predict_ms = predict_step_ms(location, BATCHING[batching].messages_per_call)
                run_id = f"{model}-{batching}-{int(time.time())}"
                log(f"{MODELS[model]}, {label}: Predict step alone {predict_ms:.3f} ms/msg")
                command = [*pinning.server, sys.executable, "streaming/run.py", *model_flags,
                           *BATCHING[batching].flags()]
                with StreamingRun(run_id, command, logs / f"{run_id}.log") as run:
                    run.warm_up()
                    results[(MODELS[model], label)] = measure(
                        run, predict_ms, rates, args.seconds, args.search_seconds, args.search_steps, args.p99_bound_ms)
    print(report(results, rates, args, pinning))
    return results


def report(results: dict[tuple[str, str], SetupResult], rates: list[float],
           args: argparse.Namespace, pinning: Pinning) -> str:
    """The markdown table: p50 / p99 at each fixed rate (✗: it did not hold), the pipeline's
    CPU per message at the highest fixed rate, the Predict step alone, the highest rate held."""
    def at(result: SetupResult, rate: float) -> Stage | None:
        return next((s for s in result.stages if s.rate == rate), None)

    lines = ["\n### streaming, natality, local DirectRunner via the Pub/Sub emulator\n",
             f"{args.seconds:g} s per fixed rate, {args.search_seconds:g} s per searched rate; a rate "
             f"holds when every message is answered, p99 <= {args.p99_bound_ms:g} ms and latency "
             f"grows <= {GROWTH_BOUND_MS:g} ms over the stage. Pipeline on "
             f"`{' '.join(pinning.server) or 'any core'}`; emulator, publisher/subscriber and gateway "
             f"on `{' '.join(pinning.loadgen) or 'any core'}`.\n",
             "| model | batching | " + " | ".join(f"p50 / p99 ms at {r:g}/s" for r in rates)
             + f" | pipeline CPU ms/msg at {rates[-1]:g}/s | Predict step alone ms/msg | holds up to msg/s |",
             "|---|---|" + "---:|" * (len(rates) + 3)]
    for (model, batching), result in results.items():
        cells = []
        for rate in rates:
            stage = at(result, rate)
            cells.append("–" if stage is None else f"{stage.p50_ms:.0f} / {stage.p99_ms:.0f}"
                         + ("" if stage.holds(args.p99_bound_ms) else " ✗"))
        last = at(result, rates[-1])
        cpu = "–" if last is None or last.cpu_ms_per_message is None else f"{last.cpu_ms_per_message:.1f}"
        held = "none" if result.held is None else f"{result.held:g}"
        held += " (tried no higher)" if result.failed is None else f" (not {result.failed:g})"
        lines.append(f"| {model} | {batching} | {' | '.join(cells)} | {cpu} "
                     f"| {result.predict_ms_per_message:.3f} | {held} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
