"""Large requests: natality :predict with 1, 8, 64 and 512 rows per request, in the row
(``{"instances": [...]}``) and the columnar (``{"inputs": {...}}``) format, against the
naive server and the gateway, next to the model's own rows/s at the same batch size.

In one run on this machine, pinned as ``make bench`` pins (wrk on one core, every server
on another): the model alone in a pinned subprocess (``baselines/raw_model``) at each
batch size, then the naive server and the gateway (``make bench``'s own command lines),
each started once and measured at every (rows, format) after a short warm-up, under the
same closed loop (wrk, ``--connections`` connections, a few dozen distinct pre-generated
bodies per point, each a random pick of 300 distinct rows). The naive server reads only
the row format, so both formats of the gateway are compared with its row figure.

The gateway runs with ``make bench``'s batching parameters except ``max_batch_size``, which
is raised to ``MERGED_REQUESTS`` times the largest request (``--max-batch-size`` sets it):
TF Serving refuses a request above ``max_batch_size`` (without large-batch splitting), so a
deployment that takes 512-row requests is configured for at least them (with 128 each
costs four model calls where the naive server makes one); and room for a few of them lets
the batcher merge concurrent large requests into one model call, whose cost barely grows
with its rows. Measured in one run, two gateways alternating under 16 connections of
512-row requests: ``max_batch_size`` 2048 against 512 answered 1.5-1.6x the requests at
1.6-1.7x less CPU each; 8192 against 2048 changed nothing beyond noise.

For each point: req/s, rows/s, the server's CPU milliseconds per row (what it costs the
server's core, falling as rows per request grow), the gateway/naive ratio and the gateway
against the model's rows/s at that batch size. Every non-2xx answer or socket error is
counted and shown: a server that answers errors fast must not look fast.

    python -m loadtests.benchmarks.bench_large [--duration 5] [--warmup 2] [--connections 16]
                                    [--rows 1,8,64,512] [--max-batch-size N] [--out bench-results]

Results: a markdown table on stdout and ``OUT/large-<time>.json``, ``OUT/large-latest.json``
and ``OUT/large-latest.md``; each server's log under ``OUT/logs/``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.benchmarks import bench, bench_wrk
from loadtests.benchmarks.bench_results import Failure, RawResult, to_json
from loadtests.support.outputs import RUNS
from loadtests.support.payloads import Instance, check, instances
from loadtests.support.probes import validate
from loadtests.support.processes import (
    REPO,
    Pinning,
    Server,
    cpu_share,
    free_port,
    git_commit,
    log,
    terminate_on_sigterm,
)

MODEL = "natality"
FORMATS = ("row", "columnar")
SERVERS = ("naive", "gateway")
GOAL_RATIO = 2.0
GOAL_ROWS = (64, 512)
"""At these rows per request the gateway must serve >= GOAL_RATIO x the naive server's rows/s."""
MERGED_REQUESTS = 4
"""Largest requests one model call may hold (the default ``max_batch_size`` / largest request)."""
DISTINCT_ROWS = 300
BODIES_PER_POINT = 32
RAW_CALLS = 500


# --- bodies ---------------------------------------------------------------------------------


def request_body(rows: list[Instance], form: str) -> dict[str, Any]:
    """``rows`` as one :predict body in TF Serving's row or columnar format."""
    if form == "row":
        return {"instances": rows}
    return {"inputs": {name: [row[name] for row in rows] for name in rows[0]}}


def bodies(rows: int, form: str, seed: int = 2024) -> list[dict[str, Any]]:
    """``BODIES_PER_POINT`` distinct bodies of ``rows`` rows each (the same rows in both forms)."""
    pool = instances(MODEL, DISTINCT_ROWS, seed)
    rng = random.Random(seed + rows)
    return [request_body(rng.sample(pool, rows) if rows <= len(pool) else rng.choices(pool, k=rows),
                         form) for _ in range(BODIES_PER_POINT)]


