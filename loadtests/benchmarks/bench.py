"""``make bench``: the gateway against the model's limit, the HTTP ceiling, a naive server,
and in front of a TF Serving upstream against calling that upstream directly.

For each model, in one run on this machine and under the same closed-loop load (wrk, one
thread, ``--connections`` connections, each request one row drawn from a few hundred
distinct pre-generated bodies):

  (a) raw      the model alone, in process: rows/s at each batch size (the limit)
  (b) noop     FastAPI endpoint that parses the JSON and returns a constant (HTTP ceiling)
  (c) naive    FastAPI, plain ``def`` endpoint, one model call per request (today's way)
  (d) gateway  ``python -m serving ... --enable_batching`` (this project)

and, for natality, the gateway in front of a TF Serving upstream (setup ``upstream``). The
upstream is a second gateway process on the embedded backend without batching (it speaks
TF Serving's REST and gRPC APIs; the real ``tensorflow_model_server`` cannot be installed
here):

  (e) direct   clients call the upstream's REST API, one row per call
  (f) gateway  clients call the front gateway (``--upstream``, batching), which sends each
               merged batch as one gRPC Predict to the same upstream

both at ``--connections`` and at 1 connection (the p50 the gateway adds; a warm-up of at
most ``ONE_CONNECTION_WARMUP_S``, as the same processes were just warmed). The upstream's
``tfgw_requests_total`` is read before and after each run to show how many Predict calls
served how many client requests.

The load generator runs on one core (``taskset -c``) and every server on another (the
upstream and the front gateway share it); with fewer than two cores nothing is pinned and
the report says so. Each server gets a warm-up run (excluded), then a measured run. Every
response that is not 2xx and every socket error (connect, read, write, timeout) is counted
and shown in the table: a server that answers errors fast must not look fast. Servers run
as their own process groups and are killed on exit, failure, Ctrl-C or SIGTERM.

    python -m loadtests.benchmarks.bench [--duration 15] [--warmup 10] [--connections 64]
                              [--models natality,image_classifier]
                              [--setups raw,noop,naive,gateway,upstream] [--out bench-results]

Results: a markdown table per model on stdout, and ``OUT/bench-<time>.json``,
``OUT/latest.json``, ``OUT/latest.md`` and each server's log under ``OUT/logs/``.
This module is the orchestration (which setups, which servers, in what order); wrk runs in
``bench_wrk``, the results are typed in ``bench_results``, the markdown is ``bench_report``'s.
It imports no TensorFlow: (a) runs in a pinned subprocess (``baselines/raw_model``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from loadtests.baselines import raw_model
from loadtests.benchmarks import bench_wrk
from loadtests.benchmarks.bench_report import SERVER_SETUPS, render, render_model
from loadtests.benchmarks.bench_results import (
    GOAL_MODEL,
    Failure,
    Meta,
    ModelResult,
    RawResult,
    Report,
    ServerRun,
    ThroughRun,
    UpstreamResult,
    UpstreamRun,
    ceiling_goal,
    goal,
    ratios,
    to_json,
)
from loadtests.support.outputs import RUNS
from loadtests.support.payloads import check, instances, predict_body
from loadtests.support.probes import settle, validate
from loadtests.support.processes import (
    REPO,
    Job,
    Pinning,
    Server,
    cpu_share,
    free_port,
    git_commit,
    log,
    terminate_on_sigterm,
)

BATCHING_CONFIG = REPO / "serving" / "examples" / "batching.config"
SETUPS = ("raw", *SERVER_SETUPS, "upstream")
ONE_CONNECTION_WARMUP_S = 2
"""Warm-up before each 1-connection run (capped by --warmup): the same processes have just
been warmed and measured at --connections."""
RAW_TIMEOUT_S = 600
MEASUREMENT_ERRORS = (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired)
"""What a failed server, wrk run or probe raises: recorded as a ``Failure``, never fatal."""


# --- workloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What one model is benchmarked with."""

    model: str
    bodies: Callable[[], list[dict[str, Any]]]
    """Distinct 1-row request bodies, replayed in a cycle."""
    check: Callable[[dict[str, Any], dict[str, Any]], str | None]
    """(request body, response) -> None if the prediction is right, else why not."""
    raw_batch_sizes: tuple[int, ...]
    raw_calls: int
    """Timed calls of the signature per batch size (after a few untimed ones)."""
    duration_scale: float = 1.0
    """Multiplies --duration and --warmup for this model."""
    upstream: bool = False
    """Run the (e)/(f) upstream comparison (natality only: keeps ``make bench`` short)."""


