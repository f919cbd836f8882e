"""The gateway against the HTTP ceiling, side by side: issue 13's goal 3 measured so that
the machine's other load cannot decide it.

``make bench`` runs the no-op server (the ceiling) and the gateway one after the other, so
each gets whatever share of the machine is free at that moment; on a shared host the
ratio of two such runs moved from 0.3x to 1.4x on the same code. Here both servers run at
the same time on the same pinned core, each under its own wrk (one thread, ``--connections``
connections, natality's 1-row bodies) on the load-generator core, for ``--rounds`` rounds.
Both are CPU-bound, so the scheduler gives each about half the core and what differs is
the CPU each spends per request: the gateway's share of the ceiling is the ceiling's CPU
per request over the gateway's (equal to the QPS ratio when the halves are equal; both are
printed, with each server's share of the core). The median of the rounds is the result.

    python -m loadtests.benchmarks.bench_ceiling [--rounds 5] [--duration 8] [--warmup 3]
                                      [--connections 64] [--out bench-results]

Writes ``OUT/ceiling-latest.json`` and ``OUT/ceiling-latest.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests.benchmarks import bench, bench_wrk
from loadtests.support.outputs import RUNS
from loadtests.support.probes import validate
from loadtests.support.processes import REPO, Pinning, Server, free_port, log, terminate_on_sigterm

MODEL = "natality"
SETUPS = ("noop", "gateway")
GOAL = 0.75


@dataclass(frozen=True)
class Side:
    """One server's part of a round."""

    qps: float
    errors: int
    cpu_share: float
    """CPU seconds per second of the round (1.0 = the whole pinned core)."""

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_share / self.qps * 1e3


@dataclass(frozen=True)
class Round:
    noop: Side
    gateway: Side

    @property
    def cpu_ratio(self) -> float:
        """The ceiling's CPU per request over the gateway's: the gateway's share of it."""
        return self.noop.cpu_ms_per_request / self.gateway.cpu_ms_per_request

    @property
    def qps_ratio(self) -> float:
        return self.gateway.qps / self.noop.qps


def measure(servers: dict[str, Server], urls: dict[str, str], bodies_file: Path, seconds: int,
            connections: int, loadgen: Sequence[str]) -> Round:
    """One round: both wrk runs at once, each server's CPU read around them."""
    before = {name: servers[name].cpu_seconds() for name in SETUPS}
    with ThreadPoolExecutor(len(SETUPS)) as pool:
        runs = {name: pool.submit(bench_wrk.run, urls[name], bodies_file, seconds, connections, loadgen)
                for name in SETUPS}
        results = {name: run.result() for name, run in runs.items()}
    sides = {}
    for name in SETUPS:
        servers[name].check_alive("during the run")
        result = results[name]
        after = servers[name].cpu_seconds()
        if before[name] is None or after is None:
            raise RuntimeError(f"cannot read the {name} server's CPU time")
        cpu = (after - before[name]) / result.duration_s
        sides[name] = Side(result.qps, result.errors, cpu)
    return Round(**sides)


def run(rounds: int, duration: int, warmup: int, connections: int, out: Path,
        models_dir: Path) -> dict:
    pinning = Pinning.detect()
    log(pinning.note)
    out.mkdir(parents=True, exist_ok=True)
    workload = bench.WORKLOADS[MODEL]
    bodies = workload.bodies()
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        bodies_file = Path(tmp) / "bodies.jsonl"
        bodies_file.write_text("".join(json.dumps(b, separators=(",", ":")) + "\n" for b in bodies))
        servers: dict[str, Server] = {}
        urls: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            for name in SETUPS:
                port = free_port()
                argv = bench.server_argv(name, MODEL, models_dir / MODEL, port, pinning)
                log_path = out / "logs" / f"ceiling-{name}.log"
                servers[name] = stack.enter_context(Server(f"{MODEL} {name}", argv, log_path, port))
                urls[name] = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
                validate(urls[name], bodies, None if name == "noop" else workload.check)
            if warmup:
                log(f"warm-up {warmup} s, both at once")
                measure(servers, urls, bodies_file, warmup, connections, pinning.loadgen)
            measured = []
            for i in range(rounds):
                measured.append(measure(servers, urls, bodies_file, duration, connections,
                                        pinning.loadgen))
                r = measured[-1]
                log(f"round {i + 1}/{rounds}: gateway/ceiling CPU per request {1 / r.cpu_ratio:.2f}x "
                    f"-> {r.cpu_ratio:.2f} of the ceiling; QPS {r.gateway.qps:.0f}/{r.noop.qps:.0f} "
                    f"= {r.qps_ratio:.2f}")
    report = {"rounds": [asdict(r) | {"cpu_ratio": r.cpu_ratio, "qps_ratio": r.qps_ratio}
                         for r in measured],
              "median_cpu_ratio": statistics.median(r.cpu_ratio for r in measured),
              "median_qps_ratio": statistics.median(r.qps_ratio for r in measured),
              "goal": GOAL, "connections": connections, "duration": duration,
              "pinning": pinning.note}
    (out / "ceiling-latest.json").write_text(json.dumps(report, indent=2))
    (out / "ceiling-latest.md").write_text(render(report))
    print(render(report), flush=True)
    return report


def render(report: dict) -> str:
    lines = [f"Gateway vs the no-op ceiling, side by side on one core ({report['pinning']}; "
             f"{report['connections']} connections each, {report['duration']} s rounds)", "",
             "| round | ceiling req/s | gateway req/s | ceiling CPU ms/req | gateway CPU ms/req "
             "| core share ceiling/gateway | gateway share of the ceiling (CPU) | QPS ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(report["rounds"], 1):
        noop, gw = Side(**r["noop"]), Side(**r["gateway"])
        errors = f" ({noop.errors + gw.errors} errors)" if noop.errors + gw.errors else ""
        lines.append(f"| {i} | {noop.qps:,.0f} | {gw.qps:,.0f}{errors} | {noop.cpu_ms_per_request:.3f} "
                     f"| {gw.cpu_ms_per_request:.3f} | {noop.cpu_share:.0%}/{gw.cpu_share:.0%} "
                     f"| {r['cpu_ratio']:.2f} | {r['qps_ratio']:.2f} |")
    met = "met" if report["median_cpu_ratio"] >= report["goal"] else "not met"
    lines += ["", f"Median: the gateway reaches **{report['median_cpu_ratio']:.2f}** of the ceiling "
              f"by CPU per request (QPS ratio {report['median_qps_ratio']:.2f}); goal >= "
              f"{report['goal']:.2f}: {met}.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m loadtests.benchmarks.bench_ceiling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8, help="seconds per round")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds (0: none)")
    parser.add_argument("--connections", type=int, default=64, help="per server")
    parser.add_argument("--out", type=Path, default=RUNS)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("--rounds and --duration must be >= 1, --warmup >= 0, --connections >= 1")
    terminate_on_sigterm()
    return run(args.rounds, args.duration, args.warmup, args.connections, args.out.resolve(),
               args.models_dir.resolve())


if __name__ == "__main__":
    main()