def check_any(body: dict[str, Any], response: dict[str, Any]) -> str | None:
    """``payloads.check`` for either format (a columnar answer is ``{"outputs": [...]}``)."""
    if "instances" in body:
        return check(MODEL, body, response)
    columns = body["inputs"]
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return check(MODEL, {"instances": rows}, {"predictions": response.get("outputs")})


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One server at one (rows per request, format)."""

    server: str
    rows: int
    form: str
    wrk: bench_wrk.WrkResult | None = None
    server_cpu: float | None = None
    """CPU seconds per second of the run (1.0 = one core)."""
    error: str | None = None

    @property
    def rows_per_s(self) -> float | None:
        return self.wrk.qps * self.rows if self.wrk else None

    @property
    def cpu_ms_per_row(self) -> float | None:
        rate = self.rows_per_s
        return self.server_cpu / rate * 1e3 if self.server_cpu is not None and rate else None


def _clean_rate(point: Point | None) -> float | None:
    """Rows/s of a run that answered no errors (the others are not comparable)."""
    return point.rows_per_s if point and point.wrk and not point.wrk.errors else None


@dataclass(frozen=True)
class Row:
    """One line of the table: the gateway at (rows, form) against the naive server and the model."""

    rows: int
    form: str
    naive: Point | None
    gateway: Point | None
    raw_rows_per_s: float | None
    gateway_vs_naive: float | None = dataclasses.field(init=False)
    naive_vs_gateway_cpu_per_row: float | None = dataclasses.field(init=False)
    """What the rows/s ratio would be with both servers CPU-bound on their core: steadier
    than ``gateway_vs_naive`` when other work takes CPU from the servers."""
    gateway_vs_raw: float | None = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        g, n = _clean_rate(self.gateway), _clean_rate(self.naive)
        object.__setattr__(self, "gateway_vs_naive", g / n if g and n else None)
        g_cpu, n_cpu = (p.cpu_ms_per_row if p and g and n else None
                        for p in (self.gateway, self.naive))
        object.__setattr__(self, "naive_vs_gateway_cpu_per_row",
                           n_cpu / g_cpu if g_cpu and n_cpu else None)
        object.__setattr__(self, "gateway_vs_raw", g / self.raw_rows_per_s
                           if g and self.raw_rows_per_s else None)


@dataclass(frozen=True)
class LargeReport:
    started: str
    commit: str
    pinning: str
    connections: int
    duration: int
    warmup: int
    max_batch_size: int
    """The gateway's ``max_batch_size``."""
    raw: RawResult | Failure | None
    points: tuple[Point, ...]
    rows: tuple[Row, ...]
    goal_met: bool
    goal: str = (f"gateway rows/s >= {GOAL_RATIO}x the naive server's at "
                 f"{', '.join(map(str, GOAL_ROWS))} rows per request, in both formats")


def table(report: LargeReport) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    def cells(point: Point | None) -> list[str]:
        if point is None or point.wrk is None:
            return ["failed" if point else "—"] * 3
        errors = f" ({point.wrk.errors} errors)" if point.wrk.errors else ""
        return [num(point.wrk.qps, ",.0f") + errors, num(point.rows_per_s, ",.0f"),
                num(point.cpu_ms_per_row, ".4f")]

    lines = [
        f"## natality, large requests ({report.connections} connections, gateway "
        f"max_batch_size {report.max_batch_size}; {report.pinning})",
        "",
        "| rows/req | format | naive req/s | naive rows/s | naive CPU ms/row | gateway req/s "
        "| gateway rows/s | gateway CPU ms/row | gateway/naive rows/s | naive/gateway CPU per row "
        "| model rows/s | gateway/model |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        lines.append("| " + " | ".join([
            str(row.rows), row.form, *cells(row.naive), *cells(row.gateway),
            num(row.gateway_vs_naive, ".2f") + "x", num(row.naive_vs_gateway_cpu_per_row, ".2f") + "x",
            num(row.raw_rows_per_s, ",.0f"),
            num(None if row.gateway_vs_raw is None else row.gateway_vs_raw * 100, ".0f") + "%",
        ]) + " |")
    lines += ["", "The naive server reads only the row format: its row figures are the baseline "
              "of both formats.",
              f"Goal ({report.goal}): {'MET' if report.goal_met else 'NOT MET'}."]
    failures = [f"- {p.server} {p.rows} rows {p.form}: {p.error}" for p in report.points if p.error]
    if isinstance(report.raw, Failure):
        failures.append(f"- raw model: {report.raw.error}")
    return "\n".join(lines + (["", "Failures:", *failures] if failures else [])) + "\n"


# --- the run --------------------------------------------------------------------------------


def measure(server: Server, name: str, rows: int, form: str, plan: bench.Plan,
            tmp: Path) -> Point:
    url = f"{server.url}/v1/models/{MODEL}:predict"
    label = f"{name} {rows} rows {form}"
    try:
        docs = bodies(rows, form)
        validate(url, docs, check_any)
        path = tmp / f"{rows}-{form}.jsonl"
        path.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs))
        if plan.warmup:
            bench_wrk.run(url, path, plan.warmup, plan.connections, plan.pinning.loadgen)
        log(f"{label}: measuring {plan.duration} s")
        before = server.cpu_seconds()
        result = bench_wrk.run(url, path, plan.duration, plan.connections, plan.pinning.loadgen)
        cpu = cpu_share(before, server.cpu_seconds(), result.duration_s)
        server.check_alive(f"during {label}")
    except bench.MEASUREMENT_ERRORS as err:
        log(f"{label} FAILED: {err}")
        return Point(name, rows, form, error=str(err))
    return Point(name, rows, form, result, cpu)