def natality_bodies(n: int = 300, seed: int = 2024) -> list[dict[str, Any]]:
    return [predict_body([row]) for row in instances("natality", n, seed)]


def image_bodies(n: int = 100, seed: int = 2025) -> list[dict[str, Any]]:
    return [predict_body([row]) for row in instances("image_classifier", n, seed)]


WORKLOADS = {
    "natality": Workload("natality", natality_bodies, partial(check, "natality"),
                         raw_batch_sizes=(1, 8, 32, 128, 512), raw_calls=1000, upstream=True),
    # 100 distinct 224x224 JPEGs (about 17 KB each): the model costs ~10 ms per image here,
    # so fewer bodies and 2/3 of the time still give hundreds of requests.
    "image_classifier": Workload("image_classifier", image_bodies, partial(check, "image_classifier"),
                                 raw_batch_sizes=(1, 4, 16, 32), raw_calls=10,
                                 duration_scale=2 / 3),
}


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    setups: tuple[str, ...]
    duration: int
    warmup: int
    connections: int
    out: Path
    models_dir: Path
    pinning: Pinning

    def warmup_s(self, workload: Workload) -> int:
        return max(0, round(self.warmup * workload.duration_scale)) if self.warmup else 0

    def duration_s(self, workload: Workload) -> int:
        return max(1, round(self.duration * workload.duration_scale))

    def log_path(self, model: str, name: str) -> Path:
        return self.out / "logs" / f"{model}-{name}.log"


# --- (a) the model alone ------------------------------------------------------------------


def run_raw(workload: Workload, model_dir: Path, plan: Plan) -> RawResult:
    """The raw measurement in a subprocess on the server core; its result is in its log."""
    argv = [*plan.pinning.server, sys.executable, "-m", "loadtests.baselines.raw_model",
            workload.model, str(model_dir),
            "--batch-sizes", ",".join(map(str, workload.raw_batch_sizes)),
            "--calls", str(workload.raw_calls)]
    with Job(f"{workload.model} raw", argv, plan.log_path(workload.model, "raw")) as job:
        try:
            job.proc.wait(timeout=RAW_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"raw measurement took over {RAW_TIMEOUT_S} s") from None
        result = raw_model.parse_line(job.log_path.read_text(errors="replace"))
        if job.proc.returncode != 0 or result is None:
            raise RuntimeError(f"raw measurement failed ({job.proc.returncode}):\n{job.log_tail()}")
        return result


# --- (b)(c)(d) servers under wrk -----------------------------------------------------------


def server_argv(setup: str, model: str, model_dir: Path, port: int, pinning: Pinning) -> list[str]:
    python = [*pinning.server, sys.executable, "-m"]
    if setup == "noop":
        return [*python, "loadtests.baselines.noop_server", f"--port={port}"]
    if setup == "naive":
        return [*python, "loadtests.baselines.naive_server", f"--port={port}",
                f"--model_name={model}", f"--model_base_path={model_dir}"]
    if setup == "gateway":
        return [*python, "serving", "--port=0", f"--rest_api_port={port}",
                f"--model_name={model}", f"--model_base_path={model_dir}",
                "--enable_batching", f"--batching_parameters_file={BATCHING_CONFIG}"]
    raise ValueError(f"unknown setup {setup!r}")


