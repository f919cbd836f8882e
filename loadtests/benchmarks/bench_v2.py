"""The Open Inference Protocol (KServe v2) against TF Serving's REST on one gateway: req/s,
p50/p99 and server CPU per request for natality and the image model, a closed-loop
concurrency sweep over each protocol (``make bench-v2``).

One gateway (``python -m serving --model_config_file models/models.config --enable_batching
...``, as ``bench_grpc``) serves both models over every protocol, pinned to one core; the
load runs on the other. Per model, protocol and concurrency, one driver process (pinned to the
load core) keeps ``concurrency`` requests in flight with the client people use for it:

  v2-json    tritonclient.http.aio, JSON tensors in and out (not the image model: JPEG bytes
             are not UTF-8, and v2 JSON carries BYTES as text)
  v2-binary  tritonclient.http.aio, binary tensors in and out (its default)
  v2-grpc    tritonclient.grpc.aio (raw contents)
  v2-grpc-typed
             grpc.aio with the protocol's messages (``serving.v2.protos``), every input in its
             typed ``contents`` field: what clients without raw support send, and the only
             gRPC form MLServer takes for BYTES
  tfs-rest   aiohttp (what tritonclient.http.aio runs on), TF Serving's row-format JSON
             ``:predict`` (JPEGs as ``{"b64": ...}``)
  tfs-grpc   grpc.aio with tensorflow-serving-api's PredictionServiceStub, inputs from
             ``tf.make_tensor_proto`` (as TF Serving's clients build them): v2-grpc's cost
             beside the same transport's

Every protocol sends the same rows (``--rows`` per request, from the models' samplers), and
each driver checks its first answers against the model's known answer before any load. After
a warm-up the driver says so, and the server's CPU seconds (``/proc``) are read around the
measured run; a closed loop has nothing in flight when the driver ends, so its answers are the
requests the server answered. The goal of issue 24: v2-binary and v2-grpc each within 10% of
tfs-rest's server CPU per request (the ratio lines, from one run; compare ratios, not
absolute numbers, across machines). In a closed loop the protocol answered faster gets more
requests per second and so larger batches, which lowers its CPU per request: ``--rates``
sends every protocol at the same fixed rates instead (evenly spaced, latency from when each
request was due), which compares the servers' cost at equal load.

``--slo MS[,MODEL=MS...]`` then searches, for every protocol and MLServer setting, the
highest fixed rate answered within a p99 of MS (``loadtests.locust_scenarios.slo``: the
same rules and steps as ``make loadtest``'s searches, with this driver instead of Locust, at
most ``SEARCH_IN_FLIGHT`` requests in flight so that the SLO, not the driver, ends a search).

    python -m loadtests.benchmarks.bench_v2 [--duration 10] [--warmup 3]
        [--concurrency 1,4,16,64] [--rates R1,R2] [--slo 25,image_classifier=100] [--search-only]
        [--models natality,image_classifier]
        [--protocols v2-json,v2-binary,v2-grpc,v2-grpc-typed,tfs-rest,tfs-grpc] [--rows 1]

Writes ``OUT/v2-<stamp>.json``, ``v2-latest.json``, ``v2-latest.md`` and, with ``--slo``,
``v2-latest-MODEL.png`` (``OUT``: bench-results/).
"""
from __future__ import annotations

import abc
import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.locust_scenarios.slo import SearchPlan, search
from loadtests.support.outputs import RUNS
from loadtests.support.payloads import MODELS, check, columns, instances, predict_body
from loadtests.support.probes import scrape
from loadtests.support.processes import (
    REPO,
    Pinning,
    Server,
    free_port,
    git_commit,
    log,
    machine,
    terminate_on_sigterm,
)

