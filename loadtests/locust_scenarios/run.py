"""Locust scenarios, SLO searches and the batching knob sweep.

Against any server speaking TF Serving's APIs (a gateway, TF Serving itself, a cluster)::

    python -m loadtests.locust_scenarios.run scenario --host http://HOST:8501 --schedule spike --rate 800
    python -m loadtests.locust_scenarios.run scenario --user grpc --host HOST:8500 --rows 1:0.9,8:0.1
    python -m loadtests.locust_scenarios.run slo --host http://HOST:8501 --slo-ms 25
    python -m loadtests.locust_scenarios.run slo --user v2-binary --host http://HOST:8501 --slo-ms 25
    python -m loadtests.locust_scenarios.run cluster --host http://GATEWAY:8501 --grpc-host GATEWAY:8500 \
        --tfserving-host http://TF_SERVING:8501

Each of these runs with Locust's distributed mode when given ``--workers N`` (a master and N
worker processes here) or ``--expect-workers N`` (a master that N workers started elsewhere
join: ``python -m loadtests.locust_scenarios.run worker --master-host MASTER``, which the
locust-workers Deployment runs); the workers split the rate and the master merges their samples.

On this machine, starting each server itself (``make loadtest`` runs it with ``--short``)::

    python -m loadtests.locust_scenarios.run local [--short] [--slo-ms 25] [--out bench-results/loadtest]

``local`` SLO-searches the gateway at each ``max_batch_size`` x batch timeout of a grid,
with batching off, and the naive one-call-per-request server; the gateway in front of an
upstream (a second process playing TF Serving without batching) against that upstream
called directly; the gateway's gRPC API; then a spike and a step ramp around the best
rate. It writes ``OUT/loadtest.json``, ``OUT/loadtest.md``, ``OUT/sweep.png``, each run's
Locust CSV/HTML and raw samples under ``OUT/runs/`` and the servers' logs under
``OUT/logs/`` (``make publish-results`` copies the first three into ``loadtests/results/``).
The load generator is pinned to one core and every server to another. Each
server starts once: batching off and the best setting stay up for the runs that come back
to them (batching off's server is also the upstream behind the front).
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from loadtests.locust_scenarios import report, workers
from loadtests.locust_scenarios.scenario import USERS, Scenario
from loadtests.locust_scenarios.scenario import run as run_scenario
from loadtests.locust_scenarios.schedules import SCHEDULES
from loadtests.locust_scenarios.slo import SearchPlan, search
from loadtests.locust_scenarios.sweep import BATCHING_OFF, NAIVE, Servers, Setting, grid, search_setting, slug
from loadtests.locust_scenarios.workers import DEFAULT_PORT, Workers
from loadtests.support.outputs import ELSEWHERE, RUNS
from loadtests.support.processes import REPO, Pinning, git_commit, log, machine, terminate_on_sigterm


@dataclass(frozen=True)
class LocalPlan:
    """What ``local`` runs; ``--short`` is ``make loadtest``."""

    batch_sizes: tuple[int, ...]
    timeouts_ms: tuple[float, ...]
    seconds: float
    """Each measured step (and each spike/ramp phase)."""
    warmup: float
    tolerance: float
    max_steps: int


FULL = LocalPlan((8, 32, 128, 512), (0.5, 2.0, 8.0), seconds=20, warmup=5, tolerance=0.05,
                 max_steps=8)
SHORT = LocalPlan((16, 128), (2.0, 8.0), seconds=4, warmup=2, tolerance=0.1, max_steps=6)


def local(args: argparse.Namespace) -> dict[str, Any]:
    plan = replace(SHORT if args.short else FULL, **{
        name: getattr(args, name) for name in LocalPlan.__dataclass_fields__
        if getattr(args, name) is not None})
    pinning = Pinning.detect()
    out: Path = args.out
    model_dir = args.model_dir or REPO / "models" / args.model
    base = Scenario("rest", "", args.model, args.rows, seconds=plan.seconds, warmup=plan.warmup)
    slo_plan = SearchPlan(slo_ms=args.slo_ms, start_rate=args.start_rate,
                          tolerance=plan.tolerance, max_steps=plan.max_steps)
    log(f"{machine()}; {pinning.note}")
    began = time.monotonic()

    with Servers(args.model, model_dir, pinning, out) as servers:
        def searched(setting: Setting, user: str = "rest", start: float = args.start_rate) -> dict[str, Any]:
            return search_setting(setting, replace(base, user=user),
                                  replace(slo_plan, start_rate=start), servers)

        sweep = [searched(BATCHING_OFF)]
        start = sweep[0]["max_qps"] or args.start_rate
        for setting in grid(plan.batch_sizes, plan.timeouts_ms):
            sweep.append(searched(setting, start=start))  # each from the previous one's answer
            start = sweep[-1]["max_qps"] or start
            best = _best(sweep)
            servers.keep_only(BATCHING_OFF, Setting(**best["setting"]))  # both run again below
        sweep.append(searched(NAIVE))  # from scratch
        best_setting = Setting(**best["setting"])
        upstream = [searched(Setting(f"gateway → upstream ({best_setting.name})", "upstream",
                                     best_setting.max_batch_size, best_setting.timeout_ms))]
        servers.keep_only(BATCHING_OFF, best_setting)
        grpc = [searched(replace(best_setting, name=f"{best_setting.name}, gRPC"), user="grpc")]
        rate = best["max_qps"] or args.start_rate
        shapes = {  # the spike peaks at 1.5x the best rate at SLO; the ramp climbs to it
            f"spike, {best_setting.name}": (best_setting, "spike", rate),
            "spike, batching off": (BATCHING_OFF, "spike", rate),
            f"ramp, {best_setting.name}": (best_setting, "ramp", 1.5 * rate),
        }
        shaped = {}
        for label, (setting, schedule, top) in shapes.items():
            log(f"{label}, {top:.0f}/s")
            try:
                shaped[label] = run_scenario(
                    replace(base, host=servers.target(setting).rest, schedule=schedule, rate=top),
                    out / "runs" / slug(label), pinning.loadgen)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                log(f"{label}: FAILED: {error}")
                shaped[label] = {"error": str(error)}
    results = {
        "meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                 "pinning": pinning.note, "python": platform.python_version(),
                 "commit": git_commit(), "model": args.model, "rows": args.rows,
                 "plan": plan.__dict__, "slo_ms": args.slo_ms,
                 "command": "python -m loadtests.locust_scenarios.run " + " ".join(sys.argv[1:])},
        "sweep": sweep, "upstream": upstream, "grpc": grpc, "shapes": shaped,
    }
    results["meta"]["seconds"] = time.monotonic() - began
    write_report(results, out)
    return results


def write_report(results: dict[str, Any], out: Path) -> None:
    meta = results["meta"]
    slo = meta["slo_ms"]
    sweep = results["sweep"]
    png = report.plot(sweep, slo, f"{meta['model']}, REST, {meta['rows']} row(s) per request, "
                                  f"{meta['machine']}; {meta['pinning']}", out / "sweep.png")
    by_name = {r["setting"]["name"]: r for r in sweep}
    off, naive = by_name[BATCHING_OFF.name]["max_qps"], by_name[NAIVE.name]["max_qps"]
    best = _best(sweep)
    text = [
        f"### Load test: {meta['model']}, p99 ≤ {slo:g} ms (`{meta['command']}`)",
        "",
        f"{meta['machine']}; {meta['pinning']}. Open-loop Poisson arrivals (Locust), latency "
        "from when each request was due; a step passes when the answers arriving within it "
        "number ≥ 98% of the requests offered in it, < 0.1% fail and p99 ≤ SLO. "
        f"Steps of {meta['plan']['seconds']:g} s after {meta['plan']['warmup']:g} s warm-up; "
        f"commit {meta['commit']}, {meta['seconds'] / 60:.1f} min.",
        "",
        f"**Batching on ({best['setting']['name']}): {best['max_qps'] or 0:,.0f} req/s at SLO; "
        f"batching off: {off or 0:,.0f} ({_ratio(best['max_qps'], off)}); naive server: "
        f"{naive or 0:,.0f} ({_ratio(best['max_qps'], naive)}).**",
        "",
        report.search_table(sweep),
        "",
        f"![batching trade-off]({png.name})",
        "",
        "Gateway in front of an upstream vs calling the upstream directly (the upstream is "
        "the gateway without batching, standing in for TF Serving; it is the 'batching off' "
        "server above; both processes share the server core):",
        "",
        report.search_table([by_name[BATCHING_OFF.name], *results["upstream"]]),
        "",
        "The gateway's gRPC API (same settings, TF Serving's Predict stub under gevent):",
        "",
        report.search_table(results["grpc"]),
    ]
    text += report.shapes_section(results["shapes"])
    markdown = "\n".join(text) + "\n"
    (out / "loadtest.md").write_text(markdown)
    (out / "loadtest.json").write_text(json.dumps(results, indent=1))
    print(markdown, flush=True)
    log(f"wrote {out / 'loadtest.md'}, {out / 'loadtest.json'}, {png}")


def _best(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """The batching setting with the highest max QPS (the first of equals)."""
    return max((r for r in sweep if r["setting"]["max_batch_size"]), key=lambda r: r["max_qps"] or 0)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def remote_scenario(args: argparse.Namespace) -> dict[str, Any]:
    summary = run_scenario(_scenario(args), args.out, _loadgen(args))
    print(report.phases_table(summary))
    return summary


def remote_slo(args: argparse.Namespace) -> dict[str, Any]:
    result = _search_remote(f"{args.user} {args.host}", _scenario(args), _search_plan(args),
                            args.out, _loadgen(args))
    (args.out / "slo.json").write_text(json.dumps(result, indent=1))
    print(report.search_table([result]))
    return result


def cluster(args: argparse.Namespace) -> dict[str, Any]:
    """Deployed servers: SLO searches of the gateway's REST and gRPC APIs and of TF Serving
    called directly, then a spike and a ramp on the gateway around its best rate."""
    base = Scenario("rest", args.host, args.model, args.rows, seconds=args.seconds,
                    warmup=args.warmup, workers=_workers(args))
    targets = {"gateway, REST": ("rest", args.host), "gateway, gRPC": ("grpc", args.grpc_host),
               "TF Serving direct, REST": ("rest", args.tfserving_host)}
    searches = [_search_remote(label, replace(base, user=user, host=host), _search_plan(args),
                               args.out / slug(label), _loadgen(args))
                for label, (user, host) in targets.items() if host]
    rate = searches[0]["max_qps"] or args.start_rate
    shapes = {label: run_scenario(replace(base, schedule=schedule, rate=top),
                                  args.out / slug(label), _loadgen(args))
              for label, schedule, top in (("spike, gateway", "spike", rate),
                                           ("ramp, gateway", "ramp", 1.5 * rate))}
    text = "\n".join([f"### Load test against {args.host}, p99 ≤ {args.slo_ms:g} ms", "",
                      report.search_table(searches), *report.shapes_section(shapes)]) + "\n"
    (args.out / "cluster.md").write_text(text)
    (args.out / "cluster.json").write_text(json.dumps({"searches": searches, "shapes": shapes},
                                                      indent=1))
    print(text)
    return {"searches": searches, "shapes": shapes}


def _search_remote(label: str, scenario: Scenario, plan: SearchPlan, out: Path,
                   loadgen: Sequence[str]) -> dict[str, Any]:
    counter = itertools.count(1)
    result = search(lambda rate: run_scenario(scenario.at(rate), out / f"{next(counter)}-{rate}",
                                              loadgen)["measured"], plan)
    return {"setting": {"name": label, "server": "remote", "max_batch_size": None}, **result}


def _search_plan(args: argparse.Namespace) -> SearchPlan:
    return SearchPlan(slo_ms=args.slo_ms, start_rate=args.start_rate, tolerance=args.tolerance,
                      max_steps=args.max_steps)


def _loadgen(args: argparse.Namespace) -> tuple[str, ...]:
    return Pinning.detect().loadgen if args.pin else ()


def _workers(args: argparse.Namespace) -> Workers | None:
    if args.workers:
        return Workers(args.workers)
    return Workers(args.expect_workers, port=args.master_port) if args.expect_workers else None


def _scenario(args: argparse.Namespace) -> Scenario:
    return Scenario(args.user, args.host, args.model, args.rows, args.schedule, args.rate,
                    args.seconds, args.warmup, args.ramp_steps, workers=_workers(args))


def worker(args: argparse.Namespace) -> NoReturn:
    raise SystemExit(workers.serve(args.master_host, args.master_port))


def _numbers(kind: type) -> Any:
    return lambda text: tuple(kind(part) for part in text.split(","))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.locust_scenarios.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="natality")
    common.add_argument("--rows", default="1", help="rows per request: SIZE[:WEIGHT],...")
    common.add_argument("--slo-ms", type=float, default=25.0)
    common.add_argument("--start-rate", type=float, default=500.0)
    searching = argparse.ArgumentParser(add_help=False, parents=[common])
    searching.add_argument("--seconds", type=float, default=20.0, help="each measured step")
    searching.add_argument("--warmup", type=float, default=5.0)
    searching.add_argument("--tolerance", type=float, default=0.05)
    searching.add_argument("--max-steps", type=int, default=8)
    searching.add_argument("--pin", action="store_true",
                           help="pin the generator to one core (when the server shares the machine)")
    searching.add_argument("--out", type=Path, default=ELSEWHERE)
    distributed = searching.add_mutually_exclusive_group()
    distributed.add_argument("--workers", type=int,
                             help="Locust's distributed mode: a master and this many worker "
                                  "processes started here, each sending its share of the rate")
    distributed.add_argument("--expect-workers", type=int,
                             help="Locust's distributed mode with workers started elsewhere "
                                  "(`worker`): the master waits for this many on --master-port")
    searching.add_argument("--master-port", type=int, default=DEFAULT_PORT,
                           help="where the master listens for --expect-workers")
    remote = argparse.ArgumentParser(add_help=False, parents=[searching])
    remote.add_argument("--user", choices=sorted(USERS), default="rest")
    remote.add_argument("--host", required=True,
                        help="http://HOST:PORT (rest, v2-json, v2-binary) or HOST:PORT (grpc)")
    remote.add_argument("--schedule", choices=sorted(SCHEDULES), default="steady")
    remote.add_argument("--rate", type=float, default=100.0)
    remote.add_argument("--ramp-steps", type=int, default=4)
    commands.add_parser("scenario", parents=[remote], help="one Locust run").set_defaults(
        func=remote_scenario)
    commands.add_parser("slo", parents=[remote], help="SLO search against --host").set_defaults(
        func=remote_slo)
    deployed = commands.add_parser("cluster", parents=[searching],
                                   help="SLO searches, spike and ramp against deployed servers")
    deployed.add_argument("--host", required=True, help="the gateway's REST API: http://HOST:8501")
    deployed.add_argument("--grpc-host", help="the gateway's gRPC API: HOST:8500")
    deployed.add_argument("--tfserving-host", help="TF Serving's REST API, called directly")
    deployed.set_defaults(func=cluster)
    elsewhere = commands.add_parser("worker", help="a Locust worker for every master that comes "
                                                   "(--expect-workers; the locust-workers Deployment)")
    elsewhere.add_argument("--master-host", required=True, help="the master's host (its Service)")
    elsewhere.add_argument("--master-port", type=int, default=DEFAULT_PORT)
    elsewhere.set_defaults(func=worker)
    here = commands.add_parser("local", parents=[common],
                               help="sweep and comparisons, starting the servers here")
    here.add_argument("--short", action="store_true", help="make loadtest: small grid, short steps")
    here.add_argument("--model-dir", type=Path)
    here.add_argument("--batch-sizes", type=_numbers(int), help="max_batch_size grid, e.g. 8,128")
    here.add_argument("--timeouts-ms", type=_numbers(float), help="batch timeout grid, e.g. 1,8")
    for name, kind in (("seconds", float), ("warmup", float), ("tolerance", float),
                       ("max-steps", int)):
        here.add_argument(f"--{name}", type=kind, help=f"overrides the plan's {name}")
    here.add_argument("--out", type=Path, default=RUNS / "loadtest")
    here.set_defaults(func=local)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    terminate_on_sigterm()
    return args.func(args)


if __name__ == "__main__":
    main()
