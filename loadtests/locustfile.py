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
import logging
import os
import platform
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import locust
import locust.stats
import orjson
from gevent.pool import Group
from locust import FastHttpUser, LoadTestShape, User, events, task
from locust.env import Environment

from loadtests.payloads import Instance, RequestPool, RowsMix, predict_body
from loadtests.samples import Sample, summarize, write_csv
from loadtests.schedules import SCHEDULES, Schedule, build

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
    group.add_argument("--drain", type=float, default=15.0,
                       help="after the last phase, wait this long for answers (longer than "
                            "--timeout), then count the rest as errors")
    group.add_argument("--max-in-flight", type=int, default=1000)
    group.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    group.add_argument("--connections", type=int,
                       help="REST connection pool (default: --max-in-flight, so a request in "
                            "flight never waits for a connection)")
    group.add_argument("--seed", type=int, default=2024)
    group.add_argument("--out-dir", default="loadtest-out", help="summary.json, samples.csv")


class OpenLoop:
    """The arrival process, the requests in flight and every request's sample."""

    def __init__(self, options: Any) -> None:
        self.schedule: Schedule = build(options.schedule, options.rate, options.seconds,
                                        options.warmup, options.ramp_steps)
        self._ends = self.schedule.ends()
        self.options = options
        self.names = [f"{options.model}:predict [{p.name}]" for p in self.schedule.phases]
        self.samples: list[Sample] = []
        self.in_flight: dict[int, tuple[int, float, int]] = {}
        """id -> (phase, intended_s, rows) of every request spawned and not yet answered."""
        self.cpu_marks: list[tuple[float, float]] = []
        """(clock, generator CPU seconds) at the start and at each phase's end."""
        self.arrivals_done = False
        self.request_type = ""
        self._requests = Group()
        self._ids = itertools.count()
        self._rng = random.Random(options.seed)
        self._t0: float | None = None
        self._phase = 0
        self._due = 0.0
        """When the next request is due, seconds after the start."""
        self.finished_at: float | None = None
        """When ``finish`` booked what was left (clock seconds)."""

    def clock(self) -> float:
        assert self._t0 is not None, "the first user starts the clock"
        return time.perf_counter() - self._t0

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def _start(self) -> None:
        if self._t0 is None:
            # Full collections walking every sample and imported module stalled the
            # generator for tens of ms (p99 137 -> 11 ms at 4K req/s once frozen).
            gc.collect()
            gc.freeze()
            self._t0 = time.perf_counter()
            self.cpu_marks.append((0.0, _cpu_seconds()))
            self._next_arrival()
            gevent.spawn(self._mark_phase_ends)

    def _mark_phase_ends(self) -> None:
        for end in self._ends:
            gevent.sleep(max(0.0, end - self.clock()))
            self.cpu_marks.append((self.clock(), _cpu_seconds()))

    def _next_arrival(self) -> None:
        """Advance ``_due`` by an exponential gap at the current phase's rate; a gap that
        crosses a phase's end restarts there at the next phase's rate (arrivals are
        memoryless, so this is exactly Poisson at each phase's rate)."""
        while self._phase < len(self._ends):
            due = self._due + self._rng.expovariate(self.schedule.phases[self._phase].rate)
            if due < self._ends[self._phase]:
                self._due = due
                return
            self._due = self._ends[self._phase]
            self._phase += 1

    def drive(self, send: Send, pool: RequestPool, request_type: str) -> None:
        """Send requests at the schedule's rate until it ends (a user's only task).

        The clock starts here, once the user has built its payloads (gRPC imports
        TensorFlow for its protos): the warm-up is load, not set-up.
        """
        self.request_type = request_type
        self._start()
        while True:
            gevent.sleep(max(0.0, self._due - self.clock()))
            if self.finished_at is not None or self._phase == len(self.schedule.phases):
                break
            rows, payload = pool.draw()
            if len(self.in_flight) >= self.options.max_in_flight:
                self._fail(self._phase, self._due, rows, "in-flight cap")
            else:
                key = next(self._ids)
                self.in_flight[key] = (self._phase, self._due, rows)
                self._requests.spawn(self._one, key, send, payload)
            self._next_arrival()
        self.arrivals_done = True
        while True:  # the schedule is over: idle until the shape stops this user
            gevent.sleep(1.0)

    def _one(self, key: int, send: Send, payload: Any) -> None:
        phase, due, rows = self.in_flight[key]
        sent = self.clock()
        try:
            why = send(rows, payload, self.names[phase])
        except Exception as error:  # noqa: BLE001 - a bug in a send must not lose the sample
            why = f"{type(error).__name__}: {error}"
        done = self.clock()
        del self.in_flight[key]
        self.samples.append(Sample(phase, due, (sent - due) * 1e3, (done - due) * 1e3, rows,
                                   why is None, why or ""))

    def _fail(self, phase: int, due: float, rows: int, why: str) -> None:
        """A request that got no answer from the server: a sample, and a Locust failure."""
        self.samples.append(Sample(phase, due, 0.0, 0.0, rows, False, why))
        events.request.fire(request_type=self.request_type, name=self.names[phase],
                            response_time=0, response_length=0, exception=RuntimeError(why),
                            context={})

    def finish(self) -> int:
        """Count what is unanswered, or was due but never sent (a generator that fell
        behind), as failed: nothing leaves the error rate. The requests still out are
        killed first, so none can also report an answer later. Returns how many failed
        here; 0 once done."""
        if self.finished_at is not None:
            return 0
        self.finished_at = self.clock()
        self._requests.kill(block=True)
        late = len(self.samples)
        for phase, due, rows in self.in_flight.values():
            self._fail(phase, due, rows, "no answer before the run ended")
        self.in_flight.clear()
        while self._phase < len(self.schedule.phases):
            self._fail(self._phase, self._due, 0, "not sent before the run ended")
            self._next_arrival()
        self.samples.sort(key=lambda s: s.intended_s)  # the order samples.csv has
        return len(self.samples) - late

    def summary(self) -> dict[str, Any]:
        by_phase: list[list[Sample]] = [[] for _ in self.schedule.phases]
        for s in self.samples:
            by_phase[s.phase].append(s)
        phases = [{"measured": phase.measured,
                   **summarize(phase, start, samples, self.samples, self._cpu(index, index + 1))}
                  for index, (phase, start, samples)
                  in enumerate(zip(self.schedule.phases, self.schedule.starts(), by_phase, strict=True))]
        pooled, start = self.schedule.measured()
        first = next(i for i, p in enumerate(self.schedule.phases) if p.measured)
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
            "measured": summarize(pooled, start,
                                  [s for s in self.samples if self.schedule.phases[s.phase].measured],
                                  self.samples, self._cpu(first, len(self.schedule.phases))),
        }

    def _cpu(self, begin: int, end: int) -> float | None:
        """The generator's CPU use (1.0 = one core) from mark ``begin`` to mark ``end``,
        over the time that really passed between them."""
        if end >= len(self.cpu_marks):
            return None
        (t0, cpu0), (t1, cpu1) = self.cpu_marks[begin], self.cpu_marks[end]
        return (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.init.add_listener
def _attach(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None:
        environment.open_loop = OpenLoop(options)
        # FastHttpUser sizes its connection pool and timeouts from class attributes.
        RestUser.concurrency = options.connections or options.max_in_flight
        RestUser.network_timeout = RestUser.connection_timeout = options.timeout


@events.test_stopping.add_listener
def _write(environment: Environment, **_: Any) -> None:
    run: OpenLoop | None = getattr(environment, "open_loop", None)
    if run is None or not run.started:
        return
    run.finish()
    out = Path(run.options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "samples.csv", run.samples)
    (out / "summary.json").write_text(json.dumps(run.summary(), indent=1))


CSV_SETTLE_S = 2 * locust.stats.CSV_STATS_INTERVAL_SEC


class OpenLoopShape(LoadTestShape):
    """Keeps one open-loop user alive while it plays the ``--schedule`` (its rates) and
    stops once every request is sent and answered, or the drain after the schedule is over."""

    def tick(self) -> tuple[int, float] | None:
        run: OpenLoop = self.runner.environment.open_loop
        if not run.started:
            return 1, 1.0
        now = run.clock()
        if run.finished_at is None:
            if not (run.arrivals_done and not run.in_flight
                    or now >= run.schedule.seconds + run.options.drain):
                return 1, 1.0
            if not run.finish():
                return None
        # Locust writes its CSV once a second: keep running until it has the late failures.
        return (1, 1.0) if now < run.finished_at + CSV_SETTLE_S else None


class RequestTimeout(Exception):
    """``--timeout`` passed before the whole request was answered."""


def _drive(user: User, prepare: Callable[[], tuple[Send, RequestPool]], kind: str) -> None:
    """Build the user's payloads, then send at the schedule's rate. A set-up that fails
    stops the run (Locust would otherwise retry the task forever)."""
    try:
        send, pool = prepare()
    except Exception:  # noqa: BLE001 - whatever it is, there is nothing to measure
        logging.exception("the %s user could not be set up; stopping", kind)
        user.environment.runner.quit()
        return
    user.environment.open_loop.drive(send, pool, kind)


def _report_failure(kind: str, name: str, started: float, why: str) -> str:
    events.request.fire(request_type=kind, name=name, response_length=0,
                        response_time=(time.perf_counter() - started) * 1e3,
                        exception=RuntimeError(why), context={})
    return why


class RestUser(FastHttpUser):
    """``POST /v1/models/MODEL:predict`` with TF Serving's row-format JSON."""

    @task
    def predict(self) -> None:
        _drive(self, self._prepare, "POST")

    def _prepare(self) -> tuple[Send, RequestPool]:
        options = self.environment.parsed_options
        path = f"/v1/models/{options.model}:predict"
        headers = {"Content-Type": "application/json"}
        pool = RequestPool(options.model, RowsMix.parse(options.rows),
                           lambda rows: orjson.dumps(predict_body(rows)), seed=options.seed)

        def send(rows: int, body: bytes, name: str) -> str | None:
            started = time.perf_counter()
            # FastHttpUser's timeouts bound each socket operation; this bounds the whole
            # request, like gRPC's deadline (waiting for a free connection included).
            deadline = gevent.Timeout.start_new(options.timeout, RequestTimeout())
            try:
                answer = self.client.post(path, data=body, name=name, catch_response=True,
                                          headers=headers)
            except Exception as error:  # noqa: BLE001 - Locust reports only what it returns
                return _report_failure("POST", name, started, type(error).__name__)
            finally:
                deadline.cancel()
            with answer as response:
                why = _rest_error(response, rows)
                if why:
                    response.failure(why)
                else:
                    response.success()
                return why

        return send, pool


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
        _drive(self, self._prepare, "grpc")

    def _prepare(self) -> tuple[Send, RequestPool]:
        # tensorflow-serving-api's protos import TensorFlow: only gRPC runs pay for it.
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from loadtests.payloads import columns
        from serving.runtime.tensors import to_proto

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
            try:
                response = stub.Predict(request, timeout=options.timeout)
            except grpc.RpcError as error:
                return _report_failure("grpc", name, started, f"gRPC {error.code().name}")
            except Exception as error:  # noqa: BLE001 - every request must be reported once
                return _report_failure("grpc", name, started, type(error).__name__)
            shapes = {t.tensor_shape.dim[0].size if t.tensor_shape.dim else None
                      for t in response.outputs.values()}
            if shapes != {rows}:
                return _report_failure("grpc", name, started,
                                       f"outputs of {sorted(shapes, key=str)} rows for {rows} rows")
            events.request.fire(request_type="grpc", name=name, response_length=response.ByteSize(),
                                response_time=(time.perf_counter() - started) * 1e3,
                                exception=None, context={})
            return None

        return send, pool