def batching_config(max_batch_size: int, tmp: Path) -> Path:
    """``make bench``'s batching parameters file with another ``max_batch_size``."""
    text, count = re.subn(r"max_batch_size \{ value: \d+ \}",
                          f"max_batch_size {{ value: {max_batch_size} }}",
                          bench.BATCHING_CONFIG.read_text())
    if count != 1:
        raise RuntimeError(f"no single max_batch_size in {bench.BATCHING_CONFIG}")
    path = tmp / "batching.config"
    path.write_text(text)
    return path


def gateway_argv(argv: list[str], config: Path) -> list[str]:
    """``make bench``'s gateway command line with the batching parameters in ``config``."""
    flag = "--batching_parameters_file="
    return [flag + str(config) if arg.startswith(flag) else arg for arg in argv]


def run_server(name: str, sizes: Sequence[int], plan: bench.Plan, config: Path,
               tmp: Path) -> list[Point]:
    """Start one server and measure it at every point (the naive one in the row format only)."""
    port = free_port()
    argv = bench.server_argv(name, MODEL, plan.models_dir / MODEL, port, plan.pinning)
    if name == "gateway":
        argv = gateway_argv(argv, config)
    forms = ("row",) if name == "naive" else FORMATS
    try:
        with Server(f"{MODEL} {name}", argv, plan.log_path(MODEL, f"large-{name}"), port) as server:
            return [measure(server, name, rows, form, plan, tmp) for rows in sizes for form in forms]
    except bench.MEASUREMENT_ERRORS as err:
        log(f"{name} FAILED: {err}")
        return [Point(name, rows, form, error=str(err)) for rows in sizes for form in forms]


def run(plan: bench.Plan, sizes: tuple[int, ...], max_batch_size: int) -> LargeReport:
    plan.out.mkdir(parents=True, exist_ok=True)
    log(plan.pinning.note)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    workload = dataclasses.replace(bench.WORKLOADS[MODEL], raw_batch_sizes=sizes, raw_calls=RAW_CALLS)
    raw: RawResult | Failure
    try:
        raw = bench.run_raw(workload, plan.models_dir / MODEL, plan)
    except RuntimeError as err:
        raw = Failure(str(err))
    raw_rate = {t.batch_size: t.rows_per_s for t in raw.by_batch} if isinstance(raw, RawResult) else {}
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        config = batching_config(max_batch_size, Path(tmp))
        for name in SERVERS:
            points += run_server(name, sizes, plan, config, Path(tmp))
    found = {(p.server, p.rows, p.form): p for p in points}
    rows = tuple(Row(size, form, found.get(("naive", size, "row")), found.get(("gateway", size, form)),
                     raw_rate.get(size)) for size in sizes for form in FORMATS)
    judged = [r for r in rows if r.rows in GOAL_ROWS]
    met = bool(judged) and all(r.gateway_vs_naive is not None and r.gateway_vs_naive >= GOAL_RATIO
                               for r in judged)
    return LargeReport(started, git_commit(), plan.pinning.note, plan.connections, plan.duration,
                       plan.warmup, max_batch_size, raw, tuple(points), rows, met)


def _json(report: LargeReport) -> dict[str, Any]:
    doc = to_json(report)
    for point, out in zip(report.points, doc["points"], strict=True):
        out.update(rows_per_s=point.rows_per_s, cpu_ms_per_row=point.cpu_ms_per_row)
    return doc


def write(report: LargeReport, out: Path) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(_json(report), indent=2)
    (out / f"large-{stamp}.json").write_text(text)
    (out / "large-latest.json").write_text(text)
    (out / "large-latest.md").write_text(table(report))
    log(f"wrote {out}/large-{stamp}.json, large-latest.json, large-latest.md")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.benchmarks.bench_large",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="measured seconds per point")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per point (0: none)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", default="1,8,64,512", help="rows per request, comma-separated",
                        type=lambda text: tuple(int(size) for size in text.split(",")))
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help=f"the gateway's max_batch_size (default: {MERGED_REQUESTS} x the "
                             "largest --rows)")
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args(argv)
    args.max_batch_size = args.max_batch_size or MERGED_REQUESTS * max(args.rows)
    if min(args.duration, args.connections, args.max_batch_size, *args.rows) < 1 or args.warmup < 0:
        parser.error("--duration, --connections, --rows and --max-batch-size must be >= 1, "
                     "--warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> LargeReport:
    args = parse_args(argv)
    terminate_on_sigterm()
    plan = bench.Plan(models=(MODEL,), setups=SERVERS, duration=args.duration, warmup=args.warmup,
                      connections=args.connections, out=args.out.resolve(),
                      models_dir=args.models_dir.resolve(), pinning=Pinning.detect())
    report = run(plan, args.rows, args.max_batch_size)
    print(table(report), flush=True)
    write(report, plan.out)
    return report


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        sys.exit(130)
