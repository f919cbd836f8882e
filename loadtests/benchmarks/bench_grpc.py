"""gRPC against REST on one gateway: server CPU per 1-row natality Predict over each API, for
each gRPC server the gateway offers (``--grpc_server=loop|aio``).

One gateway process per gRPC server serves both APIs (``python -m serving --port G
--rest_api_port R --grpc_server S --model_config_file models/models.config --enable_batching
...``), pinned to one core; the load runs on the other. The runs are labelled by transport and
server (``rest-loop``, ``grpc-loop``, ``rest-aio``, ``grpc-aio``), and each gRPC run is compared
with the REST run of its own gateway. Each transport gets a warm-up, then the same measured
duration:

  closed loop (default)  ``--concurrency`` requests always in flight: REST through wrk (as
                         ``make bench``), gRPC through our driver (below)
  fixed rate (``--rate``) both through our driver at the same rate (Poisson-free, evenly
                         spaced sends, latency counted from when a request was due)

The server's CPU seconds (``/proc``) and its Predict counter (``/metrics``, read once nothing
is in flight) are taken around each measured run, so "server CPU per request" divides the
CPU the server used by the requests it answered in that window. A REST request is one row
(``--rows``) in TF Serving's row format, a gRPC request the same rows as TensorProtos (``tf.make_tensor_proto``,
as TF Serving's clients build them), pre-serialized; the first answers of each API are
checked against the model's known answer before any load.

The driver (``python -m loadtests.benchmarks.bench_grpc drive``, started pinned to the load core)
sends pre-serialized requests with grpc.aio through a generic unary call that does no proto
work, or plain HTTP/1.1 keep-alive requests over asyncio streams; ``--clients N`` splits the
load over N driver processes (one Python process tops out near one core; the table shows
the load generator's CPU, so a saturated generator is visible).

``--floor`` measures the transports themselves instead of the gateway: one process (pinned
as the gateway is) answers a fixed body on a no-op REST route (an ASGI app on uvicorn, as
the gateway answers its POSTs) and a fixed PredictResponse on three no-op gRPC servers, the gateway's
``LoopServer``, grpc's thread-pool ``grpc.server`` and ``grpc.aio``, each measured as above
(answers counted by the load generator): what a call costs before any work is done.

    python -m loadtests.benchmarks.bench_grpc [--duration 10] [--warmup 3] [--concurrency 64]
                                   [--rate REQ_PER_S] [--clients 1] [--transports rest,grpc]
                                   [--grpc-servers loop,aio] [--rows 1]
                                   [--answer-forms fields,content] [--floor]

``--rows`` sends requests of that many rows (REST and gRPC alike); ``--answer-forms`` runs one
gateway per form of gRPC answer: ``fields`` (TF Serving's default, every value in its typed
field) and ``content`` (``--enable_serialization_as_tensor_content``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from loadtests.benchmarks import bench_wrk
from loadtests.support.outputs import RUNS
from loadtests.support.payloads import check, columns, instances, predict_body
from loadtests.support.probes import scrape, settle, validate
from loadtests.support.processes import REPO, Pinning, Server, free_port, log, terminate_on_sigterm
from serving.settings import Settings

MODEL = "natality"
BATCHING_CONFIG = REPO / "serving" / "examples" / "batching.config"
MODELS_CONFIG = REPO / "models" / "models.config"
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
TRANSPORTS = ("rest", "grpc")
GRPC_SERVERS = get_args(Settings.model_fields["grpc_server"].annotation)
"""The gateway's gRPC servers (``--grpc_server``): loop, aio."""


# --- the driver (a subprocess on the load core) ---------------------------------------------


@dataclass(frozen=True)
class Drive:
    """One driver process's job."""

    transport: str
    target: str
    """``host:port``."""
    requests: list[bytes]
    """Serialized PredictRequests (gRPC) or whole HTTP/1.1 requests (REST), sent in a cycle."""
    concurrency: int
    duration_s: float
    rate: float | None
    """Requests per second, evenly spaced; None: closed loop at ``concurrency``."""


async def _grpc_sender(target: str):
    import grpc

    channel = grpc.aio.insecure_channel(target)
    await channel.channel_ready()
    call = channel.unary_unary(PREDICT_METHOD)  # bytes in, bytes out: no proto work here

    async def send(request: bytes) -> bool:
        try:
            return bool(await call(request, timeout=30))
        except grpc.aio.AioRpcError:
            return False

    return send, channel.close


