"""Locust users and load shape for TF Serving's Predict API: the gateway's, or TF Serving's own.

Both speak the same REST and gRPC APIs, so the same users drive either; only ``--host``
changes (``http://HOST:8501`` for ``RestUser``, ``HOST:8500`` for ``GrpcUser``)::

    locust -f loadtests/locustfile.py --headless RestUser --host http://127.0.0.1:8501 \\
        --model natality --rows 1:0.9,8:0.1 --schedule spike --rate 400 --seconds 20 \\
        --warmup 5 --out-dir out --csv out/locust --html out/locust.html

``python -m loadtests.run`` starts it this way (pinned to its own core) and reads
``OUT/summary.json`` and ``OUT/samples.csv``.

Open loop: one user draws Poisson arrivals at the schedule's rate (``OpenLoopShape``) and
sends each request in its own greenlet, so a slow answer never delays the next send (no
coordinated omission); latency counts from when a request was due, not from when the
generator got round to it. A request past ``--max-in-flight`` is not queued in the
generator: it fails at once ("in-flight cap"), so an overloaded server shows up as errors.
Locust's own statistics are kept per phase (request name ``MODEL:predict [PHASE]``): the
warm-up is its own row and is left out of our summary.
"""
from __future__ import annotations

import gc
import itertools
import json
import os
import platform
import random
import resource
import time
from pathlib import Path
from typing import Any, Callable

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import locust
import orjson
from locust import FastHttpUser, LoadTestShape, User, events, task
from locust.env import Environment

from loadtests.payloads import Instance, RequestPool, RowsMix, predict_body
from loadtests.samples import Sample, summarize, write_csv
from loadtests.schedules import SCHEDULES, Phase, Schedule

grpc_gevent.init_gevent()  # before any gRPC object: gRPC's I/O must yield to gevent

Send = Callable[[int, Any, str], str | None]
"""(rows, encoded request, Locust name) -> None if answered right, else why not."""


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("open-loop TF Serving load (loadtests)")
    group.add_argument("--model", default="natality", help="model name in the request path")
    group.add_argument("--signature", default="serving_default")
    group.add_argument("--rows", default="1", help="rows per request, SIZE[:WEIGHT],...")
    group.add_argument("--schedule", default="steady", choices=sorted(SCHEDULES))
    group.add_argument("--rate", type=float, default=100.0,
                       help="requests/s (steady), the top step (ramp), the base (spike)")
    group.add_argument("--seconds", type=float, default=20.0, help="each measured phase")
    group.add_argument("--warmup", type=float, default=5.0, help="warm-up, not measured")
    group.add_argument("--ramp-steps", type=int, default=4)
    group.add_argument("--drain", type=float, default=10.0,
                       help="after the last phase, wait this long for answers, then count the "
                            "rest as errors")
    group.add_argument("--max-in-flight", type=int, default=1000)
    group.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    group.add_argument("--connections", type=int, default=256, help="REST connection pool")
    group.add_argument("--seed", type=int, default=2024)
    group.add_argument("--out-dir", default="loadtest-out", help="summary.json, samples.csv")


