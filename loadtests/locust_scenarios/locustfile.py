"""Locust users and load shape for TF Serving's Predict API (the gateway's, or TF Serving's
own) and for the Open Inference Protocol's infer (the gateway's, or any v2 server's).

TF Serving and the gateway speak the same REST and gRPC APIs, so the same users drive either;
only ``--host`` changes (``http://HOST:8501`` for ``RestUser``, ``V2JsonUser`` and
``V2BinaryUser``, ``HOST:8500`` for ``GrpcUser``)::

    locust -f loadtests/locust_scenarios/locustfile.py --headless RestUser --host http://127.0.0.1:8501 \\
        --model natality --rows 1:0.9,8:0.1 --schedule spike --rate 400 --seconds 20 \\
        --warmup 5 --out-dir out --csv out/locust --html out/locust.html

or spread over processes and machines with Locust's distributed mode: the same command with
``--master --expect-workers N``, and N times ``locust -f
loadtests/locust_scenarios/locustfile.py --worker --master-host MASTER``. ``python -m
loadtests.locust_scenarios.run`` starts it either way (pinned to its own core) and reads
``OUT/summary.json`` and ``OUT/samples.csv``.

Open loop: each generator process (the single process, or each worker) runs one user that draws
Poisson arrivals at its share of the schedule's rate (``OpenLoop``) and sends each request in
its own greenlet, so a slow answer never delays the next send (no coordinated omission); latency
counts from when a request was due, not from when the generator got round to it. A request past
``--max-in-flight`` (per generator) is not queued: it fails at once ("in-flight cap"), so an
overloaded server shows up as errors. The master (or the single process) starts the schedule,
splits its rate and merges every generator's samples
(``loadtests/locust_scenarios/distributed.py``). Locust's own statistics are kept per phase
(request name ``MODEL:predict [PHASE]``): the warm-up is its own row and is left out of our
summary.
"""
from __future__ import annotations

import gc
import itertools
import logging
import os
import random
import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import orjson
from gevent.event import Event
from gevent.pool import Group
from locust import FastHttpUser, LoadTestShape, User, events, task
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner

from loadtests.locust_scenarios.distributed import CHUNK, PLAN, READY, SAMPLES, Collector
from loadtests.locust_scenarios.samples import Sample, row
from loadtests.locust_scenarios.schedules import SCHEDULES, Schedule, build
from loadtests.support.outputs import ELSEWHERE
from loadtests.support.payloads import Instance, KeyShare, RequestPool, RowsMix, predict_body, v2_infer

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
    group.add_argument("--key-field", help="give each row a key in this field (a gateway with "
                       "--prediction_key_field answers stored keys from its prediction store)")
    group.add_argument("--precomputed-share", type=float, default=0.0,
                       help="with --key-field: the share of rows whose key a batch job stored")
    group.add_argument("--keys", type=int, default=2000,
                       help="with --key-field: distinct keys, half of them stored (KeyShare)")
    group.add_argument("--out-dir", default=str(ELSEWHERE), help="summary.json, samples.csv")


