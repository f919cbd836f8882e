"""The hybrid split: how much a prediction store written by a batch job buys the gateway,
with 0%, 20%, 50% and 90% of requests on precomputed keys.

For each store (the embedded SQLite file, a real redis-server) in one run on this machine:
a batch job (``batch/run.py --prediction_store``) writes the predictions of half the keys;
then the gateway (``make serve``'s batching, ``--prediction_store``) is started on the
server core and, per share, driven by the Locust open-loop scenario
(``loadtests/locust_scenarios/locustfile.py --key-field key --precomputed-share S``) first at
one fixed offered rate (the same for every share and store: p50/p99, the model rows computed
per second, the rows answered from the store), then SLO-searched (the highest rate within the
p99 SLO). Without a store the same search runs on requests without keys: the baseline.

    python -m loadtests.benchmarks.bench_precomputed [--model natality] [--shares 0,20,50,90]
        [--stores sqlite,redis] [--keys 2000] [--rate 300] [--slo-ms 25] [--seconds 4]
        [--skip-baseline] [--out bench-results/precomputed]

Needs redis-server for the Redis store (apt-get install redis-server). Results: a markdown
table on stdout and ``OUT/MODEL.{json,md}``, the plot ``OUT/MODEL.png`` (one set per model;
``make publish-results`` copies them into ``loadtests/results/precomputed/``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtests.locust_scenarios.scenario import Scenario
from loadtests.locust_scenarios.slo import SearchPlan
from loadtests.locust_scenarios.sweep import MAKE_SERVE, Servers, Target, search_setting, search_target, serve, slug
from loadtests.support.outputs import RUNS
from loadtests.support.payloads import KeyShare, check, predict_body
from loadtests.support.probes import scrape, validate
from loadtests.support.processes import REPO, Job, Pinning, free_port, git_commit, log, machine, wait_until

KEY_FIELD = "key"
STORES = ("sqlite", "redis")
BASELINE = "no store, requests without keys"
BATCH_TIMEOUT_S = 900


@contextlib.contextmanager
def running_store(kind: str, where: Path, pinning: Pinning) -> Iterator[str]:
    """A store's URL while it is up: a SQLite file, or a redis-server on the server core."""
    if kind == "sqlite":
        yield f"sqlite://{where / 'predictions.db'}"
        return
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    argv = [*pinning.server, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(where)]
    with Job("redis-server", argv, where / "redis.log") as job:
        import redis

        client = redis.Redis(port=port)

        def answers() -> bool:
            job.check_alive("at start")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 30, "redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0"


def precompute(url: str, keys: KeyShare, model: str, model_dir: Path, out: Path) -> float:
    """Run the batch job on the precomputed half of the keys into the store at ``url``;
    its wall seconds."""
    rows = out / "precompute-input.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in keys.precomputed(model, seed=2024)))
    argv = [sys.executable, "batch/run.py", "--input", str(rows), "--output", str(out / "precomputed"),
            "--model_base_path", str(model_dir), "--model_name", model, "--key_field", keys.field,
            "--prediction_store", url]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=BATCH_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"the batch job failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.monotonic() - started


def check_hits(target: Target, keys: KeyShare, model: str) -> None:
    """Precomputed keys are answered from the store, and rightly, before any load."""
    bodies = [predict_body([row]) for row in keys.precomputed(model, seed=2024)[:5]]
    before = scrape(target.servers[0], model).precomputed[0]
    validate(f"{target.rest}/v1/models/{model}:predict", bodies, lambda body, response: check(model, body, response))
    hits = scrape(target.servers[0], model).precomputed[0] - before
    if hits < len(bodies):
        raise RuntimeError(f"{hits:.0f} of {len(bodies)} precomputed rows came from the store")


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinning = Pinning.detect()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or REPO / "models" / args.model
    base = Scenario("rest", "", args.model, "1", seconds=args.seconds, warmup=args.warmup)
    plan = SearchPlan(slo_ms=args.slo_ms, start_rate=args.rate, tolerance=0.1, max_steps=args.max_steps)
    log(f"{machine()}; {pinning.note}")
    began = time.monotonic()
    results: dict[str, Any] = {}
    if not args.skip_baseline:
        with Servers(args.model, model_dir, pinning, out) as servers:
            results[BASELINE] = search_setting(replace(MAKE_SERVE, name="no store"), base, plan, servers,
                                               fixed_rate=args.rate)
    for kind in args.stores:
        where = out / kind
        where.mkdir(parents=True, exist_ok=True)
        with running_store(kind, where, pinning) as url:
            keys = KeyShare(KEY_FIELD, 0.0, args.keys)
            seconds = precompute(url, keys, args.model, model_dir, where)
            log(f"{kind}: the batch job stored {args.keys // 2} keys in {seconds:.1f} s")
            setting = replace(MAKE_SERVE, name=f"{kind} store", flags=(
                f"--prediction_store={url}", f"--prediction_key_field={KEY_FIELD}"))
            with serve(setting, args.model, model_dir, pinning, where) as target:
                check_hits(target, keys, args.model)
                start = args.rate
                for share in args.shares:  # one gateway: its cost model stays warm
                    name = f"{kind}, {share:.0%} precomputed"
                    result = search_target(target, name, replace(base, keys=KeyShare(KEY_FIELD, share, args.keys)),
                                           replace(plan, start_rate=start), pinning, where / "runs" / slug(name),
                                           fixed_rate=args.rate)
                    results[name] = {**result, "store": kind, "share": share, "batch_job_seconds": seconds}
                    start = result["max_qps"] or start
    report = {"meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                       "pinning": pinning.note, "commit": git_commit(), "model": args.model,
                       "rate": args.rate, "slo_ms": args.slo_ms, "keys": args.keys,
                       "seconds": time.monotonic() - began,
                       "command": "python -m loadtests.benchmarks.bench_precomputed " + " ".join(sys.argv[1:])},
              "results": results}
    text = render(report)
    print(text, flush=True)
    (out / f"{args.model}.json").write_text(json.dumps(report, indent=2, default=str))
    (out / f"{args.model}.md").write_text(text)
    plot(report, out / f"{args.model}.png")
    return report