def run_server_setup(setup: str, workload: Workload, model_dir: Path, bodies: list[dict],
                     bodies_file: Path, plan: Plan) -> ServerRun:
    port = free_port()
    argv = server_argv(setup, workload.model, model_dir, port, plan.pinning)
    log_path = plan.log_path(workload.model, setup)
    url = f"http://127.0.0.1:{port}/v1/models/{workload.model}:predict"
    warmup_s, duration_s = plan.warmup_s(workload), plan.duration_s(workload)
    started = time.monotonic()
    with Server(f"{workload.model} {setup}", argv, log_path, port) as server:
        startup_s = time.monotonic() - started
        validate(url, bodies, None if setup == "noop" else workload.check)
        if warmup_s:
            log(f"{workload.model} {setup}: ready in {startup_s:.1f} s; warm-up {warmup_s} s")
            bench_wrk.run(url, bodies_file, warmup_s, plan.connections, plan.pinning.loadgen)
        log(f"{workload.model} {setup}: measuring {duration_s} s at {plan.connections} connections")
        cpu_before = server.cpu_seconds()
        result = bench_wrk.run(url, bodies_file, duration_s, plan.connections, plan.pinning.loadgen)
        cpu_after = server.cpu_seconds()
        server.check_alive("during the run")
        return ServerRun(result, startup_seconds=startup_s, warmup_seconds=warmup_s,
                         server_cpu=cpu_share(cpu_before, cpu_after, result.duration_s),
                         pid=server.proc.pid, log=str(log_path))


# --- (e)(f) the gateway in front of a TF Serving upstream -----------------------------------


def upstream_argvs(model: str, model_dir: Path, grpc_port: int, rest_port: int,
                   front_port: int, pinning: Pinning) -> tuple[list[str], list[str]]:
    """The upstream (embedded backend, no batching, like a TF Serving without batching) and
    the front gateway (batching, ``--upstream``); both on the server core."""
    python = [*pinning.server, sys.executable, "-m", "serving"]
    upstream = [*python, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                f"--model_name={model}", f"--model_base_path={model_dir}"]
    front = [*python, "--port=0", f"--rest_api_port={front_port}",
             f"--upstream=127.0.0.1:{grpc_port}", f"--model_name={model}",
             "--model_base_path=unused", "--enable_batching",
             f"--batching_parameters_file={BATCHING_CONFIG}"]
    return upstream, front


def upstream_note(pinning: Pinning) -> str:
    where = (f"the upstream and the front gateway share core {pinning.server[-1]}, wrk runs on "
             f"core {pinning.loadgen[-1]}" if pinning.server
             else "nothing is pinned: wrk, the upstream and the front gateway share the CPU")
    return (f"{where}. On a real deployment the upstream has its own machines, so (f) "
            "understates the gateway's gain: here the front and the upstream compete for one core.")


def run_upstream_setup(workload: Workload, model_dir: Path, bodies: list[dict],
                       bodies_file: Path, plan: Plan) -> UpstreamResult:
    """(e) and (f) at ``plan.connections``, then at 1 connection, against the same two processes.

    A failure is recorded in the result (``error``) with the runs done so far.
    """
    warmup_s, duration_s = plan.warmup_s(workload), plan.duration_s(workload)
    path = f"/v1/models/{workload.model}:predict"
    runs: list[UpstreamRun] = []
    startup: dict[str, float] = {}
    logs: dict[str, str] = {}
    error = None
    try:
        with contextlib.ExitStack() as stack:
            upstream, front = _start_upstream_pair(stack, workload.model, model_dir, plan,
                                                   startup, logs)
            targets = {"direct": upstream, "gateway": front}
            for server in targets.values():
                validate(server.url + path, bodies, workload.check)
            for connections, warmup in ((plan.connections, warmup_s),
                                        (1, min(warmup_s, ONE_CONNECTION_WARMUP_S))):
                for setup, target in targets.items():
                    label = f"{workload.model} upstream {setup} -c{connections}"
                    try:
                        outcome: ThroughRun | Failure = measure_through(
                            target.url + path, (upstream, front), workload.model, bodies_file,
                            connections, warmup, duration_s, plan.pinning, label)
                    except MEASUREMENT_ERRORS as err:
                        log(f"{label} FAILED: {err}")
                        outcome = Failure(str(err))
                    runs.append(UpstreamRun(setup, connections, outcome))
                    for server in (upstream, front):
                        server.check_alive(f"during {label}")
    except MEASUREMENT_ERRORS as err:
        log(f"{workload.model} upstream FAILED: {err}")
        error = str(err)
    return UpstreamResult(plan.connections, upstream_note(plan.pinning), tuple(runs), error,
                          startup, logs)


