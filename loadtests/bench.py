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
and shown in the table: a server that answers errors fast must not look fast. Servers run as their own process groups and are killed on
exit, failure, Ctrl-C or SIGTERM.

    python -m loadtests.bench [--duration 15] [--warmup 10] [--connections 64]
                              [--models natality,image_classifier]
                              [--setups raw,noop,naive,gateway,upstream] [--out bench-results]

Results: a markdown table per model on stdout, and ``OUT/bench-<time>.json``,
``OUT/latest.json``, ``OUT/latest.md`` and each server's log under ``OUT/logs/``.
This module imports no TensorFlow (the raw measurement runs in a pinned subprocess).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from functools import partial
from typing import Any, Callable, Sequence

from loadtests.payloads import check, instances, predict_body
from loadtests.probes import settle, validate
from loadtests.processes import (Pinning, Server, free_port, git_commit, log, running,
                                 terminate_on_sigterm)

REPO = Path(__file__).resolve().parents[1]
LUA_SCRIPT = Path(__file__).resolve().parent / "wrk" / "post_bodies.lua"
BATCHING_CONFIG = REPO / "serving" / "examples" / "batching.config"
SETUPS = ("raw", "noop", "naive", "gateway", "upstream")
SETUP_LABELS = {
    "raw": "(a) model in process, best batch",
    "noop": "(b) no-op FastAPI (HTTP ceiling)",
    "naive": "(c) naive FastAPI server",
    "gateway": "(d) gateway",
}
UPSTREAM_LABELS = {
    "direct": "(e) upstream direct, one row per call",
    "gateway": "(f) gateway → upstream",
}
ONE_CONNECTION_WARMUP_S = 2
"""Warm-up before each 1-connection run (capped by --warmup): the same processes have just
been warmed and measured at --connections."""
GOAL_QPS_RATIO = 2.5
"""The gateway must serve at least this many times the naive server's QPS on natality..."""
GOAL_MODEL = "natality"
"""...with a p99 latency no worse than the naive server's."""
WRK_TIMEOUT = "30s"
"""wrk leaves requests slower than its timeout (2 s by default) out of the latency figures
and counts them as timeouts; 30 s keeps slow servers' tails in the percentiles."""


# --- wrk output ---------------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def duration_ms(text: str) -> float:
    """A wrk duration (``812.00us``, ``5.81ms``, ``1.20s``, ``2.00m``) in milliseconds."""
    match = re.fullmatch(r"\s*([0-9.]+)(us|ms|s|m|h)\s*", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _TIME_UNITS[match[2]]


@dataclass
class WrkResult:
    """One wrk run. Latencies in ms; ``errors`` counts every failed request or socket error."""

    requests: int
    duration_s: float
    qps: float
    latency_ms: dict[str, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    exact: bool = False
    """True when the latencies come from the script's exact ``BENCH_JSON`` line."""
    loadgen_cpu: float | None = None
    """CPU seconds wrk used per second of wall time (1.0 = one core saturated)."""

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def parse_wrk_output(text: str) -> WrkResult:
    """Parse wrk's ``--latency`` report, and the ``BENCH_JSON`` line of our Lua script if any.

    The text gives requests/s, the percentile table (rounded to 3 significant digits),
    ``Non-2xx or 3xx responses`` and ``Socket errors`` (both absent when zero). The Lua
    line, when present, replaces the latencies with wrk's exact figures and must agree on
    the counts. Raises ValueError if the report is incomplete.
    """
    def need(pattern: str) -> re.Match:
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output lacks /{pattern}/:\n{text}")
        return match

    done = need(r"^\s*(\d+) requests in ([0-9.]+(?:us|ms|s|m|h)),")
    requests = int(done[1])
    duration_s = duration_ms(done[2]) / 1e3
    qps = float(need(r"^Requests/sec:\s*([0-9.]+)")[1])
    latency = {f"p{p}": duration_ms(v) for p, v in re.findall(
        r"^\s*(50|75|90|99)%\s+([0-9.]+(?:us|ms|s|m|h))\s*$", text, re.MULTILINE)}
    if set(latency) != {"p50", "p75", "p90", "p99"}:
        raise ValueError(f"wrk output lacks the latency distribution (run with --latency):\n{text}")
    avg = re.search(r"^\s*Latency\s+([0-9.]+(?:us|ms|s|m|h))\s+\S+\s+([0-9.]+(?:us|ms|s|m|h))",
                    text, re.MULTILINE)
    if avg:
        latency.update(mean=duration_ms(avg[1]), max=duration_ms(avg[2]))
    non_2xx_match = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", text, re.MULTILINE)
    socket_match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result = WrkResult(requests=requests, duration_s=duration_s, qps=qps, latency_ms=latency,
                       non_2xx=int(non_2xx_match[1]) if non_2xx_match else 0)
    if socket_match:
        result.socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, socket_match.groups())))
    exact = re.search(r"^BENCH_JSON (\{.*\})\s*$", text, re.MULTILINE)
    if exact:
        _apply_exact(result, json.loads(exact[1]))
    return result


