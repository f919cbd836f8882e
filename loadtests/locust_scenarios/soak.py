"""``make soak``: minutes of steady load with a new model version every minute.

The gateway (``make serve``'s batching) serves natality from a base path of its own; an
SLO search on it measures the highest rate within the p99 SLO (unless ``--max-qps`` is
given), then an open-loop Locust run offers ``--fraction`` of that for ``--minutes`` while a
new version directory is copied in every ``--rollout-every`` seconds (staged under a hidden
name, then renamed, as a deployment would). Reported: every request's outcome (goal: no
errors), that each version became the one served, and the server's RSS from the end of the
first rollout period to the end (goal: growth under 10%).

    python -m loadtests.locust_scenarios.soak [--minutes 5] [--out bench-results/soak]

It writes ``OUT/soak.md`` and ``OUT/soak.json``; ``make publish-results`` copies them into
``loadtests/results/soak/``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.locust_scenarios import scenario as locust_scenario
from loadtests.locust_scenarios.scenario import Scenario
from loadtests.locust_scenarios.slo import SearchPlan, search
from loadtests.support.outputs import RUNS
from loadtests.support.processes import REPO, Pinning, Server, free_port, log, rss_kb, wait_until

MODEL = "natality"
BATCHING = REPO / "serving" / "examples" / "batching.config"
TICK_S = 1.0
"""How often the RSS is sampled and a due rollout starts (none while a rollout waits to be
served): a short soak still gets samples on both sides of its first rollout."""


@dataclass
class Rollout:
    version: int
    copied_at_s: float
    served_after_s: float | None = None


@dataclass
class SoakResult:
    max_qps: float
    max_qps_source: str
    rate: float
    minutes: float
    requests: int
    errors: int
    errors_by_kind: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    rollouts: list[Rollout] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the load began, server RSS in MB)."""

    @property
    def rss_growth(self) -> float | None:
        """RSS at the end over RSS after the first rollout period (warm, one version)."""
        after_warmup = [mb for t, mb in self.rss_mb if t >= self.first_period_s]
        return after_warmup[-1] / after_warmup[0] - 1 if len(after_warmup) >= 2 else None

    first_period_s: float = 60.0


def rss_mb(pid: int) -> float:
    return rss_kb(pid) / 1024


def served_versions(server: Server) -> set[int]:
    """The versions AVAILABLE now; none known when the status is slow to come under load."""
    try:
        with urllib.request.urlopen(f"{server.url}/v1/models/{MODEL}", timeout=10) as response:
            status = json.loads(response.read())
    except TimeoutError:
        return set()
    return {int(v["version"]) for v in status["model_version_status"] if v["state"] == "AVAILABLE"}


def roll_in(base: Path, source: Path, version: int) -> None:
    """Copy ``source`` in as ``version``: staged under a hidden name (not a number, so the
    server ignores it), then renamed into place at once."""
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(base / str(version))


def measure_max_qps(server: Server, pinning: Pinning, out: Path, slo_ms: float) -> float:
    base = Scenario(user="rest", host=server.url, model=MODEL, seconds=5, warmup=2)

    def measure(rate: float) -> dict[str, Any]:
        step = locust_scenario.run(base.at(rate), out / "search" / f"{rate:g}", pinning.loadgen)["measured"]
        log(f"search: {rate:g}/s -> achieved {step['achieved_rate']:.0f}/s, p99 {step['latency_ms']['p99']} ms")
        return step

    result = search(measure, SearchPlan(slo_ms=slo_ms, start_rate=2000, tolerance=0.1, max_steps=7))
    if not result["max_qps"]:
        raise RuntimeError(f"no rate met the SLO: {result['failed_because']}")
    return float(result["max_qps"])