class OpenLoop:
    """One generator: its share of the schedule's arrivals, its requests in flight and their
    samples, shipped to the master (``loadtests/locust_scenarios/distributed.py``) once it has
    finished."""

    def __init__(self, options: Any, runner: Runner) -> None:
        self.schedule: Schedule = build(options.schedule, options.rate, options.seconds,
                                        options.warmup, options.ramp_steps)
        self._ends = self.schedule.ends()
        self.options = options
        self.names = [f"{options.model}:predict [{p.name}]" for p in self.schedule.phases]
        self.samples: list[Sample] = []
        self.in_flight: dict[int, tuple[int, float, int]] = {}
        """id -> (phase, intended_s, rows) of every request spawned and not yet answered."""
        self.cpu_marks: list[tuple[int, float, float]] = []
        """(phase boundary, clock, generator CPU seconds) where it started and at each
        phase's end after that (boundary i: the end of phase i - 1)."""
        self.shares: list[tuple[float, int]] = []
        """(clock, workers sharing the rate) of each plan followed."""
        self.driving = False
        """Claimed by the first user of the process, before it builds its payloads."""
        self.request_type = ""
        self._runner = runner
        self._requests = Group()
        self._ids = itertools.count()
        # Workers draw different arrivals: the same seed would send in lockstep bursts.
        self._rng = random.Random(options.seed + runner.worker_index)
        self._workers = 1
        self._planned = Event()
        self._t0: float | None = None
        self._phase = 0
        self._due = 0.0
        """When the next request is due, seconds after the start."""
        self._marker: gevent.Greenlet | None = None
        self.stopped_at: float | None = None
        """When it stopped sending (clock seconds): the schedule was over, or it was told to stop."""

    def clock(self) -> float:
        assert self._t0 is not None, "the master's first plan starts the clock"
        return time.perf_counter() - self._t0

    @property
    def started(self) -> bool:
        """Its arrivals have begun: the master's plan came and its payloads are built."""
        return self._marker is not None

    def follow(self, plan: dict[str, Any]) -> None:
        """A ``PLAN`` from the master: the first sets the clock to the schedule's; each sets
        the share of the rate, from the next arrival on."""
        if self._t0 is None:
            self._t0 = time.perf_counter() - plan["elapsed"]
        self._workers = max(1, plan["workers"])
        self.shares.append((round(self.clock(), 3), self._workers))
        self._planned.set()

    def drive(self, send: Send, pool: RequestPool, request_type: str) -> None:
        """Send at this generator's share of the schedule's rate until it ends, then finish
        and ship the samples.

        The arrivals run in a greenlet of their own, not in the user's: when a worker leaves,
        Locust briefly gives another worker a second user and then stops either of them.
        """
        self.request_type = request_type
        gevent.spawn(self._run, send, pool)

    def _run(self, send: Send, pool: RequestPool) -> None:
        # Full collections walking every sample and imported module stalled the
        # generator for tens of ms (p99 137 -> 11 ms at 4K req/s once frozen).
        gc.collect()
        gc.freeze()
        self._runner.send_message(READY, {
            "worker": self._runner.worker_index, "host": socket.gethostname(), "pid": os.getpid(),
            "cores": sorted(os.sched_getaffinity(0)), "kind": self.request_type})
        self._planned.wait()
        self._start()
        while True:
            gevent.sleep(max(0.0, self._due - self.clock()))
            if self.stopped_at is not None or self._phase == len(self.schedule.phases):
                break
            rows, payload = pool.draw()
            if len(self.in_flight) >= self.options.max_in_flight:
                self._fail(self._phase, self._due, rows, "in-flight cap")
            else:
                key = next(self._ids)
                self.in_flight[key] = (self._phase, self._due, rows)
                self._requests.spawn(self._one, key, send, payload)
            self._next_arrival()
        self.stop(wait=self.schedule.seconds + self.options.drain - self.clock())

    def _start(self) -> None:
        """Arrivals from now, in the phase running now (a worker may join late)."""
        now = self.clock()
        phase = self.schedule.phase_at(now)
        self._phase = len(self.schedule.phases) if phase is None else phase
        self._due = now
        self.cpu_marks.append((self._phase, now, _cpu_seconds()))
        self._next_arrival()
        self._marker = gevent.spawn(self._mark_phase_ends)

    def _mark_phase_ends(self) -> None:
        for boundary, end in enumerate(self._ends, 1):
            if end > self.clock():
                gevent.sleep(end - self.clock())
                self.cpu_marks.append((boundary, self.clock(), _cpu_seconds()))

    def _next_arrival(self) -> None:
        """Advance ``_due`` by an exponential gap at this generator's share of the current
        phase's rate; a gap that crosses a phase's end restarts there at the next phase's
        rate (arrivals are memoryless, so this is exactly Poisson at each phase's rate, and
        the generators' arrivals together are Poisson at the whole rate)."""
        while self._phase < len(self._ends):
            rate = self.schedule.phases[self._phase].rate / self._workers
            due = self._due + self._rng.expovariate(rate)
            if due < self._ends[self._phase]:
                self._due = due
                return
            self._due = self._ends[self._phase]
            self._phase += 1

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

    def _book_the_rest(self, stopped_at: float) -> None:
        """Count what is unanswered, or was due but never sent (a generator that fell
        behind), as failed: nothing leaves the error rate. The requests still out are
        killed first, so none can also report an answer later. Arrivals due after it stopped
        sending (a run stopped early; a worker leaving, whose share the others take over)
        were never offered: they are not samples."""
        self._requests.kill(block=True)
        for phase, due, rows in self.in_flight.values():
            self._fail(phase, due, rows, "no answer before the run ended")
        self.in_flight.clear()
        while self._phase < len(self.schedule.phases) and self._due <= stopped_at:
            self._fail(self._phase, self._due, 0, "not sent before the run ended")
            self._next_arrival()

    def stop(self, wait: float) -> None:
        """Stop sending, give the requests in flight ``wait`` seconds to be answered, book
        what is left (``_book_the_rest``) and send every sample to the master, in chunks;
        once only."""
        if not self.started or self.stopped_at is not None:
            return
        self.stopped_at = self.clock()
        self._requests.join(timeout=max(0.0, wait))
        self._book_the_rest(self.stopped_at)
        if self._marker is not None and self.stopped_at >= self.schedule.seconds:
            self._marker.join()  # the schedule's end: its last mark is due now
        elif self._marker is not None:
            self._marker.kill()
        samples, self.samples = self.samples, []
        last = {"requests": len(samples), "cpu_marks": self.cpu_marks, "shares": self.shares}
        while True:  # from the end, dropping each chunk once sent: memory stays flat
            chunk = [row(s) for s in samples[-CHUNK:]]
            del samples[-CHUNK:]
            self._runner.send_message(SAMPLES, {"samples": chunk, **({} if samples else last)})
            if not samples:
                break
        if isinstance(self._runner, WorkerRunner):
            self._report_stats()

    def _report_stats(self) -> None:
        """Hand Locust's statistics to the master now, as its periodic report (every 3 s)
        does: a worker that leaves sends no last report, and the master waits for them."""
        data: dict[str, Any] = {}
        events.report_to_master.fire(client_id=self._runner.client_id, data=data)
        self._runner.send_message("stats", data)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.init.add_listener