def _fixed(result: dict[str, Any]) -> dict[str, Any]:
    return result.get("fixed") or {}


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [f"## {meta['model']}: share of requests on precomputed keys "
             f"({meta['keys'] // 2} of {meta['keys']} keys stored; fixed step at {meta['rate']}/s; "
             f"SLO p99 <= {meta['slo_ms']} ms)", "",
             "| setup | store | precomputed | max QPS within SLO | p99 at max (ms) "
             f"| p50 / p99 at {meta['rate']}/s (ms) | model rows computed /s | rows from the store "
             "| fallbacks |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, result in report["results"].items():
        fixed = _fixed(result)
        latency = fixed.get("latency_ms") or {}
        rows = fixed.get("precomputed_rows") or {}
        answered = sum(rows.values())
        lines.append(
            f"| {name} | {result.get('store', '-')} | {_pct(result.get('share'))} "
            f"| {result.get('max_qps') or '-'} | {_num(result.get('p99_ms_at_max'))} "
            f"| {_num(latency.get('p50'))} / {_num(latency.get('p99'))} "
            f"| {_num(fixed.get('model_rows_per_s'), 0)} "
            f"| {_pct(rows.get('hit', 0) / answered) if answered else '-'} "
            f"| {rows.get('fallback', 0):.0f} |")
    lines += ["", f"{meta['machine']}; {meta['pinning']}; commit {meta['commit']}; "
                  f"`{meta['command']}` ({meta['seconds']:.0f} s)"]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def plot(report: dict[str, Any], path: Path) -> None:
    """Max QPS within the SLO and model rows computed, against the precomputed share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    figure, (qps_axis, rows_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in STORES:
        points = sorted((r["share"] * 100, r) for r in results.values() if r.get("store") == kind)
        if not points:
            continue
        shares = [share for share, _ in points]
        qps_axis.plot(shares, [r["max_qps"] or 0 for _, r in points], marker="o", label=kind)
        rows_axis.plot(shares, [_fixed(r).get("model_rows_per_s") or 0 for _, r in points],
                       marker="o", label=kind)
    baseline = results.get(BASELINE, {})
    if baseline.get("max_qps"):
        qps_axis.axhline(baseline["max_qps"], linestyle="--", color="grey", label="no store")
    meta = report["meta"]
    qps_axis.set(xlabel="% of requests on precomputed keys", ylabel=f"max req/s, p99 <= {meta['slo_ms']} ms",
                 title="Throughput within the SLO")
    rows_axis.set(xlabel="% of requests on precomputed keys", ylabel="model rows computed /s",
                  title=f"Model work at {meta['rate']} req/s")
    for axis in (qps_axis, rows_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{meta['model']}: precomputed predictions + online fallback")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _shares(text: str) -> tuple[float, ...]:
    return tuple(float(part) / 100 for part in text.split(","))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="natality", choices=["natality", "image_classifier"])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--shares", type=_shares, default=(0.0, 0.2, 0.5, 0.9),
                        help="percentages of requests on precomputed keys")
    parser.add_argument("--stores", type=lambda t: tuple(t.split(",")), default=STORES)
    parser.add_argument("--keys", type=int, default=2000, help="distinct keys; half are precomputed")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="the fixed step's offered req/s, and where the first search starts")
    parser.add_argument("--slo-ms", type=float, default=25.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=6,
                        help="SLO search steps after the fixed step (0: the fixed step alone)")
    parser.add_argument("--skip-baseline", action="store_true", help="no run without a store")
    parser.add_argument("--out", type=Path, default=RUNS / "precomputed")
    args = parser.parse_args(argv)
    unknown = set(args.stores) - set(STORES)
    if unknown:
        parser.error(f"unknown store(s) {sorted(unknown)}; known: {', '.join(STORES)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