BATCHING_CONFIG = REPO / "serving" / "examples" / "batching.config"
MODELS_CONFIG = REPO / "models" / "models.config"
PROTOCOLS = ("v2-json", "v2-binary", "v2-grpc", "v2-grpc-typed", "tfs-rest", "tfs-grpc")
BASELINE = "tfs-rest"
GOAL = 1.10
"""v2-binary and v2-grpc: server CPU per request at most this times tfs-rest's."""
JSON_ONLY_TEXT = {"image_classifier"}
"""Models whose inputs v2 JSON cannot carry (BYTES that are not UTF-8)."""
DISTINCT = 64
"""Distinct requests each driver cycles through."""
MEASURING = "measuring"
START_RATES = {"natality": 300.0, "image_classifier": 20.0}
"""Where each model's SLO search starts (a good guess saves steps)."""
SEARCH_IN_FLIGHT = 512
"""The SLO searches' cap on requests in flight (a send due over it is an error)."""
MLSERVER_PROTOCOLS = ("v2-json", "v2-grpc-typed")
"""What MLServer 1.7 takes from these clients: not the binary extension, not raw BYTES."""
MLSERVER_BATCHING = {"max_batch_size": 128, "max_batch_time": 0.002}
"""MLServer's adaptive batching, as the gateway's ``serving/examples/batching.config`` (128 rows, 2 ms)."""


# --- the driver (a subprocess on the load core) ---------------------------------------------


@dataclass(frozen=True)
class Drive:
    protocol: str
    model: str
    rows: int
    rest: str
    """``host:port`` of the REST API."""
    grpc: str
    concurrency: int
    """Requests in flight (closed loop), or the cap on them (``rate``)."""
    warmup_s: float
    duration_s: float
    rate: float | None = None
    """Requests/s, evenly spaced; None: closed loop."""


def _bytes_columns(model: str, rows: list) -> dict[str, np.ndarray]:
    return {name: np.array([v.encode() if isinstance(v, str) else v for v in array], dtype=object)
            if array.dtype == object else array for name, array in columns(model, rows).items()}


def _predictions(outputs: dict[str, np.ndarray]) -> list:
    """v2 output tensors in TF Serving's row format, for ``payloads.check``; a single output
    of one value a row may come as [rows, 1] (MLServer's NumpyCodec adds the 1)."""
    if len(outputs) == 1:
        (array,) = outputs.values()
        return (array.reshape(-1) if array.size == len(array) else array).tolist()
    count = len(next(iter(outputs.values())))
    return [{name: array[i].tolist() for name, array in outputs.items()} for i in range(count)]


class Client(abc.ABC):
    """One protocol's client: ``call(i)`` sends the i-th request (cycling) and returns its
    answer's outputs, or raises."""

    def __init__(self, job: Drive, bodies: list[list]) -> None:
        self.job = job
        self.bodies = bodies

    @abc.abstractmethod
    async def open(self) -> None:
        ...

    @abc.abstractmethod
    async def call(self, index: int) -> dict[str, np.ndarray] | list:
        ...

    @abc.abstractmethod
    async def close(self) -> None:
        ...


class Triton(Client):
    async def open(self) -> None:
        job = self.job
        if job.protocol == "v2-grpc":
            import tritonclient.grpc.aio as triton

            self.client = triton.InferenceServerClient(job.grpc)
        else:
            import tritonclient.http.aio as triton

            self.client = triton.InferenceServerClient(job.rest, conn_limit=job.concurrency)
        binary = job.protocol != "v2-json"
        metadata = await self.client.get_model_metadata(job.model)
        names = [o["name"] if isinstance(o, dict) else o.name
                 for o in (metadata["outputs"] if isinstance(metadata, dict) else metadata.outputs)]
        # None (tritonclient asks every output in binary): MLServer's metadata lists no outputs,
        # and it answers JSON whatever is asked
        self.outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in names] \
            if names and not binary else None
        # tritonclient.http.aio sends no Content-Type, which MLServer answers with 422, and
        # aiohttp offers gzip, which MLServer then uses and tritonclient.aio does not undo
        self.headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"} \
            if job.protocol == "v2-json" else None
        self.requests = []
        for rows in self.bodies:
            inputs = []
            for name, array in _bytes_columns(job.model, rows).items():
                tensor = triton.InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "FP32")
                if job.protocol == "v2-grpc":
                    tensor.set_data_from_numpy(array)
                else:
                    tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            self.requests.append(inputs)

    async def call(self, index: int) -> dict[str, np.ndarray]:
        result = await self.client.infer(self.job.model, self.requests[index % len(self.requests)],
                                         outputs=self.outputs, headers=self.headers)
        answer = result.get_response()
        names = [o.name for o in answer.outputs] if self.job.protocol == "v2-grpc" else \
            [o["name"] for o in answer["outputs"]]
        return {name: result.as_numpy(name) for name in names}

    async def close(self) -> None:
        await self.client.close()