def _attach(environment: Environment, runner: Runner, **_: Any) -> None:
    """The master (or the single process) collects; workers (or it) generate."""
    if environment.parsed_options is None:
        return
    if not isinstance(runner, WorkerRunner):
        environment.open_loop_collector = Collector(environment.parsed_options, runner)
    if not isinstance(runner, MasterRunner):
        def on_plan(environment: Environment, msg: Any, **_: Any) -> None:
            generator: OpenLoop | None = getattr(environment, "open_loop", None)
            if generator is not None:
                generator.follow(msg.data)

        runner.register_message(PLAN, on_plan)


@events.test_start.add_listener
def _new_run(environment: Environment, **_: Any) -> None:
    """Before the users are built; the generator comes with the first of them (``_drive``).

    A worker has the master's options by now, but a worker joining a running master may get
    here before Locust has finished setting it up (``environment.runner`` still None).
    """
    options = environment.parsed_options
    if options is None:
        return
    environment.open_loop = None
    # FastHttpUser sizes its connection pool and timeouts from class attributes.
    RestUser.concurrency = options.connections or options.max_in_flight
    RestUser.network_timeout = RestUser.connection_timeout = options.timeout


@events.test_stopping.add_listener
def _write(environment: Environment, **_: Any) -> None:
    """A generator stopped early (a worker leaving, Ctrl-C) lets its requests in flight be
    answered and ships its samples; then the collector writes (in one process, in this
    order)."""
    generator: OpenLoop | None = getattr(environment, "open_loop", None)
    if generator is not None:
        generator.stop(wait=generator.options.timeout)
    collector: Collector | None = getattr(environment, "open_loop_collector", None)
    if collector is not None and collector.started:
        collector.write(Path(collector.options.out_dir))


class OpenLoopShape(LoadTestShape):
    """One open-loop user per generator process (each worker, or this process) until every
    generator has sent its samples and Locust's statistics have them all."""

    def tick(self) -> tuple[int, float] | None:
        collector: Collector = self.runner.environment.open_loop_collector
        if collector.over():
            return None
        collector.follow()
        users = max(1, self.runner.worker_count)
        return users, float(users)


class RequestTimeout(Exception):
    """``--timeout`` passed before the whole request was answered."""


def _drive(user: User, prepare: Callable[[], tuple[Send, RequestPool]], kind: str) -> None:
    """The first user of the process builds its generator and payloads and starts it, then
    idles until Locust stops it; any other user only idles (see ``OpenLoop.drive``). A set-up
    that fails stops the run (Locust would otherwise retry the task forever)."""
    environment = user.environment
    generator: OpenLoop | None = getattr(environment, "open_loop", None)
    if generator is None:
        generator = environment.open_loop = OpenLoop(environment.parsed_options, environment.runner)
    if not generator.driving:
        generator.driving = True  # before the set-up: it yields (gRPC imports TensorFlow)
        try:
            send, pool = prepare()
        except Exception:  # noqa: BLE001 - whatever it is, there is nothing to measure
            logging.exception("the %s user could not be set up; stopping", kind)
            user.environment.runner.quit()
            return
        generator.drive(send, pool, kind)
    Event().wait()


def _report_failure(kind: str, name: str, started: float, why: str) -> str:
    events.request.fire(request_type=kind, name=name, response_length=0,
                        response_time=(time.perf_counter() - started) * 1e3,
                        exception=RuntimeError(why), context={})
    return why


def _key_share(options: Any) -> KeyShare | None:
    if options.key_field is None:
        return None
    return KeyShare(options.key_field, options.precomputed_share, options.keys)