def _start_upstream_pair(stack: contextlib.ExitStack, model: str, model_dir: Path, plan: Plan,
                         startup: dict[str, float], logs: dict[str, str]) -> tuple[Server, Server]:
    """Start the upstream, and once it is ready the front (which asks the upstream for its
    model's versions); both are stopped when ``stack`` closes. Records each one's start-up
    time and log in ``startup`` and ``logs``."""
    grpc_port, rest_port, front_port = free_port(), free_port(), free_port()
    upstream_argv, front_argv = upstream_argvs(model, model_dir, grpc_port, rest_port,
                                               front_port, plan.pinning)
    servers = []
    for name, argv, port in (("upstream", upstream_argv, rest_port),
                             ("front", front_argv, front_port)):
        started = time.monotonic()
        log_path = plan.log_path(model, name)
        logs[name] = str(log_path)
        servers.append(stack.enter_context(Server(f"{model} {name}", argv, log_path, port)))
        startup[name] = time.monotonic() - started
    return servers[0], servers[1]


def measure_through(url: str, servers: tuple[Server, Server], model: str, bodies_file: Path,
                    connections: int, warmup_s: int, duration_s: int, pinning: Pinning,
                    label: str) -> ThroughRun:
    """One wrk run against ``url``, with the (upstream, front) counters and CPU around it."""
    if warmup_s:
        log(f"{label}: warm-up {warmup_s} s")
        bench_wrk.run(url, bodies_file, warmup_s, connections, pinning.loadgen)
    log(f"{label}: measuring {duration_s} s")
    up0, front0 = settle(servers, model)
    cpu_before = [s.cpu_seconds() for s in servers]
    result = bench_wrk.run(url, bodies_file, duration_s, connections, pinning.loadgen)
    cpu_after = [s.cpu_seconds() for s in servers]
    up1, front1 = settle(servers, model)
    batches = front1.batches - front0.batches
    waits = front1.queue_waits - front0.queue_waits
    return ThroughRun(
        result, warmup_seconds=warmup_s,
        server_cpu={name: cpu_share(b0, b1, result.duration_s) for name, b0, b1
                    in zip(("upstream", "front"), cpu_before, cpu_after, strict=True)},
        upstream_predicts=round(up1.predict_ok - up0.predict_ok),
        front_requests=round(front1.predict_ok - front0.predict_ok),
        front_mean_batch_rows=(front1.batch_rows - front0.batch_rows) / batches
        if batches else None,
        front_mean_queue_wait_ms=(front1.queue_wait_seconds - front0.queue_wait_seconds)
        / waits * 1e3 if waits else None)


# --- the run ------------------------------------------------------------------------------