class TfsRest(Client):
    async def open(self) -> None:
        import aiohttp
        import orjson

        self.loads = orjson.loads
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.job.concurrency))
        self.url = f"http://{self.job.rest}/v1/models/{self.job.model}:predict"
        self.requests = [orjson.dumps(predict_body(rows)) for rows in self.bodies]

    async def call(self, index: int) -> list:
        async with self.session.post(self.url, data=self.requests[index % len(self.requests)],
                                     headers={"Content-Type": "application/json"}) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return self.loads(body)["predictions"]

    async def close(self) -> None:
        await self.session.close()


class TfsGrpc(Client):
    async def open(self) -> None:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        from serving.runtime.tensors import to_numpy

        self.to_numpy = to_numpy
        self.channel = grpc.aio.insecure_channel(self.job.grpc)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.requests = []
        for rows in self.bodies:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = self.job.model
            for name, array in _bytes_columns(self.job.model, rows).items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
            self.requests.append(request)

    async def call(self, index: int) -> dict[str, np.ndarray]:
        response = await self.stub.Predict(self.requests[index % len(self.requests)], timeout=30)
        return {name: self.to_numpy(name, proto) for name, proto in sorted(response.outputs.items())}

    async def close(self) -> None:
        await self.channel.close()


class TypedGrpc(Client):
    async def open(self) -> None:
        import grpc

        from serving.v2 import datatypes, protos, raw

        self.datatypes, self.raw = datatypes, raw
        self.channel = grpc.aio.insecure_channel(self.job.grpc)
        self.infer = self.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                              request_serializer=protos.ModelInferRequest.SerializeToString,
                                              response_deserializer=protos.ModelInferResponse.FromString)
        self.requests = []
        for rows in self.bodies:
            request = protos.ModelInferRequest(model_name=self.job.model)
            for name, array in _bytes_columns(self.job.model, rows).items():
                datatype = datatypes.for_dtype(array.dtype)
                tensor = request.inputs.add(name=name, datatype=datatype.name, shape=array.shape)
                getattr(tensor.contents, datatype.field).extend(array.reshape(-1).tolist())
            self.requests.append(request)

    async def call(self, index: int) -> dict[str, np.ndarray]:
        response = await self.infer(self.requests[index % len(self.requests)], timeout=30)
        answers = {}
        for i, tensor in enumerate(response.outputs):
            datatype = self.datatypes.BY_NAME[tensor.datatype]
            answers[tensor.name] = self.raw.decode(response.raw_output_contents[i], datatype, list(tensor.shape),
                                                   tensor.name) if response.raw_output_contents else \
                np.array(getattr(tensor.contents, datatype.field), dtype=datatype.dtype).reshape(tuple(tensor.shape))
        return answers

    async def close(self) -> None:
        await self.channel.close()


CLIENTS: dict[str, type[Client]] = {"tfs-rest": TfsRest, "tfs-grpc": TfsGrpc, "v2-grpc-typed": TypedGrpc}
"""The clients that are not tritonclient's (``Triton``)."""


def _answered(answer: dict[str, np.ndarray] | list) -> list:
    return _predictions(answer) if isinstance(answer, dict) else answer