async def _http_sender(target: str, connections: int):
    host, port = target.rsplit(":", 1)
    idle: asyncio.Queue = asyncio.Queue()
    opened = []
    for _ in range(connections):
        reader, writer = await asyncio.open_connection(host, int(port))
        opened.append(writer)
        idle.put_nowait((reader, writer))

    async def send(request: bytes) -> bool:
        reader, writer = await idle.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            return head.startswith(b"HTTP/1.1 200")
        finally:
            idle.put_nowait((reader, writer))

    async def close() -> None:
        for writer in opened:
            writer.close()

    return send, close


async def _drive(job: Drive) -> dict[str, Any]:
    if job.transport == "grpc":
        send, close = await _grpc_sender(job.target)
    else:
        send, close = await _http_sender(job.target, job.concurrency)
    latencies: list[float] = []
    errors = skipped = 0
    requests = job.requests
    started = time.perf_counter()
    end = started + job.duration_s

    async def one(index: int, due: float) -> None:
        nonlocal errors
        ok = await send(requests[index % len(requests)])
        if ok:
            latencies.append(time.perf_counter() - due)
        else:
            errors += 1

    if job.rate is None:
        async def loop(offset: int) -> None:
            index = offset
            while (now := time.perf_counter()) < end:
                await one(index, now)
                index += job.concurrency

        await asyncio.gather(*(loop(i) for i in range(job.concurrency)))
    else:
        in_flight: set[asyncio.Task] = set()
        interval, index = 1.0 / job.rate, 0
        while (due := started + index * interval) < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= job.concurrency:
                skipped += 1  # the in-flight cap: an overloaded server shows as sends not made
            else:
                task = asyncio.create_task(one(index, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            index += 1
        await asyncio.gather(*in_flight)
    elapsed = time.perf_counter() - started
    await close()
    return {"ok": len(latencies), "errors": errors, "skipped": skipped, "seconds": elapsed,
            "latencies_us": sorted(round(x * 1e6) for x in latencies)}


def drive_main(job_file: Path) -> None:
    job: Drive = pickle.loads(job_file.read_bytes())
    print(json.dumps(asyncio.run(_drive(job))), flush=True)


# --- the no-op floor server (a subprocess on the server core) --------------------------------

FLOOR_SERVERS = ("loop", "threads", "aio")
"""The gRPC servers of ``--floor``: ``serving.grpc.core_server.LoopServer``, ``grpc.server``
on a thread pool (as many threads as calls in flight), ``grpc.aio.server``."""
FLOOR_ANSWER = b'{"predictions":[[7.0]]}'


def floor_main(rest_port: int, grpc_ports: list[int], pool_threads: int) -> None:
    """Serve no-op Predicts: REST on ``rest_port``, the ``FLOOR_SERVERS`` on ``grpc_ports``."""
    import concurrent.futures

    import grpc
    import uvicorn
    import uvloop
    from tensorflow_serving.apis import predict_pb2

    from serving.grpc.core_server import LoopServer

    answer = predict_pb2.PredictResponse()
    answer.model_spec.name = MODEL
    answer.outputs["predictions"].float_val.append(7.0)
    grpc_answer = answer.SerializeToString()
    service, method = PREDICT_METHOD.strip("/").split("/")

    async def app(scope: dict, receive: Any, send: Any) -> None:
        """Plain ASGI, as the gateway answers its POSTs (ahead of FastAPI's router): read
        the body, answer a fixed one; any path, so ``/readyz`` too."""
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": FLOOR_ANSWER})

    async def noop(request: bytes, context: Any) -> bytes:
        return grpc_answer

    def handler(behaviour: Any) -> Any:
        return grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(behaviour)})

    async def serve() -> None:
        loop_server = LoopServer(asyncio.get_running_loop())
        loop_server.add_method(PREDICT_METHOD, noop, bytes, bytes)
        threads = grpc.server(concurrent.futures.ThreadPoolExecutor(pool_threads))
        threads.add_generic_rpc_handlers((handler(lambda request, context: grpc_answer),))
        aio = grpc.aio.server()
        aio.add_generic_rpc_handlers((handler(noop),))
        for server, port in zip((loop_server, threads, aio), grpc_ports):
            server.add_insecure_port(f"127.0.0.1:{port}")
        await loop_server.start()
        threads.start()
        await aio.start()
        config = uvicorn.Config(app, host="127.0.0.1", port=rest_port, lifespan="off", access_log=False,
                                log_level="warning")
        await uvicorn.Server(config).serve()

    uvloop.run(serve())


