"""Locust's distributed mode against a real gateway: a master and its workers as real
processes on loopback ports.

Checked: each of two workers sends about half of the requests; the master's merged samples
are every worker's, every request the gateway answered, and what Locust's own merged
statistics count; workers started the way the locust-workers Deployment starts them serve
a master, and one that joins mid-run gets its share of the rate; the SLO search runs
distributed. Counts only: no timing is asserted.
"""
from __future__ import annotations

import contextlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loadtests.locust_scenarios.samples import Sample, read_csv
from loadtests.locust_scenarios.scenario import Scenario, run
from loadtests.locust_scenarios.schedules import build
from loadtests.locust_scenarios.slo import verdict
from loadtests.locust_scenarios.sweep import Target
from loadtests.locust_scenarios.workers import Workers
from loadtests.support.probes import scrape, settle
from loadtests.support.processes import Job, free_port, wait_until
from tests.loadtests.locust_scenarios import test_locust_scenarios as single

MODEL = "natality"
NOT_SENT = "not sent before the run ended"
"""A leaving worker's arrivals that were due but not sent yet (it was behind)."""


def _answered(target: Target) -> float:
    """Predicts the gateway has answered so far."""
    return scrape(target.servers[0], MODEL).predict_ok


def _assert_merged(summary: dict[str, Any], out: Path, answered: float) -> list[Sample]:
    """The merged samples are each worker's; those sent are what the gateway answered; Locust's
    merged statistics count them all."""
    samples = read_csv(out / "samples.csv")
    sent = [s for s in samples if s.error != NOT_SENT]
    assert sent and all(s.ok for s in sent), {s.error for s in sent if not s.ok}
    counts = [g["requests"] for g in summary["generators"]]
    assert [g["received"] for g in summary["generators"]] == counts
    assert sum(counts) == len(samples) and len(sent) == answered
    locust = single.locust_counts(out / "locust_stats.csv")
    for index, phase in enumerate(summary["phases"]):
        mine = [s for s in samples if s.phase == index]
        assert locust[f"{MODEL}:predict [{phase['phase']}]"] == (
            len(mine), sum(not s.ok for s in mine))
    return samples


@pytest.mark.slow
def test_two_workers_split_the_rate_and_the_master_merges_their_samples(gateway, tmp_path):
    before = _answered(gateway)
    scenario = Scenario("rest", gateway.rest, rate=60, seconds=2, warmup=0.5, workers=Workers(2))
    summary = run(scenario, tmp_path)
    (after,) = settle(gateway.servers[:1], MODEL)
    samples = _assert_merged(summary, tmp_path, after.predict_ok - before)
    assert all(s.ok for s in samples)

    generators = summary["generators"]
    assert sorted(g["worker"] for g in generators) == [0, 1]
    assert len({g["pid"] for g in generators} | {summary["master"]["pid"]}) == 3
    for generator in generators:
        assert 0.25 * len(samples) <= generator["requests"] <= 0.75 * len(samples), generators
        assert [workers for _, workers in generator["shares"]] == [2]
    assert [workers for _, workers in summary["splits"]] == [2]
    pooled, start = build("steady", 60, 2, 0.5).measured()
    single.assert_summarizes(summary["measured"], [s for s in samples if s.intended_s >= start],
                             samples, start, pooled.seconds)
    for index in range(2):
        assert "Traceback" not in (tmp_path / f"worker-{index}.log").read_text()


@pytest.mark.slow
def test_workers_started_elsewhere_join_and_leave_and_the_rate_is_split_again(gateway, tmp_path):
    """``python -m loadtests.locust_scenarios.run worker`` (the locust-workers Deployment's
    command) serves a master that expects one worker. A second one, started once the first is
    sending, joins the running schedule; then the first leaves as a scaled-down pod does
    (SIGTERM to the pod's main process): its requests in flight are answered, its samples reach
    the master and the second takes the whole rate. Arrivals due after it stopped sending are
    not samples; those due before it and not sent yet (it was behind) are failures."""
    port = free_port()
    scenario = Scenario("rest", gateway.rest, rate=20, seconds=10, warmup=0.5,
                        workers=Workers(1, port=port))
    command = [sys.executable, "-m", "loadtests.locust_scenarios.run", "worker", "--master-host", "127.0.0.1",
               "--master-port", str(port)]
    log = tmp_path / "run" / "locust.log"
    before = _answered(gateway)
    with ThreadPoolExecutor(1) as pool, contextlib.ExitStack() as workers:
        first = workers.enter_context(Job("worker 0", command, tmp_path / "serve-0.log"))
        master = pool.submit(run, scenario, tmp_path / "run")
        wait_until(lambda: master.done() or _answered(gateway) > before, 120,
                   "the first worker's requests")
        workers.enter_context(Job("worker 1", command, tmp_path / "serve-1.log"))
        wait_until(lambda: master.done() or "split over 2 worker(s)" in log.read_text(), 120,
                   "the second worker to join")
        first.proc.terminate()  # the serve loop only, as the kubelet signals a pod's PID 1
        assert first.proc.wait(timeout=60) == 0
        summary = master.result(timeout=180)
    (after,) = settle(gateway.servers[:1], MODEL)
    _assert_merged(summary, tmp_path / "run", after.predict_ok - before)

    left, joined = sorted(summary["generators"], key=lambda g: g["worker"])
    assert left["joined_s"] is None and joined["joined_s"] > 0
    assert [workers for _, workers in left["shares"]] == [1, 2]
    assert [workers for _, workers in joined["shares"]] == [2, 1]
    assert [workers for _, workers in summary["splits"]] == [1, 2, 1]
    assert left["requests"] > 0 and joined["requests"] > 0


@pytest.mark.slow
def test_slo_search_runs_distributed(gateway, tmp_path):
    single.cli("slo", "--host", gateway.rest, "--workers", "2", "--start-rate", "30",
               "--slo-ms", "5000", "--max-steps", "1", "--seconds", "1", "--warmup", "0.5",
               out=tmp_path)
    result = json.loads((tmp_path / "slo.json").read_text())
    (step,) = result["steps"]
    assert step["rate"] == 30 and step["passed"] == (verdict(step, 5000) is None)
    assert result["max_qps"] == (30 if step["passed"] else None)
    summary = json.loads((tmp_path / "1-30" / "summary.json").read_text())
    assert {k: step[k] for k in summary["measured"]} == summary["measured"]
    assert [g["worker"] for g in summary["generators"]] == [0, 1]