class OpenLoop:
    """The arrival process, the requests in flight and every request's sample."""

    def __init__(self, options: Any) -> None:
        builder = SCHEDULES[options.schedule]
        extra = {"steps": options.ramp_steps} if options.schedule == "ramp" else {}
        self.schedule: Schedule = builder(options.rate, options.seconds, options.warmup, **extra)
        self.options = options
        self.names = [f"{options.model}:predict [{p.name}]" for p in self.schedule.phases]
        self.samples: list[Sample] = []
        self.in_flight: dict[int, tuple[int, float, int]] = {}
        """id -> (phase, intended_s, rows) of every request sent and not yet answered."""
        self.cpu_at_ends: list[float | None] = [None] * len(self.schedule.phases)
        self._ids = itertools.count()
        self._rng = random.Random(options.seed)
        self._t0: float | None = None
        self._due = 0.0
        """When the next request is due, seconds after the start."""
        self._stopped = False
        self.arrivals_done = False
        self.request_type = ""

    def clock(self) -> float:
        assert self._t0 is not None, "the shape starts the clock"
        return time.perf_counter() - self._t0

    def start(self) -> None:
        if self._t0 is None:
            # Full collections walking every sample and imported module stalled the
            # generator for tens of ms (p99 137 -> 11 ms at 4K req/s once frozen).
            gc.collect()
            gc.freeze()
            self._t0 = time.perf_counter()
            self._cpu_start = _cpu_seconds()
            gevent.spawn(self._mark_phase_ends)

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def _mark_phase_ends(self) -> None:
        for index, end in enumerate(self.schedule.ends()):
            gevent.sleep(max(0.0, end - self.clock()))
            self.cpu_at_ends[index] = _cpu_seconds()

    def drive(self, send: Send, pool: RequestPool, request_type: str) -> None:
        """Send requests at the schedule's rate until it ends (a user's only task).

        The clock starts here, once the user has built its payloads (gRPC imports
        TensorFlow for its protos): the warm-up is load, not set-up.
        """
        self.request_type = request_type
        self.start()
        while (phase := self.schedule.phase_at(self._due)) is not None and not self._stopped:
            gevent.sleep(max(0.0, self._due - self.clock()))
            rows, payload = pool.draw()
            if len(self.in_flight) >= self.options.max_in_flight:
                self._fail_unsent(phase, self._due, rows, "in-flight cap")
            else:
                gevent.spawn(self._one, send, phase, self._due, rows, payload)
            self._next_arrival(phase)
        self.arrivals_done = True
        while True:  # the schedule is over: idle until the shape stops this user
            gevent.sleep(1.0)

    def _next_arrival(self, phase: int) -> None:
        self._due += self._rng.expovariate(self.schedule.phases[phase].rate)

    def _one(self, send: Send, phase: int, due: float, rows: int, payload: Any) -> None:
        key = next(self._ids)
        self.in_flight[key] = (phase, due, rows)
        sent = self.clock()
        try:
            why = send(rows, payload, self.names[phase])
        except Exception as error:  # noqa: BLE001 - a bug in a send must not lose the sample
            why = f"{type(error).__name__}: {error}"
        done = self.clock()
        del self.in_flight[key]
        self.samples.append(Sample(phase, due, (sent - due) * 1e3, (done - due) * 1e3, rows,
                                   why is None, why or ""))

    def _fail_unsent(self, phase: int, due: float, rows: int, why: str) -> None:
        """A request that got no answer from the server: a sample, and a Locust failure."""
        self.samples.append(Sample(phase, due, 0.0, 0.0, rows, False, why))
        events.request.fire(request_type=self.request_type, name=self.names[phase],
                            response_time=0, response_length=0, exception=RuntimeError(why),
                            context={})

    def finish(self) -> None:
        """Count what is unanswered, or was due but never sent (a generator that fell
        behind), as failed: nothing leaves the error rate."""
        self._stopped = True
        for phase, due, rows in list(self.in_flight.values()):
            self._fail_unsent(phase, due, rows, "no answer before the run ended")
        self.in_flight.clear()
        while (phase := self.schedule.phase_at(self._due)) is not None:
            self._fail_unsent(phase, self._due, 0, "not sent before the run ended")
            self._next_arrival(phase)
        self.samples.sort(key=lambda s: s.intended_s)  # the order samples.csv has

    def summary(self) -> dict[str, Any]:
        by_phase: list[list[Sample]] = [[] for _ in self.schedule.phases]
        for s in self.samples:
            by_phase[s.phase].append(s)
        starts = [self._cpu_start, *self.cpu_at_ends[:-1]]
        phases = []
        for phase, samples, start, end in zip(self.schedule.phases, by_phase, starts,
                                              self.cpu_at_ends):
            cpu = (end - start) / phase.seconds if start is not None and end is not None else None
            phases.append({"measured": phase.measured, **summarize(phase, samples, cpu)})
        measured = [(p, s) for p, s in zip(self.schedule.phases, phases) if p.measured]
        seconds = sum(p.seconds for p, _ in measured)
        pooled = Phase("measured", sum(p.rate * p.seconds for p, _ in measured) / seconds, seconds)
        cpus = [s["generator_cpu"] for _, s in measured]
        pooled_cpu = (None if None in cpus else
                      sum(c * p.seconds for c, (p, _) in zip(cpus, measured)) / seconds)
        options = self.options
        return {
            "scenario": {"user": self.request_type, "host": options.host, "model": options.model,
                         "signature": options.signature, "rows": str(RowsMix.parse(options.rows)),
                         "schedule": options.schedule, "rate": options.rate,
                         "seconds": options.seconds, "warmup": options.warmup,
                         "max_in_flight": options.max_in_flight, "timeout": options.timeout},
            "generator": {"pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0)),
                          "python": platform.python_version(), "locust": locust.__version__},
            "phases": phases,
            "measured": summarize(pooled, [s for s in self.samples
                                           if self.schedule.phases[s.phase].measured], pooled_cpu),
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.init.add_listener
def _attach(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None:
        environment.open_loop = OpenLoop(options)
        # FastHttpUser sizes its connection pool and timeouts from class attributes.
        RestUser.concurrency = options.connections
        RestUser.network_timeout = RestUser.connection_timeout = options.timeout


@events.test_stop.add_listener
def _write(environment: Environment, **_: Any) -> None:
    run: OpenLoop | None = getattr(environment, "open_loop", None)
    if run is None or not run.started:
        return
    run.finish()
    out = Path(run.options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "samples.csv", run.samples)
    (out / "summary.json").write_text(json.dumps(run.summary(), indent=1))


class OpenLoopShape(LoadTestShape):
    """Keeps one open-loop user alive while it plays the ``--schedule`` (its rates) and
    stops once every request is sent and answered, or the drain after the schedule is over."""

    def tick(self) -> tuple[int, float] | None:
        run: OpenLoop = self.runner.environment.open_loop
        if run.started and (run.arrivals_done and not run.in_flight
                            or run.clock() >= run.schedule.seconds + run.options.drain):
            return None
        return 1, 1.0


class RestUser(FastHttpUser):
    """``POST /v1/models/MODEL[/versions/V]:predict`` with TF Serving's row-format JSON."""

    @task
    def predict(self) -> None:
        options = self.environment.parsed_options
        path = f"/v1/models/{options.model}:predict"
        pool = RequestPool(options.model, RowsMix.parse(options.rows),
                           lambda rows: orjson.dumps(predict_body(rows)), seed=options.seed)

        def send(rows: int, body: bytes, name: str) -> str | None:
            with self.client.post(path, data=body, name=name, catch_response=True,
                                  headers={"Content-Type": "application/json"}) as response:
                why = _rest_error(response, rows)
                response.failure(why) if why else response.success()
                return why

        self.environment.open_loop.drive(send, pool, "POST")


def _rest_error(response: Any, rows: int) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}" if response.status_code else (
            f"{type(response.error).__name__}" if response.error else "no response")
    try:
        answered = len(orjson.loads(response.content)["predictions"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "not a predict response"
    return None if answered == rows else f"{answered} predictions for {rows} rows"


class GrpcUser(User):
    """``PredictionService/Predict`` through TF Serving's stubs, made gevent-friendly."""

    @task
    def predict(self) -> None:
        # tensorflow-serving-api's protos import TensorFlow: only gRPC runs pay for it.
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from loadtests.payloads import columns
        from serving.grpc.tensors import to_proto

        options = self.environment.parsed_options

        def encode(rows: list[Instance]) -> Any:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = options.model
            request.model_spec.signature_name = options.signature
            for name, array in columns(options.model, rows).items():
                request.inputs[name].CopyFrom(to_proto(array))
            return request

        channel = grpc.insecure_channel(options.host, options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        pool = RequestPool(options.model, RowsMix.parse(options.rows), encode, seed=options.seed)

        def send(rows: int, request: Any, name: str) -> str | None:
            started = time.perf_counter()
            length, why = 0, None
            try:
                response = stub.Predict(request, timeout=options.timeout)
                length = response.ByteSize()
                shapes = {t.tensor_shape.dim[0].size for t in response.outputs.values()}
                if shapes != {rows}:
                    why = f"outputs of {sorted(shapes)} rows for {rows} rows"
            except grpc.RpcError as error:
                why = f"gRPC {error.code().name}"
            events.request.fire(request_type="grpc", name=name, response_length=length,
                                response_time=(time.perf_counter() - started) * 1e3,
                                exception=RuntimeError(why) if why else None, context={})
            return why

        self.environment.open_loop.drive(send, pool, "grpc")