# --- the orchestrator -----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measured run of one transport."""

    transport: str
    mode: str
    qps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Requests that failed."""
    skipped: int
    """At a fixed rate, sends not made because ``--concurrency`` calls were already in flight."""
    answered: int
    """Predicts the server counted in the CPU window."""
    server_cpu_s: float
    loop_cpu_s: float
    """The server's main thread: its event loop, where both APIs' Python work runs."""
    mean_batch_rows: float | None
    """Rows per model call: per-request CPU falls as batches grow, so compare it too."""
    loadgen_cpu: float | None
    """CPU seconds per second of the load generator(s)."""
    seconds: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s / self.answered * 1e3 if self.answered else float("nan")

    @property
    def loop_ms_per_request(self) -> float:
        return self.loop_cpu_s / self.answered * 1e3 if self.answered else float("nan")


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (its task id is the pid)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grpc_request(body: dict) -> Any:
    """The PredictRequest of a REST body's rows, as TF Serving's clients build it
    (``tf.make_tensor_proto`` per input)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    for name, array in columns(MODEL, body["instances"]).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def grpc_requests(bodies: list[dict]) -> list[bytes]:
    """The same requests as ``bodies``, serialized PredictRequests."""
    return [grpc_request(body).SerializeToString() for body in bodies]