async def _load(client: Client, seconds: float) -> dict[str, Any]:
    """``seconds`` of load: closed loop (``concurrency`` requests always in flight), or sends
    due evenly at ``rate`` with at most ``concurrency`` in flight (a send due over the cap is
    an error, "in-flight cap"), latency counted from when it was due."""
    job = client.job
    latencies: list[float] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    end = started + seconds

    async def one(index: int, due: float) -> None:
        try:
            answered = len(_answered(await client.call(index)))
            why = None if answered == job.rows else f"{answered} answers for {job.rows} rows"
        except Exception as error:  # noqa: BLE001 - counted, by kind
            why = type(error).__name__
        if why is None:
            latencies.append(time.perf_counter() - due)
        else:
            errors[why] = errors.get(why, 0) + 1

    if job.rate is None:
        async def loop(index: int) -> None:
            while (now := time.perf_counter()) < end:
                await one(index, now)
                index += job.concurrency

        await asyncio.gather(*(loop(i) for i in range(job.concurrency)))
    else:
        in_flight: set[asyncio.Task] = set()
        index = 0
        while (due := started + index / job.rate) < end:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= job.concurrency:
                errors["in-flight cap"] = errors.get("in-flight cap", 0) + 1
            else:
                task = asyncio.create_task(one(index, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            index += 1
        await asyncio.gather(*in_flight)
    return {"ok": len(latencies), "errors": errors, "seconds": time.perf_counter() - started,
            "latencies_us": sorted(round(x * 1e6) for x in latencies)}


async def _drive(job: Drive) -> dict[str, Any]:
    data = instances(job.model, DISTINCT * job.rows if job.model == "natality" else 100, 2024)
    bodies = [[data[(i * job.rows + k) % len(data)] for k in range(job.rows)] for i in range(DISTINCT)]
    client = CLIENTS.get(job.protocol, Triton)(job, bodies)
    await client.open()
    try:
        for index in range(3):  # the right answers before any load
            problem = check(job.model, predict_body(bodies[index]),
                            {"predictions": _answered(await client.call(index))})
            if problem:
                raise RuntimeError(f"{job.protocol} answered wrongly: {problem}")
        if job.warmup_s:
            await _load(client, job.warmup_s)
        print(MEASURING, flush=True)
        cpu = _cpu_seconds()
        result = await _load(client, job.duration_s)
        return {**result, "cpu_s": _cpu_seconds() - cpu}
    finally:
        await client.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive_main(job_json: str) -> None:
    result = asyncio.run(_drive(Drive(**json.loads(job_json))))
    print(json.dumps(result), flush=True)


# --- the orchestrator -----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    model: str
    protocol: str
    concurrency: int
    rate: float | None
    qps: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: dict[str, int]
    server_cpu_s: float
    mean_batch_rows: float | None
    """Rows per model call in the window: CPU per request falls as batches grow, and a
    protocol answered at a lower rate gets smaller batches; compare it with the CPU."""
    loadgen_cpu: float
    """CPU seconds per second of the driver while it measured (1.0: its core is saturated,
    and the figures are the client's limit, not the server's)."""
    seconds: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s / self.ok * 1e3 if self.ok else float("nan")

    @property
    def load(self) -> str:
        return f"x{self.concurrency}" if self.rate is None else f"{self.rate:g}/s"


def measure(job: Drive, server: Server, pinning: Pinning, name: str | None = None) -> Run:
    """One warmed-up closed-loop run; ``name``: the row's protocol column when the server is
    not the gateway (no batch metrics then)."""
    label = f"{job.model} {name or job.protocol} " + (
        f"x{job.concurrency}" if job.rate is None else f"{job.rate:g}/s")
    log(f"{label}: warm-up {job.warmup_s:g} s, measuring {job.duration_s:g} s")
    proc = subprocess.Popen([*pinning.loadgen, sys.executable, "-m", "loadtests.benchmarks.bench_v2", "drive",
                             json.dumps(asdict(job))], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.stdout is not None
    cpu_before = counted = None
    lines = []
    for line in proc.stdout:  # the server's CPU window opens when the driver starts measuring
        if line.strip() == MEASURING:
            counted = None if name else scrape(server, job.model)
            cpu_before = server.cpu_seconds()
        else:
            lines.append(line)
    proc.wait(timeout=60)
    cpu_after = server.cpu_seconds()
    batches = rows = 0.0
    if counted is not None:
        now = scrape(server, job.model)
        batches, rows = now.batches - counted.batches, now.batch_rows - counted.batch_rows
    server.check_alive(f"during {label}")
    if proc.returncode != 0 or cpu_before is None or cpu_after is None:
        raise RuntimeError(f"the {label} driver failed ({proc.returncode}): {''.join(lines[-5:])}")
    result = json.loads(lines[-1])
    latencies = np.array(result["latencies_us"] or [0]) / 1e3
    return Run(job.model, name or job.protocol, job.concurrency, job.rate, qps=result["ok"] / result["seconds"],
               p50_ms=float(np.percentile(latencies, 50)), p99_ms=float(np.percentile(latencies, 99)),
               ok=result["ok"], errors=result["errors"], server_cpu_s=cpu_after - cpu_before,
               mean_batch_rows=rows / batches if batches else None,
               loadgen_cpu=result["cpu_s"] / result["seconds"],
               seconds=result["seconds"])


def ratios(runs: Sequence[Run]) -> list[str]:
    """Each protocol's server CPU per request over tfs-rest's, same model and concurrency (and
    v2-grpc's over tfs-grpc's: the same transport); the
    gateway's req/s and p99 against each MLServer setting's, same protocol."""
    base = {(r.model, r.load): r for r in runs if r.protocol == BASELINE}
    grpc_base = {(r.model, r.load): r for r in runs if r.protocol == "tfs-grpc"}
    ours = {(r.model, r.protocol, r.load): r for r in runs}
    lines = []
    for r in runs:
        if r.protocol.startswith("mlserver"):
            protocol = peer_protocol(r.protocol)
            mine = ours.get((r.model, protocol, r.load))
            if mine is not None and r.qps:
                lines.append(f"{r.model} {r.load}: gateway {protocol} / {r.protocol}: req/s "
                             f"{mine.qps / r.qps:.2f}x, p99 {mine.p99_ms:.1f} vs {r.p99_ms:.1f} ms")
            continue
        ref = base.get((r.model, r.load))
        if r.protocol == BASELINE or ref is None or not ref.ok or not r.ok:
            continue
        ratio = r.cpu_ms_per_request / ref.cpu_ms_per_request
        goal = f" (goal <= {GOAL:.2f}: {'met' if ratio <= GOAL else 'NOT met'})" \
            if r.protocol in ("v2-binary", "v2-grpc") else ""
        lines.append(f"{r.model} {r.load}: {r.protocol}/{BASELINE} server CPU per request "
                     f"{ratio:.2f}{goal}")
        same = grpc_base.get((r.model, r.load))
        if r.protocol == "v2-grpc" and same is not None and same.ok:
            lines.append(f"{r.model} {r.load}: v2-grpc/tfs-grpc server CPU per request "
                         f"{r.cpu_ms_per_request / same.cpu_ms_per_request:.2f}")
    return lines


def table(runs: Sequence[Run], title: str) -> str:
    lines = [title, "",
             "| model | protocol | load | req/s | p50 ms | p99 ms | errors | server CPU ms/req "
             "| rows/batch | server CPU share | loadgen CPU share |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r.model} | {r.protocol} | {r.load} | {r.qps:.0f} | {r.p50_ms:.2f} "
                     f"| {r.p99_ms:.2f} | {sum(r.errors.values())} | {r.cpu_ms_per_request:.3f} "
                     f"| {'?' if r.mean_batch_rows is None else f'{r.mean_batch_rows:.1f}'} "
                     f"| {r.server_cpu_s / r.seconds:.2f} | {r.loadgen_cpu:.2f} |")
    return "\n".join([*lines, "", *ratios(runs)])


@dataclass(frozen=True)
class Target:
    """One server and protocol to load: the gateway's, or MLServer's (``name`` its row label)."""

    server: Server
    protocol: str
    rest: str
    grpc: str
    name: str | None = None
    batching: bool = True

    @property
    def label(self) -> str:
        return self.name or self.protocol


def series(target: Target, model: str, args: argparse.Namespace, pinning: Pinning) -> tuple[list[Run], list[dict]]:
    """The fixed points (closed-loop sweep or ``--rates``) and, with ``--slo``, the SLO search
    of one protocol on one model; (runs, [search result])."""
    def job(concurrency: int, rate: float | None) -> Drive:
        return Drive(target.protocol, model, args.rows, target.rest, target.grpc, concurrency, args.warmup,
                     args.duration, rate)

    runs = [] if args.search_only else [measure(job(c, rate), target.server, pinning, target.name)
                                        for c, rate in _points(args)]
    slo = args.slo.get(model, args.slo.get(""))
    if not slo:
        return runs, []

    def step(rate: float) -> dict[str, Any]:
        run = measure(job(SEARCH_IN_FLIGHT, rate), target.server, pinning, target.name)
        failed = sum(run.errors.values())
        return {"offered_rate": rate, "achieved_rate": run.qps, "requests": run.ok + failed,
                "error_rate": failed / (run.ok + failed) if run.ok + failed else 0.0,
                "errors": run.errors, "latency_ms": {"p50": run.p50_ms, "p99": run.p99_ms},
                "generator_cpu": run.loadgen_cpu, "server_cpu": [run.server_cpu_s / run.seconds],
                "cpu_ms_per_request": run.cpu_ms_per_request, "rows_per_model_call": run.mean_batch_rows}

    start = args.start_rate or START_RATES[model]
    found = search(step, SearchPlan(slo_ms=slo, start_rate=start, max_steps=args.search_steps))
    setting = {"name": f"{model} {target.label}", "server": "mlserver" if target.name else "gateway",
               "max_batch_size": MLSERVER_BATCHING["max_batch_size"] if target.batching else 0}
    return runs, [{"model": model, "protocol": target.label, "setting": setting, **found}]


def main(argv: Sequence[str] | None = None) -> list[Run]:
    args = parse_args(argv)
    terminate_on_sigterm()
    pinning = Pinning.detect()
    log(pinning.note)
    rest_port, grpc_port = free_port(), free_port()
    argv = [*pinning.server, sys.executable, "-m", "serving", f"--port={grpc_port}",
            f"--rest_api_port={rest_port}", f"--model_config_file={args.model_config_file}",
            "--enable_batching", f"--batching_parameters_file={BATCHING_CONFIG}"]
    args.out.mkdir(parents=True, exist_ok=True)
    runs, searches = [], []
    with Server("gateway", argv, args.out / "logs" / "bench-v2-gateway.log", rest_port) as server:
        for model in args.models:
            for protocol in args.protocols:
                if protocol == "v2-json" and model in JSON_ONLY_TEXT:
                    continue
                more, found = series(Target(server, protocol, f"127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"),
                                     model, args, pinning)
                runs, searches = runs + more, searches + found
    if args.mlserver is not None:
        more, found = _mlserver_runs(args, pinning)
        runs, searches = runs + more, searches + found
    load = "SLO searches" if args.search_only else \
        f"fixed rates, at most {max(args.concurrency)} in flight" if args.rates else "closed loop"
    title = (f"Open Inference Protocol vs TF Serving REST, {args.rows}-row requests, {load}, one gateway "
             f"(commit {git_commit()}, {machine()}; {pinning.note})")
    text = report(runs, searches, args, title)
    print(text, flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = json.dumps({"title": title, "runs": [{**asdict(r), "cpu_ms_per_request": r.cpu_ms_per_request}
                                                    for r in runs],
                           "ratios": ratios(runs), "slo_ms": slo_text(args.slo), "searches": searches,
                           "slo_ratios": slo_ratios(searches)}, indent=2)
    (args.out / f"v2-{stamp}.json").write_text(document)
    (args.out / "v2-latest.json").write_text(document)
    (args.out / "v2-latest.md").write_text(text + "\n")
    plots = []
    for model in dict.fromkeys(s["model"] for s in searches):
        from loadtests.locust_scenarios.report import plot

        mine = [s for s in searches if s["model"] == model]
        plots.append(plot(mine, mine[0]["slo_ms"], f"bench-v2, {model}: {args.rows}-row requests, commit "
                          f"{git_commit()}", args.out / f"v2-latest-{model}.png").name)
    log(f"wrote {args.out}/v2-{stamp}.json, " + ", ".join(["v2-latest.json", "v2-latest.md", *plots]))
    return runs


def report(runs: Sequence[Run], searches: Sequence[dict], args: argparse.Namespace, title: str) -> str:
    parts = [table(runs, title)] if runs else [title]
    if searches:
        from loadtests.locust_scenarios.report import search_table

        parts += ["", f"Highest fixed rate within the p99 SLO ({slo_text(args.slo)} ms; open loop, {args.warmup:g} s "
                      f"warm-up and {args.duration:g} s a step, at most {SEARCH_IN_FLIGHT} in flight):", "",
                  search_table(searches), "", *slo_ratios(searches)]
    return "\n".join(parts)


def peer_protocol(name: str) -> str:
    """The protocol of an MLServer row ("mlserver v2-json, batching on": v2-json)."""
    return name.split()[1].rstrip(",")


def slo_ratios(searches: Sequence[dict]) -> list[str]:
    """Per model: the gateway's best protocol and its same protocol against each MLServer
    setting (req/s at the SLO, p99 there), and each v2 protocol's req/s at the SLO over tfs-rest's
    (v2-grpc's also over tfs-grpc's)."""
    lines = []
    for model in dict.fromkeys(s["model"] for s in searches):
        found = {s["protocol"]: s for s in searches if s["model"] == model}
        base = found.get(BASELINE, {}).get("max_qps")
        for name, s in found.items():
            if name.startswith("v2") and base and s["max_qps"]:
                lines.append(f"{model}: {name}/{BASELINE} req/s at the SLO {s['max_qps'] / base:.2f}")
        grpc = found.get("tfs-grpc", {}).get("max_qps")
        if grpc and found.get("v2-grpc", {}).get("max_qps"):
            lines.append(f"{model}: v2-grpc/tfs-grpc req/s at the SLO {found['v2-grpc']['max_qps'] / grpc:.2f}")
        for name, peer in found.items():
            if not name.startswith("mlserver"):
                continue
            best = max((n for n in found if not n.startswith("mlserver")), key=lambda n: found[n]["max_qps"] or 0,
                       default=None)
            for ours in dict.fromkeys((peer_protocol(name), best)):  # the best protocol, if another
                mine = found.get(ours)
                if mine is None or not mine["max_qps"]:
                    continue
                times = f"{mine['max_qps'] / peer['max_qps']:.2f}x" if peer["max_qps"] else "(the peer met no rate)"
                lines.append(f"{model}: gateway {ours} / {name}: req/s at the SLO {times} "
                             f"({mine['max_qps']} vs {peer['max_qps']}), p99 there {mine['p99_ms_at_max']:.1f} vs "
                             f"{peer['p99_ms_at_max'] or float('nan'):.1f} ms")
    return lines


def _mlserver_runs(args: argparse.Namespace, pinning: Pinning) -> tuple[list[Run], list[dict]]:
    """The peer: Seldon MLServer (its own venv, ``--mlserver``) serving the same SavedModel
    through ``loadtests/baselines/mlserver_tf.py``, adaptive batching on (``MLSERVER_BATCHING``)
    and off, driven over v2 JSON and gRPC with typed contents (``MLSERVER_PROTOCOLS``), natality
    only: MLServer refuses the binary tensor extension over REST and tritonclient.grpc's raw
    BYTES contents, and JPEGs are not JSON text.
    ``parallel_workers`` 0: inference in the server process, so its CPU is the process's."""
    runs, searches = [], []
    for batching in (True, False):
        if "natality" not in args.models:
            break
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        folder = args.out / "mlserver" / ("batching-on" if batching else "batching-off")
        (folder / "natality").mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
            "parallel_workers": 0}))
        version = max((d for d in (REPO / "models" / "natality").iterdir() if d.name.isdigit()),
                      key=lambda d: int(d.name))
        (folder / "natality" / "model-settings.json").write_text(json.dumps({
            "name": "natality", "implementation": "loadtests.baselines.mlserver_tf.SavedModelRuntime",
            "parameters": {"uri": str(version.resolve())}, **(MLSERVER_BATCHING if batching else {})}))
        argv = [*pinning.server, "env", f"PYTHONPATH={REPO}", str(args.mlserver / "bin" / "mlserver"), "start",
                str(folder)]
        log_path = args.out / "logs" / f"bench-v2-mlserver-{folder.name}.log"
        setting = f"batching {'on' if batching else 'off'}"
        ready = "/v2/models/natality/ready"
        with Server(f"mlserver, {setting}", argv, log_path, http_port, ready_path=ready) as server:
            for protocol in (p for p in MLSERVER_PROTOCOLS if p in args.protocols):
                more, found = series(Target(server, protocol, f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}",
                                            f"mlserver {protocol}, {setting}", batching), "natality", args, pinning)
                runs, searches = runs + more, searches + found
    return runs, searches