Post = tuple[bytes, dict[str, str]]
"""A REST request: its body and headers."""
JSON_HEADERS = {"Content-Type": "application/json"}


class RestUser(FastHttpUser):
    """``POST /v1/models/MODEL:predict`` with TF Serving's row-format JSON."""

    @task
    def predict(self) -> None:
        _drive(self, self._prepare, "POST")

    def _prepare(self) -> tuple[Send, RequestPool]:
        options = self.environment.parsed_options
        pool = RequestPool(options.model, RowsMix.parse(options.rows),
                           lambda rows: (orjson.dumps(predict_body(rows)), JSON_HEADERS),
                           seed=options.seed, keys=_key_share(options))
        return self._poster(f"/v1/models/{options.model}:predict", _predict_error), pool

    def _poster(self, path: str, check: Callable[[Any, int], str | None]) -> Send:
        """Sends a ``Post`` to ``path``; ``check(response, rows)`` says what is wrong with a
        200 answer, if anything."""
        timeout = self.environment.parsed_options.timeout

        def send(rows: int, request: Post, name: str) -> str | None:
            body, headers = request
            started = time.perf_counter()
            # FastHttpUser's timeouts bound each socket operation; this bounds the whole
            # request, like gRPC's deadline (waiting for a free connection included).
            deadline = gevent.Timeout.start_new(timeout, RequestTimeout())
            try:
                answer = self.client.post(path, data=body, name=name, catch_response=True,
                                          headers=headers)
            except Exception as error:  # noqa: BLE001 - Locust reports only what it returns
                return _report_failure("POST", name, started, type(error).__name__)
            finally:
                deadline.cancel()
            with answer as response:
                why = _status_error(response) or check(response, rows)
                if why:
                    response.failure(why)
                else:
                    response.success()
                return why

        return send


class V2JsonUser(RestUser):
    """``POST /v2/models/MODEL/infer`` (the Open Inference Protocol) with JSON tensors: the
    signature's input columns, flat ``data``, BYTES as UTF-8 text (so not the image model:
    JPEGs are not text)."""

    binary = False

    def _prepare(self) -> tuple[Send, RequestPool]:
        options = self.environment.parsed_options
        pool = RequestPool(options.model, RowsMix.parse(options.rows),
                           lambda rows: v2_infer(options.model, rows, binary=self.binary),
                           seed=options.seed, keys=_key_share(options))
        return self._poster(f"/v2/models/{options.model}/infer", _infer_error), pool


class V2BinaryUser(V2JsonUser):
    """``POST /v2/models/MODEL/infer`` with the binary tensor extension, inputs and outputs:
    the body tritonclient sends by default (``serving.v2.raw``'s encoding)."""

    binary = True


def _status_error(response: Any) -> str | None:
    if response.status_code == 200:
        return None
    return f"HTTP {response.status_code}" if response.status_code else (
        f"{type(response.error).__name__}" if response.error else "no response")


def _predict_error(response: Any, rows: int) -> str | None:
    try:
        answered = len(orjson.loads(response.content)["predictions"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "not a predict response"
    return None if answered == rows else f"{answered} predictions for {rows} rows"


def _infer_error(response: Any, rows: int) -> str | None:
    """An infer response (JSON, or its JSON head and the binary outputs after it) whose
    every output has ``rows`` rows."""
    content = response.content
    try:
        length = response.headers.get("Inference-Header-Content-Length")
        head = content[:int(length)] if length is not None else content
        outputs = orjson.loads(head)["outputs"]
        firsts = {output["shape"][0] for output in outputs}
        binary = sum(output.get("parameters", {}).get("binary_data_size", 0) for output in outputs)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return "not an infer response"
    if binary != len(content) - len(head):
        return f"{len(content) - len(head)} bytes of binary outputs, the header says {binary}"
    return None if firsts == {rows} else f"outputs of {sorted(firsts)} rows for {rows} rows"


class GrpcUser(User):
    """``PredictionService/Predict`` through TF Serving's stubs, made gevent-friendly."""

    @task
    def predict(self) -> None:
        _drive(self, self._prepare, "grpc")

    def _prepare(self) -> tuple[Send, RequestPool]:
        # tensorflow-serving-api's protos import TensorFlow: only gRPC runs pay for it.
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from loadtests.support.payloads import columns

        options = self.environment.parsed_options

        def encode(rows: list[Instance]) -> Any:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = options.model
            request.model_spec.signature_name = options.signature
            for name, array in columns(options.model, rows).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(array))  # as TF Serving's clients do
            return request

        channel = grpc.insecure_channel(self.host, options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        pool = RequestPool(options.model, RowsMix.parse(options.rows), encode, seed=options.seed,
                           keys=_key_share(options))

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