def request_bodies(rows: int) -> list[dict]:
    """Natality :predict bodies of ``rows`` distinct rows each (300 bodies, fewer when large)."""
    count = 300 if rows == 1 else max(16, 3000 // rows)
    data = instances(MODEL, count * rows, 2024)
    return [predict_body(data[i * rows:(i + 1) * rows]) for i in range(count)]


def http_requests(bodies: list[dict], port: int) -> list[bytes]:
    out = []
    for body in bodies:
        data = json.dumps(body, separators=(",", ":")).encode()
        out.append(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                   .encode() + data)
    return out


def validate_grpc(target: str, bodies: list[dict], n: int = 5) -> None:
    """The first ``n`` rows through the real stub must get the model's known answer."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.runtime.tensors import to_numpy

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for body in bodies[:n]:
            response = stub.Predict(grpc_request(body), timeout=30)
            (output,) = response.outputs.items()
            predictions = to_numpy(*output).reshape(-1).tolist()
            problem = check(MODEL, body, {"predictions": predictions})
            if problem:
                raise RuntimeError(f"gRPC answered wrongly: {problem}")


def run_drivers(transport: str, target: str, requests: list[bytes], concurrency: int,
                duration_s: float, rate: float | None, clients: int, pinning: Pinning,
                tmp: Path) -> tuple[dict[str, Any], float]:
    """``clients`` driver processes splitting the load; (merged results, their CPU share)."""
    procs = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for i in range(clients):
        share = concurrency // clients + (i < concurrency % clients)
        job = Drive(transport, target, requests[i::clients] or requests, share, duration_s,
                    rate / clients if rate else None)
        job_file = tmp / f"drive-{transport}-{i}.pickle"
        job_file.write_bytes(pickle.dumps(job))
        procs.append(subprocess.Popen(
            [*pinning.loadgen, sys.executable, "-m", "loadtests.benchmarks.bench_grpc", "drive", str(job_file)],
            cwd=REPO, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=duration_s + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"the {transport} driver failed ({proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = max(r["seconds"] for r in results)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    merged = {"ok": sum(r["ok"] for r in results), "errors": sum(r["errors"] for r in results),
              "skipped": sum(r["skipped"] for r in results),
              "seconds": seconds,
              "latencies_us": sorted(x for r in results for x in r["latencies_us"])}
    return merged, cpu / seconds


def measure(transport: str, server: Server, args: argparse.Namespace, pinning: Pinning,
            target: str, requests: list[bytes], bodies_file: Path, tmp: Path,
            label: str | None = None, counted: bool = True) -> Run:
    """One warmed-up run of ``transport`` against ``target``. ``counted``: the server counts
    its Predicts (the gateway's /metrics); otherwise (``--floor``) the load generator's
    answers are the requests."""
    use_wrk = transport == "rest" and args.rate is None

    def load(seconds: float) -> tuple[dict[str, Any], float | None]:
        if use_wrk:
            result = bench_wrk.run(f"http://{target}/v1/models/{MODEL}:predict", bodies_file,
                                   round(seconds), args.concurrency, pinning.loadgen)
            return {"ok": result.requests - result.errors, "errors": result.errors, "skipped": 0,
                    "seconds": result.duration_s, "p50": result.latency_ms.p50,
                    "p99": result.latency_ms.p99}, result.loadgen_cpu
        return run_drivers(transport, target, requests, args.concurrency, seconds, args.rate,
                           args.clients, pinning, tmp)

    label = label or transport
    if args.warmup:
        log(f"{label}: warm-up {args.warmup} s")
        load(args.warmup)
    before = settle([server], MODEL)[0] if counted else None
    cpu_before, loop_before = server.cpu_seconds(), main_thread_cpu(server.proc.pid)
    log(f"{label}: measuring {args.duration} s")
    result, loadgen_cpu = load(args.duration)
    after = settle([server], MODEL)[0] if counted else None
    cpu_after, loop_after = server.cpu_seconds(), main_thread_cpu(server.proc.pid)
    server.check_alive(f"during the {label} run")
    if "p50" in result:
        p50, p99 = result["p50"], result["p99"]
    else:
        latencies = np.array(result["latencies_us"] or [0]) / 1e3
        p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
    batches = after.batches - before.batches if after and before else 0
    return Run(label, f"rate {args.rate:g}/s" if args.rate else f"closed {args.concurrency}",
               qps=result["ok"] / result["seconds"], p50_ms=float(p50), p99_ms=float(p99),
               errors=result["errors"], skipped=result["skipped"],
               answered=round(after.predict_ok - before.predict_ok) if after and before else result["ok"],
               server_cpu_s=(cpu_after or 0.0) - (cpu_before or 0.0), loop_cpu_s=loop_after - loop_before,
               mean_batch_rows=(after.batch_rows - before.batch_rows) / batches if after and before and batches
               else None,
               loadgen_cpu=loadgen_cpu,
               seconds=result["seconds"])


def render(runs: Sequence[Run], title: str) -> str:
    lines = [title, "",
             "| transport | load | req/s | p50 ms | p99 ms | errors | skipped at the in-flight cap "
             "| server CPU ms/req | loop thread ms/req | rows/batch | server CPU share | loadgen CPU share |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        loadgen = f"{r.loadgen_cpu:.2f}" if r.loadgen_cpu is not None else "?"
        rows = f"{r.mean_batch_rows:.1f}" if r.mean_batch_rows is not None else "?"
        lines.append(f"| {r.transport} | {r.mode} | {r.qps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                     f"| {r.errors} | {r.skipped} | {r.cpu_ms_per_request:.3f} | {r.loop_ms_per_request:.3f} | {rows} "
                     f"| {r.server_cpu_s / r.seconds:.2f} | {loadgen} |")
    rests = {r.transport: r for r in runs if r.transport.startswith("rest")}
    grpcs = [r for r in runs if r.transport.startswith("grpc")]
    compared = False
    for r in grpcs:
        server = r.transport[4:]  # "", "-loop", "-aio", "-threads"
        rest = rests.get("rest" + server) or rests.get("rest")  # its own gateway's REST run first
        if rest is not None:
            if not compared:
                lines.append("")
                compared = True
            ratio = r.cpu_ms_per_request / rest.cpu_ms_per_request
            loop = r.loop_ms_per_request / rest.loop_ms_per_request
            lines.append(f"{'gRPC' + server}/REST server CPU per request: {ratio:.2f} "
                         f"(goal: <= 1.00); loop thread alone: {loop:.2f}")
    if len(grpcs) > 1:
        first = grpcs[0]
        lines.append("")
        lines.extend(f"{r.transport}/{first.transport} server CPU per request: "
                     f"{r.cpu_ms_per_request / first.cpu_ms_per_request:.2f}" for r in grpcs[1:])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Run]:
    args = parse_args(argv)
    terminate_on_sigterm()
    pinning = Pinning.detect()
    log(pinning.note)
    rest_port = free_port()
    bodies = request_bodies(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp_name:
        tmp = Path(tmp_name)
        bodies_file = tmp / "bodies.jsonl"
        bodies_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
        requests = {"grpc": grpc_requests(bodies), "rest": http_requests(bodies, rest_port)}
        run = _floor if args.floor else _gateway
        runs, title = run(args, pinning, rest_port, bodies, requests, bodies_file, tmp)
    print(render(runs, f"{title} ({pinning.note}; gRPC load from {args.clients} driver process(es))"),
          flush=True)
    return runs


def _gateway(args: argparse.Namespace, pinning: Pinning, rest_port: int, bodies: list[dict],
             requests: dict[str, list[bytes]], bodies_file: Path, tmp: Path) -> tuple[list[Run], str]:
    runs = []
    for kind, form in [(k, f) for k in args.grpc_servers for f in args.answer_forms]:  # one gateway each
        grpc_port = free_port()
        targets = {"grpc": f"127.0.0.1:{grpc_port}", "rest": f"127.0.0.1:{rest_port}"}
        argv = [*pinning.server, sys.executable, "-m", "serving", f"--port={grpc_port}",
                f"--rest_api_port={rest_port}", f"--grpc_server={kind}",
                f"--model_config_file={args.model_config_file}",
                f"--enable_serialization_as_tensor_content={form == 'content'}",
                "--enable_batching", f"--batching_parameters_file={BATCHING_CONFIG}"]
        name = kind if len(args.answer_forms) == 1 else f"{kind}-{form}"
        log_path = args.out / "logs" / f"bench-grpc-gateway-{name}.log"
        with Server(f"gateway ({name})", argv, log_path, rest_port) as server:
            validate(f"http://{targets['rest']}/v1/models/{MODEL}:predict", bodies,
                     lambda body, response: check(MODEL, body, response))
            validate_grpc(targets["grpc"], bodies)
            scrape(server, MODEL)
            runs += [measure(t, server, args, pinning, targets[t], requests[t], bodies_file, tmp,
                             label=f"{t}-{name}")
                     for t in args.transports]
    return runs, (f"gRPC vs REST, {args.rows}-row {MODEL} Predict, one gateway per gRPC server "
                  f"({', '.join(args.grpc_servers)}) and answer form ({', '.join(args.answer_forms)})")


def _floor(args: argparse.Namespace, pinning: Pinning, rest_port: int, bodies: list[dict],
           requests: dict[str, list[bytes]], bodies_file: Path, tmp: Path) -> tuple[list[Run], str]:
    grpc_ports = [free_port() for _ in FLOOR_SERVERS]
    argv = [*pinning.server, sys.executable, "-m", "loadtests.benchmarks.bench_grpc", "floor-server", str(rest_port),
            ",".join(map(str, grpc_ports)), str(args.concurrency)]
    with Server("floor", argv, args.out / "logs" / "bench-grpc-floor.log", rest_port) as server:
        runs = []
        if "rest" in args.transports:
            runs.append(measure("rest", server, args, pinning, f"127.0.0.1:{rest_port}", requests["rest"],
                                bodies_file, tmp, counted=False))
        if "grpc" in args.transports:
            runs += [measure("grpc", server, args, pinning, f"127.0.0.1:{port}", requests["grpc"], bodies_file,
                             tmp, label=f"grpc-{kind}", counted=False)
                     for kind, port in zip(FLOOR_SERVERS, grpc_ports)]
    return runs, "No-op REST route vs no-op gRPC servers, the same 1-row requests, one process"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.benchmarks.bench_grpc",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per transport")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per transport")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="requests in flight (closed loop), or the cap on them (--rate)")
    parser.add_argument("--rate", type=float, default=None,
                        help="fixed rate in requests/s for both transports (default: closed loop)")
    parser.add_argument("--clients", type=int, default=1, help="driver processes for our driver")
    parser.add_argument("--transports", default=",".join(TRANSPORTS),
                        type=lambda text: tuple(t for t in text.split(",") if t))
    parser.add_argument("--grpc-servers", default=",".join(GRPC_SERVERS),
                        type=lambda text: tuple(s for s in text.split(",") if s),
                        help="the gateway's gRPC servers to measure, one gateway each (--grpc_server)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (both transports)")
    parser.add_argument("--answer-forms", default="fields", type=lambda text: tuple(f for f in text.split(",") if f),
                        help="gRPC answers in typed fields (TF Serving's default) and/or tensor_content "
                        "(--enable_serialization_as_tensor_content), one gateway each: fields,content")
    parser.add_argument("--model-config-file", type=Path, default=MODELS_CONFIG,
                        help=f"the gateway's models (must include {MODEL})")
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--floor", action="store_true",
                        help="no-op servers instead of the gateway: what each transport costs by itself")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.concurrency < 1 or args.clients < 1 \
            or (args.rate is not None and args.rate <= 0) or not set(args.transports) <= set(TRANSPORTS) \
            or not args.grpc_servers or not set(args.grpc_servers) <= set(GRPC_SERVERS) \
            or args.rows < 1 or not args.answer_forms or not set(args.answer_forms) <= {"fields", "content"}:
        parser.error("--duration >= 1, --warmup >= 0, --concurrency >= 1, --clients >= 1, "
                     f"--rate > 0, --transports from {','.join(TRANSPORTS)}, "
                     f"--grpc-servers from {','.join(GRPC_SERVERS)}, --rows >= 1, --answer-forms from fields,content")
    return args


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        drive_main(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["floor-server"]:
        floor_main(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], int(sys.argv[4]))
    else:
        try:
            main()
        except KeyboardInterrupt:
            log("interrupted; servers stopped")
            sys.exit(130)