def _points(args: argparse.Namespace) -> list[tuple[int, float | None]]:
    """(concurrency, rate) of each point: the concurrency sweep, or each ``--rates`` rate
    capped at the largest concurrency."""
    if args.rates:
        return [(max(args.concurrency), rate) for rate in args.rates]
    return [(concurrency, None) for concurrency in args.concurrency]


def _slos(text: str) -> dict[str, float]:
    """``25,image_classifier=100``: {"": 25, "image_classifier": 100} ("": every other model)."""
    slos = {}
    for part in _listed(text):
        model, _, value = part.rpartition("=")
        if model and model not in MODELS:
            raise argparse.ArgumentTypeError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
        slos[model] = float(value)
    return slos


def slo_text(slos: dict[str, float]) -> str:
    return ", ".join(f"{model or 'every model'} {ms:g}" for model, ms in slos.items())


def _listed(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.benchmarks.bench_v2",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per point (0: none)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="requests in flight, comma-separated",
                        type=lambda text: tuple(int(c) for c in _listed(text)))
    parser.add_argument("--rates", default="", type=lambda text: tuple(float(r) for r in _listed(text)),
                        help="instead of the closed loop: these fixed rates (requests/s, comma-separated), "
                             "every protocol at the same rate, at most the largest --concurrency in flight")
    parser.add_argument("--slo", type=_slos, default={},
                        help="also search each protocol's highest fixed rate with p99 within this many ms: MS for "
                             "every model, MODEL=MS for one (e.g. 25,image_classifier=100)")
    starts = ", ".join(f"{model} {rate:g}" for model, rate in START_RATES.items())
    parser.add_argument("--start-rate", type=float,
                        help=f"the SLO searches' first rate (requests/s; default: {starts})")
    parser.add_argument("--search-steps", type=int, default=SearchPlan.max_steps,
                        help="at most this many steps a search")
    parser.add_argument("--search-only", action="store_true", help="with --slo: only the searches, no fixed points")
    parser.add_argument("--models", default=",".join(MODELS), type=_listed)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), type=_listed)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--model-config-file", type=Path, default=MODELS_CONFIG,
                        help="the gateway's models (must include --models)")
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--mlserver", type=Path,
                        help="a venv with mlserver and tensorflow (build/mlserver-venv): also measure "
                             "Seldon MLServer on natality, adaptive batching on and off")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or not args.concurrency or min(args.concurrency) < 1 \
            or min(args.rates, default=1) <= 0 or min(args.slo.values(), default=1) <= 0 \
            or (args.start_rate is not None and args.start_rate <= 0) \
            or args.search_steps < 1 \
            or (args.search_only and not args.slo) \
            or args.rows < 1 or not set(args.models) <= set(MODELS) or not args.models \
            or not args.protocols or not set(args.protocols) <= set(PROTOCOLS):
        parser.error(f"--duration > 0, --warmup >= 0, --concurrency >= 1, --rates > 0, --slo > 0 (and given with "
                     f"--search-only), --start-rate > 0, --search-steps >= 1, --rows >= 1, --models from "
                     f"{','.join(MODELS)}, --protocols from {','.join(PROTOCOLS)}")
    return args


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        drive_main(sys.argv[2])
    else:
        try:
            main()
        except KeyboardInterrupt:
            log("interrupted; servers stopped")
            sys.exit(130)