def soak(args: argparse.Namespace) -> SoakResult:
    pinning = Pinning.detect()
    source = REPO / "models" / MODEL / "1"
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        base = Path(tmp) / MODEL
        base.mkdir()
        roll_in(base, source, 1)
        port = free_port()
        argv = [*pinning.server, sys.executable, "-m", "serving", f"--rest_api_port={port}", f"--port={free_port()}",
                f"--model_name={MODEL}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
                "--enable_batching", f"--batching_parameters_file={BATCHING}"]
        with Server("gateway", argv, args.out / "logs" / "gateway.log", port) as server:
            if args.max_qps:
                max_qps, how = args.max_qps, "given (--max-qps)"
            else:
                max_qps, how = measure_max_qps(server, pinning, args.out, args.slo_ms), "SLO search, this run"
            rate = round(args.fraction * max_qps)
            seconds = args.minutes * 60
            log(f"max {max_qps:g} req/s ({how}); soaking at {rate} req/s for {seconds:g} s")
            load = Scenario(user="rest", host=server.url, model=MODEL, rate=rate, seconds=seconds, warmup=0)
            outcome: dict[str, Any] = {}
            runner = threading.Thread(target=lambda: outcome.update(
                summary=locust_scenario.run(load, args.out / "soak", pinning.loadgen)), daemon=True)
            started = time.monotonic()
            runner.start()
            result = SoakResult(max_qps, how, rate, args.minutes, 0, 0, {}, None, None,
                                first_period_s=args.rollout_every)
            next_rollout, version = started + args.rollout_every, 1
            while runner.is_alive():
                now = time.monotonic()
                result.rss_mb.append((round(now - started, 1), round(rss_mb(server.proc.pid), 1)))
                if now >= next_rollout and next_rollout - started < seconds - 5:
                    version += 1
                    roll_in(base, source, version)
                    rollout = Rollout(version, round(time.monotonic() - started, 1))
                    result.rollouts.append(rollout)
                    wait_until(lambda v=version: v in served_versions(server), 120, f"version {version}")
                    rollout.served_after_s = round(time.monotonic() - started - rollout.copied_at_s, 1)
                    log(f"version {version} served {rollout.served_after_s} s after it was copied in")
                    next_rollout += args.rollout_every
                runner.join(timeout=TICK_S)
            server.check_alive("after the soak")
    measured = outcome["summary"]["measured"]
    result.requests, result.errors = measured["requests"], measured["errors"]
    result.errors_by_kind = measured["error_kinds"]
    result.p50_ms, result.p99_ms = measured["latency_ms"]["p50"], measured["latency_ms"]["p99"]
    return result


def render(result: SoakResult) -> str:
    growth = result.rss_growth
    rss = [mb for _, mb in result.rss_mb]
    lines = [
        f"Soak: natality over REST, {result.rate:g} req/s (= {result.rate / result.max_qps:.0%} of "
        f"{result.max_qps:g} req/s max at the SLO, {result.max_qps_source}) for {result.minutes:g} min, "
        f"a new version every {result.first_period_s:g} s.",
        "",
        "| requests | errors | p50 ms | p99 ms | versions rolled in | RSS after 1st period -> end (MB) | RSS growth |",
        "|---:|---:|---:|---:|---:|---|---:|",
        f"| {result.requests:,} | {result.errors} | {_ms(result.p50_ms)} | {_ms(result.p99_ms)} | "
        f"{len(result.rollouts)} | "
        f"{_after_first(result)} (peak {max(rss):.0f}) | "
        f"{'n/a' if growth is None else f'{growth:+.1%}'} |",
        "",
        "Each version served (AVAILABLE) this many seconds after it was copied in: "
        + ", ".join(f"v{r.version} {r.served_after_s} s" for r in result.rollouts),
    ]
    if result.errors:
        lines.append(f"Errors by kind: {result.errors_by_kind}")
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _after_first(result: SoakResult) -> str:
    warm = [mb for t, mb in result.rss_mb if t >= result.first_period_s]
    return f"{warm[0]:.0f} -> {warm[-1]:.0f}" if warm else "n/a"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rollout-every", type=float, default=60.0, help="seconds between new versions")
    parser.add_argument("--fraction", type=float, default=0.7, help="of the max QPS at the SLO")
    parser.add_argument("--max-qps", type=float, help="skip the SLO search and take this")
    parser.add_argument("--slo-ms", type=float, default=25.0)
    parser.add_argument("--out", type=Path, default=RUNS / "soak")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> SoakResult:
    args = parse_args(argv)
    result = soak(args)
    text = render(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text(text)
    (args.out / "soak.json").write_text(json.dumps(
        {**asdict(result), "rss_growth": result.rss_growth}, indent=1))
    print(text)
    return result


if __name__ == "__main__":
    main()