def _apply_exact(result: WrkResult, doc: dict[str, Any]) -> None:
    errors = doc["errors"]
    if doc["requests"] != result.requests or errors["status"] != result.non_2xx:
        raise ValueError(f"wrk's text report and BENCH_JSON disagree: {result} vs {doc}")
    socket_errors = {k: errors[k] for k in ("connect", "read", "write", "timeout")}
    if socket_errors != result.socket_errors:
        raise ValueError(f"wrk's socket errors disagree: {result.socket_errors} vs {socket_errors}")
    result.duration_s = doc["duration_us"] / 1e6
    result.latency_ms = {k.replace("p99.9", "p999"): v / 1e3
                         for k, v in doc["latency_us"].items()}
    result.exact = True


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


# --- (a) the model alone ------------------------------------------------------------------


def _raw_inputs(model: str, batch: int) -> dict[str, Any]:
    if model == "natality":
        from serving.examples.natality import sample_rows

        return sample_rows(batch, seed=batch)
    if model == "image_classifier":
        from serving.examples.image import sample_jpegs

        pool = sample_jpegs(min(batch, 32), seed=7)
        return {"image_bytes": [pool[i % len(pool)] for i in range(batch)]}
    raise ValueError(f"no raw inputs for model {model!r}")


def measure_raw(model: str, model_dir: Path, batch_sizes: Sequence[int], calls: int) -> dict[str, Any]:
    """Rows/s of the serving signature at each batch size, inputs prepared beforehand.

    Each timed call includes fetching every output as numpy (what a server must do).
    Runs in this process: the caller pins it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from loadtests.baselines.naive_server import SIGNATURE, latest_version

    started = time.perf_counter()
    fn = tf.saved_model.load(str(latest_version(model_dir))).signatures[SIGNATURE]
    load_s = time.perf_counter() - started
    by_batch = []
    for batch in batch_sizes:
        inputs = {k: tf.constant(v) for k, v in _raw_inputs(model, batch).items()}
        for _ in range(max(2, calls // 20)):
            _fetch(fn(**inputs))
        started = time.perf_counter()
        for _ in range(calls):
            _fetch(fn(**inputs))
        seconds = time.perf_counter() - started
        by_batch.append({"batch_size": batch, "calls": calls, "seconds": seconds,
                         "ms_per_call": seconds / calls * 1e3, "rows_per_s": batch * calls / seconds})
    best = max(by_batch, key=lambda r: r["rows_per_s"])
    return {"tensorflow": tf.__version__, "load_seconds": load_s, "by_batch": by_batch,
            "best_batch_size": best["batch_size"], "best_rows_per_s": best["rows_per_s"]}


def _fetch(outputs: dict[str, Any]) -> None:
    for tensor in outputs.values():
        tensor.numpy()


def run_raw(workload: Workload, model_dir: Path, pinning: Pinning, log_path: Path) -> dict[str, Any]:
    argv = [*pinning.server, sys.executable, "-m", "loadtests.bench", "--measure-raw",
            workload.model, "--model-dir", str(model_dir),
            "--raw-batch-sizes", ",".join(map(str, workload.raw_batch_sizes)),
            "--raw-calls", str(workload.raw_calls)]
    with running(f"{workload.model} raw", argv, 0, log_path) as proc:
        try:
            proc.proc.wait(timeout=600)
        except subprocess.TimeoutExpired:
            raise RuntimeError("raw measurement took over 600 s") from None
        text = proc.log_path.read_text(errors="replace")
        match = re.search(r"^RAW_JSON (\{.*\})$", text, re.MULTILINE)
        if proc.proc.returncode != 0 or match is None:
            raise RuntimeError(f"raw measurement failed ({proc.proc.returncode}):\n{proc.log_tail()}")
        return json.loads(match[1])


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


def wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "missing"
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (proc.stdout + proc.stderr).splitlines()[0].strip() if (proc.stdout + proc.stderr) else "?"


def run_wrk(url: str, bodies_file: Path, duration_s: int, connections: int,
            pinning: Pinning) -> WrkResult:
    """One closed-loop wrk run replaying ``bodies_file``; wrk's CPU use is recorded."""
    argv = [*pinning.loadgen, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
            f"--timeout={WRK_TIMEOUT}", "--latency", "-s", str(LUA_SCRIPT), url, "--",
            str(bodies_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}\n{proc.stdout}")
    result = parse_wrk_output(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.loadgen_cpu = cpu / result.duration_s if result.duration_s else None
    return result


def run_server_setup(setup: str, workload: Workload, model_dir: Path, bodies: list[dict],
                     bodies_file: Path, plan: "Plan") -> dict[str, Any]:
    port = free_port()
    argv = server_argv(setup, workload.model, model_dir, port, plan.pinning)
    log_path = plan.out / "logs" / f"{workload.model}-{setup}.log"
    url = f"http://127.0.0.1:{port}/v1/models/{workload.model}:predict"
    warmup_s = max(0, round(plan.warmup * workload.duration_scale)) if plan.warmup else 0
    duration_s = max(1, round(plan.duration * workload.duration_scale))
    with running(f"{workload.model} {setup}", argv, port, log_path) as server:
        started = time.monotonic()
        server.wait_ready("/readyz", timeout=300)
        startup_s = time.monotonic() - started
        validate(url, bodies, None if setup == "noop" else workload.check)
        if warmup_s:
            log(f"{workload.model} {setup}: ready in {startup_s:.1f} s; warm-up {warmup_s} s")
            run_wrk(url, bodies_file, warmup_s, plan.connections, plan.pinning)
        log(f"{workload.model} {setup}: measuring {duration_s} s at {plan.connections} connections")
        cpu_before = server.cpu_seconds()
        result = run_wrk(url, bodies_file, duration_s, plan.connections, plan.pinning)
        cpu_after = server.cpu_seconds()
        if not server.alive():
            raise RuntimeError(f"{setup} died during the run; log tail:\n{server.log_tail()}")
        server_cpu = (cpu_after - cpu_before) / result.duration_s if (
            cpu_before is not None and cpu_after is not None and result.duration_s) else None
        return {**result.to_json(), "startup_seconds": startup_s, "warmup_seconds": warmup_s,
                "server_cpu": server_cpu, "pid": server.proc.pid, "log": str(log_path)}


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
                       bodies_file: Path, plan: "Plan") -> dict[str, Any]:
    """(e) and (f) at ``plan.connections``, then at 1 connection, against the same two processes.

    A failure is recorded in the result (``error``) with the runs done so far.
    """
    warmup_s = max(0, round(plan.warmup * workload.duration_scale)) if plan.warmup else 0
    duration_s = max(1, round(plan.duration * workload.duration_scale))
    path = f"/v1/models/{workload.model}:predict"
    result: dict[str, Any] = {"connections": plan.connections, "note": upstream_note(plan.pinning),
                              "runs": []}
    try:
        with contextlib.ExitStack() as stack:
            upstream, front = _start_upstream_pair(stack, workload.model, model_dir, plan, result)
            targets = {"direct": upstream, "gateway": front}
            for server in targets.values():
                validate(server.url + path, bodies, workload.check)
            for connections, warmup in ((plan.connections, warmup_s),
                                        (1, min(warmup_s, ONE_CONNECTION_WARMUP_S))):
                for setup, target in targets.items():
                    label = f"{workload.model} upstream {setup} -c{connections}"
                    try:
                        run = measure_through(target.url + path, (upstream, front), workload.model,
                                              bodies_file, connections, warmup, duration_s,
                                              plan.pinning, label)
                    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:
                        log(f"{label} FAILED: {err}")
                        run = {"error": str(err)}
                    result["runs"].append({"setup": setup, "connections": connections, **run})
                    for server in (upstream, front):
                        if not server.alive():
                            raise RuntimeError(f"{server.name} died during {label}; log tail:\n"
                                               f"{server.log_tail()}")
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:
        log(f"{workload.model} upstream FAILED: {err}")
        result["error"] = str(err)
    result["ratios"] = upstream_ratios(result)
    return result


def _start_upstream_pair(stack: contextlib.ExitStack, model: str, model_dir: Path, plan: "Plan",
                         result: dict[str, Any]) -> tuple[Server, Server]:
    """Start the upstream, and once it is ready the front (which asks the upstream for its
    model's versions); both are stopped when ``stack`` closes."""
    grpc_port, rest_port, front_port = free_port(), free_port(), free_port()
    upstream_argv, front_argv = upstream_argvs(model, model_dir, grpc_port, rest_port,
                                               front_port, plan.pinning)
    servers = []
    for name, argv, port in (("upstream", upstream_argv, rest_port),
                             ("front", front_argv, front_port)):
        server = stack.enter_context(running(f"{model} {name}", argv, port,
                                             plan.out / "logs" / f"{model}-{name}.log"))
        started = time.monotonic()
        server.wait_ready("/readyz", timeout=300)
        result[f"{name}_startup_seconds"] = time.monotonic() - started
        result.setdefault("logs", {})[name] = str(server.log_path)
        servers.append(server)
    return servers[0], servers[1]


def measure_through(url: str, servers: tuple[Server, Server], model: str, bodies_file: Path,
                    connections: int, warmup_s: int, duration_s: int, pinning: Pinning,
                    label: str) -> dict[str, Any]:
    """One wrk run against ``url``, with the (upstream, front) counters and CPU around it."""
    if warmup_s:
        log(f"{label}: warm-up {warmup_s} s")
        run_wrk(url, bodies_file, warmup_s, connections, pinning)
    log(f"{label}: measuring {duration_s} s")
    up0, front0 = settle(servers, model)
    cpu_before = [s.cpu_seconds() for s in servers]
    result = run_wrk(url, bodies_file, duration_s, connections, pinning)
    cpu_after = [s.cpu_seconds() for s in servers]
    up1, front1 = settle(servers, model)
    batches = front1.batches - front0.batches
    waits = front1.queue_waits - front0.queue_waits
    cpu = {name: (b1 - b0) / result.duration_s if None not in (b0, b1) and result.duration_s
           else None for name, b0, b1 in zip(("upstream", "front"), cpu_before, cpu_after)}
    return {**result.to_json(), "warmup_seconds": warmup_s, "server_cpu": cpu,
            "upstream_predicts": round(up1.predict_ok - up0.predict_ok),
            "front_requests": round(front1.predict_ok - front0.predict_ok),
            "front_mean_batch_rows": (front1.batch_rows - front0.batch_rows) / batches
            if batches else None,
            "front_mean_queue_wait_ms": (front1.queue_wait_seconds - front0.queue_wait_seconds)
            / waits * 1e3 if waits else None}


def upstream_run(result: dict[str, Any], setup: str, connections: int) -> dict[str, Any] | None:
    for run in result.get("runs", []):
        if run["setup"] == setup and run["connections"] == connections:
            return run
    return None


def upstream_ratios(result: dict[str, Any]) -> dict[str, Any]:
    """f/e QPS at ``connections``, the p50 and p99 (f) adds at 1 connection, rows per Predict."""
    def ok(setup: str, connections: int) -> dict[str, Any] | None:
        run = upstream_run(result, setup, connections)
        return run if run and "qps" in run else None

    n = result["connections"]
    out: dict[str, Any] = {}
    direct, gateway = ok("direct", n), ok("gateway", n)
    direct_1, gateway_1 = ok("direct", 1), ok("gateway", 1)
    if direct and gateway:
        out["gateway_vs_direct_qps"] = gateway["qps"] / direct["qps"]
    if gateway and gateway["upstream_predicts"]:
        out["rows_per_upstream_predict"] = gateway["front_requests"] / gateway["upstream_predicts"]
    if direct_1 and gateway_1:
        for p in ("p50", "p99"):
            out[f"added_{p}_ms_at_1"] = gateway_1["latency_ms"][p] - direct_1["latency_ms"][p]
    tainted = [f"{UPSTREAM_LABELS[r['setup']].split(',')[0]} at {r['connections']}"
               for r in (direct, gateway, direct_1, gateway_1) if r and r["errors"]]
    if tainted:
        out["invalid_because_of_errors"] = tainted
    return out


# --- the report -----------------------------------------------------------------------------


def _fmt_qps(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}K"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _errors_cell(run: dict[str, Any]) -> str:
    if not run["errors"]:
        return "0"
    parts = [f"non-2xx {run['non_2xx']}"] if run["non_2xx"] else []
    parts += [f"{k} {v}" for k, v in run["socket_errors"].items() if v]
    return f"**⚠ {run['errors']} ({', '.join(parts)})**"


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """d/c, d/b and d/a on QPS and p99 of d against c, where both sides were measured."""
    setups = result["setups"]

    def ok(name: str) -> dict[str, Any] | None:
        run = setups.get(name)
        return run if run and "qps" in run else None

    gateway, naive, noop = ok("gateway"), ok("naive"), ok("noop")
    raw = result.get("raw") if result.get("raw", {}).get("best_rows_per_s") else None
    out: dict[str, Any] = {}
    if gateway and naive:
        out["gateway_vs_naive_qps"] = gateway["qps"] / naive["qps"]
        out["gateway_vs_naive_p99"] = gateway["latency_ms"]["p99"] / naive["latency_ms"]["p99"]
    if gateway and noop:
        out["gateway_vs_noop_qps"] = gateway["qps"] / noop["qps"]
    if gateway and raw:
        out["gateway_vs_raw_best"] = gateway["qps"] / raw["best_rows_per_s"]
    tainted = [n for n, run in (("gateway", gateway), ("naive", naive), ("noop", noop))
               if run and run["errors"]]
    if tainted:
        out["invalid_because_of_errors"] = tainted
    return out


def goal(result: dict[str, Any]) -> dict[str, Any]:
    r = result["ratios"]
    if "gateway_vs_naive_qps" not in r:
        return {"met": False, "why": "gateway or naive server not measured"}
    met = (r["gateway_vs_naive_qps"] >= GOAL_QPS_RATIO and r["gateway_vs_naive_p99"] <= 1.0
           and not r.get("invalid_because_of_errors"))
    return {"met": met, "qps_ratio": r["gateway_vs_naive_qps"], "p99_ratio": r["gateway_vs_naive_p99"],
            "needs": f"QPS >= {GOAL_QPS_RATIO}x naive, p99 <= naive, no errors"}


def render_model(model: str, result: dict[str, Any], connections: int) -> str:
    """The (a)-(d) table if any of them ran, then the upstream table if that ran."""
    parts = []
    if result.get("raw") or result.get("setups"):
        parts.append(_render_main(model, result, connections))
    if "upstream" in result:
        parts.append(render_upstream(model, result["upstream"]))
    return "\n".join(parts)


def _render_main(model: str, result: dict[str, Any], connections: int) -> str:
    lines = [f"### {model}: 1 row per request, {connections} connections", "",
             "| setup | QPS | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---|"]
    raw = result.get("raw", {})
    if raw.get("best_rows_per_s"):
        lines.append(f"| {SETUP_LABELS['raw']} ({raw['best_batch_size']}) | "
                     f"{_fmt_qps(raw['best_rows_per_s'])} rows/s | – | – | – |")
    elif "error" in raw:
        lines.append(f"| {SETUP_LABELS['raw']} | **FAILED** | – | – | {raw['error'][:80]} |")
    for setup in ("noop", "naive", "gateway"):
        run = result["setups"].get(setup)
        if run is None:
            continue
        if "error" in run:
            lines.append(f"| {SETUP_LABELS[setup]} | **FAILED** | – | – | "
                         f"{run['error'].splitlines()[0][:100]} |")
            continue
        lat = run["latency_ms"]
        lines.append(f"| {SETUP_LABELS[setup]} | {_fmt_qps(run['qps'])} | {_fmt_ms(lat['p50'])} | "
                     f"{_fmt_ms(lat['p99'])} | {_errors_cell(run)} |")
    lines.append("")
    if raw.get("by_batch"):
        lines.append("Model alone, rows/s by batch size: " + ", ".join(
            f"{r['batch_size']}: {_fmt_qps(r['rows_per_s'])} ({r['ms_per_call']:.2f} ms/call)"
            for r in raw["by_batch"]) + ".")
    details = []
    for setup in ("noop", "naive", "gateway"):
        run = result["setups"].get(setup)
        if run and "qps" in run:
            lat = run["latency_ms"]
            cpu = (f"server CPU {run['server_cpu']:.0%}" if run.get("server_cpu") is not None
                   else "server CPU ?")
            gen = (f"wrk CPU {run['loadgen_cpu']:.0%}" if run.get("loadgen_cpu") is not None
                   else "wrk CPU ?")
            details.append(f"{setup}: {run['requests']} requests in {run['duration_s']:.1f} s, "
                           f"p75 {_fmt_ms(lat['p75'])} / p90 {_fmt_ms(lat['p90'])} ms, {cpu}, {gen}")
    if details:
        lines.append("Runs: " + "; ".join(details) + ".")
    r = result["ratios"]
    parts = []
    if "gateway_vs_naive_qps" in r:
        parts.append(f"d/c QPS **{r['gateway_vs_naive_qps']:.2f}×**")
    if "gateway_vs_noop_qps" in r:
        parts.append(f"d/b QPS {r['gateway_vs_noop_qps']:.2f}×")
    if "gateway_vs_raw_best" in r:
        parts.append(f"d/a {r['gateway_vs_raw_best']:.2%} of the model's best rows/s")
    if "gateway_vs_naive_p99" in r:
        d_p99 = result["setups"]["gateway"]["latency_ms"]["p99"]
        c_p99 = result["setups"]["naive"]["latency_ms"]["p99"]
        parts.append(f"p99 d vs c {_fmt_ms(d_p99)} vs {_fmt_ms(c_p99)} ms "
                     f"({r['gateway_vs_naive_p99']:.2f}×)")
    if parts:
        lines.append("Ratios: " + "; ".join(parts) + ".")
    for name in r.get("invalid_because_of_errors", []):
        lines.append(f"**WARNING: {name} had errors "
                     f"({result['setups'][name]['errors']}); its QPS is not comparable.**")
    if "goal" in result:
        g = result["goal"]
        verdict = "MET" if g["met"] else "NOT MET"
        lines.append(f"Goal ({g.get('needs', '')}): **{verdict}**.")
    return "\n".join(lines) + "\n"


def _merging_cell(run: dict[str, Any]) -> str:
    """Upstream Predict calls / client requests (as the server that answered them counted)."""
    calls = run["upstream_predicts"]
    clients = run["front_requests"] if run["setup"] == "gateway" else calls
    rows = f" ({clients / calls:.1f} rows/call)" if calls else ""
    return f"{calls} / {clients}{rows}"


def render_upstream(model: str, upstream: dict[str, Any]) -> str:
    n = upstream["connections"]
    lines = [f"### {model}, upstream: gateway → upstream vs clients calling the upstream "
             "directly, 1 row per request", ""]
    if "error" in upstream:
        lines += [f"**FAILED**: {upstream['error'].splitlines()[0][:200]} (log tails in the "
                  "JSON report)", ""]
    if not upstream.get("runs"):
        return "\n".join(lines) + "\n"
    lines += ["| setup | connections | QPS | p50 ms | p99 ms | errors | upstream Predicts / "
              "client requests |", "|---|---:|---:|---:|---:|---|---:|"]
    details = []
    for run in upstream["runs"]:
        label = UPSTREAM_LABELS[run["setup"]]
        if "error" in run:
            lines.append(f"| {label} | {run['connections']} | **FAILED** | – | – | "
                         f"{run['error'].splitlines()[0][:100]} | – |")
            continue
        lat = run["latency_ms"]
        lines.append(f"| {label} | {run['connections']} | {_fmt_qps(run['qps'])} | "
                     f"{_fmt_ms(lat['p50'])} | {_fmt_ms(lat['p99'])} | {_errors_cell(run)} | "
                     f"{_merging_cell(run)} |")
        usage = ", ".join(
            f"{name} CPU {value:.0%} ({value / run['qps'] * 1e3:.2f} ms/request)"
            if value is not None and run["qps"] else f"{name} CPU ?"
            for name, value in run["server_cpu"].items())
        extra = ""
        if run["setup"] == "gateway" and run.get("front_mean_batch_rows") is not None:
            extra = f", front's mean batch {run['front_mean_batch_rows']:.1f} rows"
            if run.get("front_mean_queue_wait_ms") is not None:
                extra += f" after {_fmt_ms(run['front_mean_queue_wait_ms'])} ms in its queue"
        gen = f"wrk CPU {run['loadgen_cpu']:.0%}" if run.get("loadgen_cpu") is not None else "wrk CPU ?"
        details.append(f"{run['setup']} -c{run['connections']}: {run['requests']} requests in "
                       f"{run['duration_s']:.1f} s, {usage}, {gen}{extra}")
    lines.append("")
    if details:
        lines.append("Runs: " + "; ".join(details) + ".")
    r = upstream["ratios"]
    parts = []
    if "gateway_vs_direct_qps" in r:
        parts.append(f"f/e QPS at {n} connections **{r['gateway_vs_direct_qps']:.2f}×**")
    if "added_p50_ms_at_1" in r:
        direct_1, gateway_1 = upstream_run(upstream, "direct", 1), upstream_run(upstream, "gateway", 1)
        parts.append(
            f"the gateway adds **{r['added_p50_ms_at_1']:+.2f} ms** p50 at 1 connection "
            f"({_fmt_ms(gateway_1['latency_ms']['p50'])} vs {_fmt_ms(direct_1['latency_ms']['p50'])} ms; "
            f"p99 {r['added_p99_ms_at_1']:+.2f} ms: {_fmt_ms(gateway_1['latency_ms']['p99'])} vs "
            f"{_fmt_ms(direct_1['latency_ms']['p99'])} ms)")
    if "rows_per_upstream_predict" in r:
        gateway = upstream_run(upstream, "gateway", n)
        parts.append(f"at {n} connections the front merged {gateway['front_requests']} requests "
                     f"into {gateway['upstream_predicts']} upstream Predicts "
                     f"({r['rows_per_upstream_predict']:.1f} rows each)")
    if parts:
        lines.append("Ratios: " + "; ".join(parts) + ".")
    for name in r.get("invalid_because_of_errors", []):
        lines.append(f"**WARNING: {name} connections had errors; its figures are not comparable.**")
    lines.append("Upstream Predicts: the upstream's `tfgw_requests_total{method=\"predict\","
                 "code=\"OK\"}` over the run (REST calls in (e), the front's gRPC calls in (f)); "
                 "client requests: as counted by the server the clients called (wrk's count, in "
                 "Runs, omits those still in flight when it stopped).")
    lines.append(f"Pinning: {upstream['note']}")
    return "\n".join(lines) + "\n"


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    head = (f"## make bench ({meta['started']})\n\n{meta['cpus']} CPUs; {meta['pinning']}; "
            f"{meta['wrk']}; wrk -t1, timeout {WRK_TIMEOUT}; measured {meta['duration']} s after "
            f"{meta['warmup']} s warm-up (image model: 2/3 of both); "
            f"Python {meta['python']}, TensorFlow {meta.get('tensorflow', '?')}; "
            f"commit {meta['commit']}.\n")
    return head + "\n" + "\n".join(render_model(m, r, meta["connections"])
                                   for m, r in report["models"].items())


# --- the run ------------------------------------------------------------------------------


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


def bench_model(workload: Workload, plan: Plan) -> dict[str, Any]:
    model_dir = plan.models_dir / workload.model
    result: dict[str, Any] = {"setups": {}}
    if "raw" in plan.setups:
        log(f"{workload.model} raw: batch sizes {workload.raw_batch_sizes}, "
            f"{workload.raw_calls} calls each")
        try:
            result["raw"] = run_raw(workload, model_dir, plan.pinning,
                                    plan.out / "logs" / f"{workload.model}-raw.log")
        except RuntimeError as err:
            log(f"{workload.model} raw FAILED: {err}")
            result["raw"] = {"error": str(err)}
    bodies = workload.bodies()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bodies_file = Path(tmp) / f"{workload.model}.jsonl"
        bodies_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
        result["distinct_bodies"] = len(bodies)
        result["mean_body_bytes"] = bodies_file.stat().st_size / len(bodies)
        for setup in ("noop", "naive", "gateway"):
            if setup not in plan.setups:
                continue
            try:
                result["setups"][setup] = run_server_setup(
                    setup, workload, model_dir, bodies, bodies_file, plan)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:
                log(f"{workload.model} {setup} FAILED: {err}")
                result["setups"][setup] = {"error": str(err)}
        if "upstream" in plan.setups and not workload.upstream:
            log(f"{workload.model}: no upstream comparison for this model (natality only)")
        elif "upstream" in plan.setups:
            try:
                result["upstream"] = run_upstream_setup(workload, model_dir, bodies, bodies_file,
                                                        plan)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:
                log(f"{workload.model} upstream FAILED: {err}")
                result["upstream"] = {"connections": plan.connections, "error": str(err)}
    result["ratios"] = ratios(result)
    if workload.model == GOAL_MODEL and {"naive", "gateway"} <= set(plan.setups):
        result["goal"] = goal(result)
    return result


def run(plan: Plan) -> dict[str, Any]:
    """Benchmark every model of the plan; write and return the report."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    plan.out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    report: dict[str, Any] = {"meta": {
        "started": started, "cpus": os.cpu_count(), "pinning": plan.pinning.note,
        "wrk": wrk_version(), "python": platform.python_version(), "commit": git_commit(),
        "duration": plan.duration, "warmup": plan.warmup, "connections": plan.connections,
        "setups": list(plan.setups), "wrk_timeout": WRK_TIMEOUT,
    }, "models": {}}
    log(plan.pinning.note)
    began = time.monotonic()
    for model in plan.models:
        result = bench_model(WORKLOADS[model], plan)
        report["models"][model] = result
        tf_version = result.get("raw", {}).get("tensorflow")
        if tf_version:
            report["meta"]["tensorflow"] = tf_version
        print(render_model(model, result, plan.connections), flush=True)
    report["meta"]["seconds"] = time.monotonic() - began
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(report, indent=2)
    (plan.out / f"bench-{stamp}.json").write_text(text)
    (plan.out / "latest.json").write_text(text)
    (plan.out / "latest.md").write_text(render(report))
    log(f"done in {report['meta']['seconds']:.0f} s; wrote {plan.out}/latest.json, latest.md, "
        f"bench-{stamp}.json")
    return report


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per server")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up seconds per server (0: none)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--models", type=_csv, default=("natality", "image_classifier"),
                        help=f"comma-separated, from {', '.join(WORKLOADS)}")
    parser.add_argument("--setups", type=_csv, default=SETUPS,
                        help=f"comma-separated subset of {','.join(SETUPS)} "
                             "(upstream: natality only)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    # Internal: the raw measurement, run by the benchmark in a pinned subprocess.
    parser.add_argument("--measure-raw", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--raw-batch-sizes", type=_csv, help=argparse.SUPPRESS)
    parser.add_argument("--raw-calls", type=int, help=argparse.SUPPRESS)
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.measure_raw:
        raw = measure_raw(args.measure_raw, args.model_dir,
                          [int(b) for b in args.raw_batch_sizes], args.raw_calls)
        print("RAW_JSON " + json.dumps(raw), flush=True)
        return None
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