def bench_model(workload: Workload, plan: Plan) -> ModelResult:
    model_dir = plan.models_dir / workload.model
    raw: RawResult | Failure | None = None
    if "raw" in plan.setups:
        log(f"{workload.model} raw: batch sizes {workload.raw_batch_sizes}, "
            f"{workload.raw_calls} calls each")
        try:
            raw = run_raw(workload, model_dir, plan)
        except RuntimeError as err:
            log(f"{workload.model} raw FAILED: {err}")
            raw = Failure(str(err))
    bodies = workload.bodies()
    setups: dict[str, ServerRun | Failure] = {}
    upstream = None
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bodies_file = Path(tmp) / f"{workload.model}.jsonl"
        bodies_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
        mean_body_bytes = bodies_file.stat().st_size / len(bodies)
        for setup in SERVER_SETUPS:
            if setup not in plan.setups:
                continue
            try:
                setups[setup] = run_server_setup(setup, workload, model_dir, bodies, bodies_file,
                                                 plan)
            except MEASUREMENT_ERRORS as err:
                log(f"{workload.model} {setup} FAILED: {err}")
                setups[setup] = Failure(str(err))
        if "upstream" in plan.setups and not workload.upstream:
            log(f"{workload.model}: no upstream comparison for this model (natality only)")
        elif "upstream" in plan.setups:
            upstream = run_upstream_setup(workload, model_dir, bodies, bodies_file, plan)
    judged = workload.model == GOAL_MODEL and "gateway" in plan.setups
    measured = ratios(setups, raw)
    return ModelResult(setups, raw, upstream, distinct_bodies=len(bodies),
                       mean_body_bytes=mean_body_bytes,
                       goal=goal(measured) if judged and "naive" in plan.setups else None,
                       ceiling_goal=ceiling_goal(measured)
                       if judged and "noop" in plan.setups else None)


def run(plan: Plan) -> Report:
    """Benchmark every model of the plan; write and return the report."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    plan.out.mkdir(parents=True, exist_ok=True)
    log(plan.pinning.note)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    began = time.monotonic()
    models: dict[str, ModelResult] = {}
    for model in plan.models:
        models[model] = bench_model(WORKLOADS[model], plan)
        print(render_model(model, models[model], plan.connections), flush=True)
    tf_versions = [r.raw.tensorflow for r in models.values() if isinstance(r.raw, RawResult)]
    meta = Meta(started=started, cpus=os.cpu_count(), pinning=plan.pinning.note,
                wrk=bench_wrk.version(), python=platform.python_version(), commit=git_commit(),
                duration=plan.duration, warmup=plan.warmup, connections=plan.connections,
                setups=plan.setups, wrk_timeout=bench_wrk.TIMEOUT,
                tensorflow=tf_versions[-1] if tf_versions else None,
                seconds=time.monotonic() - began)
    report = Report(meta, models)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(to_json(report), indent=2)
    (plan.out / f"bench-{stamp}.json").write_text(text)
    (plan.out / "latest.json").write_text(text)
    (plan.out / "latest.md").write_text(render(report))
    log(f"done in {meta.seconds:.0f} s; wrote {plan.out}/latest.json, latest.md, "
        f"bench-{stamp}.json")
    return report


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.benchmarks.bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per server")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up seconds per server (0: none)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--models", type=_csv, default=("natality", "image_classifier"),
                        help=f"comma-separated, from {', '.join(WORKLOADS)}")
    parser.add_argument("--setups", type=_csv, default=SETUPS,
                        help=f"comma-separated subset of {','.join(SETUPS)} "
                             "(upstream: natality only)")
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("--duration must be >= 1, --warmup >= 0, --connections >= 1")
    for name in args.models:
        if name not in WORKLOADS:
            parser.error(f"unknown model {name!r}; known: {', '.join(WORKLOADS)}")
    for name in args.setups:
        if name not in SETUPS:
            parser.error(f"unknown setup {name!r}; known: {', '.join(SETUPS)}")
    return args


def main(argv: Sequence[str] | None = None) -> Report:
    args = parse_args(argv)
    terminate_on_sigterm()
    plan = Plan(models=args.models, setups=args.setups, duration=args.duration,
                warmup=args.warmup, connections=args.connections, out=args.out.resolve(),
                models_dir=args.models_dir.resolve(), pinning=Pinning.detect())
    return run(plan)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
