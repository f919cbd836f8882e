"""Smoke tests of the Locust scenarios (``make loadtest``, ``python -m loadtests.locust_scenarios.run``).

Each user (REST, gRPC, v2 JSON and binary) and load shape (steady, step ramp, spike) runs for a few seconds
against a real gateway in its own process; the SLO search and the whole local sweep run in
miniature. Checked: the outputs exist, and the summary agrees exactly with the raw samples
and with Locust's own per-phase counts. No timing is asserted.
"""
from __future__ import annotations

import csv
import json
import math
import socket
import urllib.request
from pathlib import Path

import pytest

from loadtests.locust_scenarios import run as loadtests_run
from loadtests.locust_scenarios.samples import read_csv
from loadtests.locust_scenarios.scenario import HTTP_USERS, Scenario, run
from loadtests.locust_scenarios.schedules import build
from loadtests.locust_scenarios.slo import verdict
from loadtests.support.payloads import RowsMix


def locust_counts(stats_csv: Path) -> dict[str, tuple[int, int]]:
    with open(stats_csv, newline="") as src:
        return {row["Name"]: (int(row["Request Count"]), int(row["Failure Count"]))
                for row in csv.DictReader(src)}


@pytest.mark.parametrize("user, schedule, rows", [
    ("rest", "steady", "1"),
    ("rest", "ramp", "1:0.7,4:0.3"),
    ("rest", "spike", "1"),
    ("grpc", "steady", "1:0.8,3:0.2"),
    ("v2-json", "steady", "1:0.8,3:0.2"),
    ("v2-binary", "steady", "1:0.8,3:0.2"),
])
@pytest.mark.slow
def test_scenario_summary_agrees_with_its_raw_samples(gateway, tmp_path, user, schedule, rows):
    host = gateway.rest if user in HTTP_USERS else gateway.grpc
    scenario = Scenario(user, host, rows=rows, schedule=schedule, rate=40, seconds=1.5,
                        warmup=0.5, ramp_steps=2)
    v2_before = v2_infers(gateway)
    summary = run(scenario, tmp_path)

    for name in ("summary.json", "samples.csv", "locust_stats.csv", "locust.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    plan = build(schedule, 40, 1.5, 0.5, ramp_steps=2)
    assert [p["phase"] for p in summary["phases"]] == [p.name for p in plan.phases]
    assert summary["scenario"]["rows"] == str(RowsMix.parse(rows))

    samples = read_csv(tmp_path / "samples.csv")
    assert samples and all(s.ok for s in samples), {s.error for s in samples if not s.ok}
    (generator,) = summary["generators"]  # this process, alone with the whole rate
    assert generator["requests"] == generator["received"] == len(samples)
    assert [workers for _, workers in generator["shares"]] == [1]
    assert {s.rows for s in samples} <= set(RowsMix.parse(rows).sizes)
    assert all(0 <= s.lag_ms <= s.latency_ms for s in samples)
    assert [s.intended_s for s in samples] == sorted(s.intended_s for s in samples)
    # the v2 users' requests are v2 infers, and only theirs (the gateway counts by API)
    assert v2_infers(gateway) - v2_before == (len(samples) if user.startswith("v2") else 0)

    counts = locust_counts(tmp_path / "locust_stats.csv")
    for index, (phase, start, reported) in enumerate(zip(plan.phases, plan.starts(),
                                                         summary["phases"], strict=True)):
        mine = [s for s in samples if s.phase == index]
        assert mine, f"no requests in phase {phase.name}"
        assert all(start <= s.intended_s < start + phase.seconds for s in mine)
        assert_summarizes(reported, mine, samples, start, phase.seconds)
        assert counts[f"natality:predict [{phase.name}]"] == (len(mine), 0)
    pooled, start = plan.measured()
    assert_summarizes(summary["measured"], [s for s in samples if s.intended_s >= start],
                       samples, start, pooled.seconds)
    assert summary["measured"]["requests"] == sum(
        n for name, (n, _) in counts.items() if name.startswith("natality:") and "warm-up" not in name)


def v2_infers(gateway) -> float:
    """The gateway's ``tfgw_requests_total{api="v2",method="infer",code="OK"}``."""
    with urllib.request.urlopen(gateway.rest + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("tfgw_requests_total{")
               and 'api="v2"' in line and 'method="infer"' in line and 'code="OK"' in line)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def assert_summarizes(reported: dict, due: list, everyone: list, start: float, seconds: float) -> None:
    """The summary's numbers, recomputed here from the raw samples by other means."""
    ok = [s for s in due if s.ok]
    answered = [s for s in everyone if s.ok and start <= s.intended_s + s.latency_ms / 1e3 < start + seconds]
    assert (reported["requests"], reported["ok"], reported["errors"]) == (
        len(due), len(ok), len(due) - len(ok))
    assert reported["offered_rate"] == pytest.approx(len(due) / seconds)
    assert reported["achieved_rate"] == pytest.approx(len(answered) / seconds)
    latencies = [s.latency_ms for s in ok]
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)):
        assert reported["latency_ms"][name] == pytest.approx(_nearest_rank(latencies, q)), name
    assert reported["latency_ms"]["max"] == pytest.approx(max(latencies))
    assert reported["service_ms"]["p99"] == pytest.approx(
        _nearest_rank([s.latency_ms - s.lag_ms for s in ok], 99))
    assert 0 < reported["generator_cpu"] < 2


@pytest.mark.slow
def test_a_failing_server_shows_as_errors_not_as_missing_requests(tmp_path):
    """Nothing listens on the port: every request due is a sample, and each one failed."""
    from loadtests.support.processes import free_port

    summary = run(Scenario("rest", f"http://127.0.0.1:{free_port()}", rate=30, seconds=1,
                           warmup=0, timeout=2), tmp_path)
    samples = read_csv(tmp_path / "samples.csv")
    assert samples and not any(s.ok for s in samples)
    step = summary["measured"]
    assert step["errors"] == step["requests"] == len(samples) and step["achieved_rate"] == 0
    assert verdict(step, 1000).startswith("achieved 0/s")
    assert locust_counts(tmp_path / "locust_stats.csv")["natality:predict [steady]"] == (
        len(samples), len(samples))


@pytest.mark.slow
def test_requests_a_hung_server_never_answers_are_failures_counted_once(tmp_path):
    """A server that accepts connections and never answers (an injected fault): requests
    over the in-flight cap fail at once, those still waiting when the drain ends fail then,
    and Locust's counts equal the samples (none reported twice)."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(1024)
        host = f"http://127.0.0.1:{hung.getsockname()[1]}"
        summary = run(Scenario("rest", host, rate=40, seconds=1, warmup=0, drain=0.5,
                               timeout=30, max_in_flight=5), tmp_path)
    samples = read_csv(tmp_path / "samples.csv")
    kinds = {s.error for s in samples}
    assert not any(s.ok for s in samples)
    assert kinds == {"in-flight cap", "no answer before the run ended"}, kinds
    assert sum(s.error == "no answer before the run ended" for s in samples) == 5
    assert summary["measured"]["errors"] == len(samples)
    assert locust_counts(tmp_path / "locust_stats.csv")["natality:predict [steady]"] == (
        len(samples), len(samples))
    assert "Traceback" not in (tmp_path / "locust.out").read_text()


def cli(*args: str, out: Path) -> None:
    """``python -m loadtests.locust_scenarios.run ARGS --out OUT``: its parsing and its command,
    in this process (what it starts runs in processes of its own either way)."""
    parsed = loadtests_run.parse_args([*args, "--out", str(out)])
    parsed.func(parsed)


@pytest.mark.parametrize("user", ["rest", "v2-binary"])
@pytest.mark.slow
def test_slo_search_steps_are_the_runs_it_made(gateway, tmp_path, user):
    v2_before = v2_infers(gateway)
    cli("slo", "--user", user, "--host", gateway.rest, "--start-rate", "30", "--slo-ms", "5000",
         "--max-steps", "2", "--seconds", "1", "--warmup", "0.5", out=tmp_path)
    result = json.loads((tmp_path / "slo.json").read_text())
    assert [s["rate"] for s in result["steps"]] == [30, 45]  # passed at 30: up by 1.5x
    for index, step in enumerate(result["steps"], 1):
        run_summary = json.loads((tmp_path / f"{index}-{step['rate']}" / "summary.json").read_text())
        assert {k: step[k] for k in run_summary["measured"]} == run_summary["measured"]
        assert step["passed"] == (verdict(step, 5000) is None)
    assert result["max_qps"] == max(s["rate"] for s in result["steps"] if s["passed"])
    sent = sum(len(read_csv(tmp_path / f"{index}-{step['rate']}" / "samples.csv"))
               for index, step in enumerate(result["steps"], 1))
    assert v2_infers(gateway) - v2_before == (sent if user == "v2-binary" else 0)


@pytest.mark.slow
def test_local_sweep_writes_the_table_and_the_plot(tmp_path):
    cli("local", "--batch-sizes", "32", "--timeouts-ms", "2", "--seconds", "1",
         "--warmup", "0.5", "--max-steps", "1", "--start-rate", "40", out=tmp_path)
    results = json.loads((tmp_path / "loadtest.json").read_text())
    markdown = (tmp_path / "loadtest.md").read_text()
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![batching trade-off](sweep.png)" in markdown
    names = [r["setting"]["name"] for r in results["sweep"]]
    assert names == ["batching off", "batch 32, 2 ms", "naive server"]
    # one start per server: the best setting serves gRPC and the shapes too, and batching
    # off's server is the upstream behind the front
    assert sorted(log.stem for log in (tmp_path / "logs").iterdir()) == [
        "batch-32-2-ms-0", "batching-off-0", "gateway-upstream-batch-32-2-ms-0", "naive-server-0"]
    for result in results["sweep"] + results["upstream"] + results["grpc"]:
        (step,) = result["steps"]
        assert result["max_qps"] == (step["rate"] if step["passed"] else None)
        cell = f"{result['max_qps']:,.0f}" if result["max_qps"] else "–"
        assert f"| {result['setting']['name']} | **{cell}** |" in markdown
        assert Path(step["files"]["samples.csv"]).stat().st_size > 0
    assert set(results["shapes"]) == {"spike, batch 32, 2 ms", "spike, batching off",
                                      "ramp, batch 32, 2 ms"}
    for label, summary in results["shapes"].items():
        assert label.capitalize() in markdown
        assert [p["phase"] for p in summary["phases"] if p["measured"]] == (
            ["before", "spike", "after"] if label.startswith("spike") else
            [f"step {i}/4" for i in range(1, 5)])


@pytest.mark.slow
def test_cluster_run_takes_hosts_and_ports_as_arguments(gateway, tmp_path):
    """The run for deployed servers; the module's gateway stands in for the cluster's
    gateway and for TF Serving called directly (it speaks the same API)."""
    cli("cluster", "--host", gateway.rest, "--grpc-host", gateway.grpc, "--tfserving-host",
         gateway.rest, "--start-rate", "30", "--slo-ms", "5000", "--max-steps", "1",
         "--seconds", "1", "--warmup", "0.5", out=tmp_path)
    results = json.loads((tmp_path / "cluster.json").read_text())
    markdown = (tmp_path / "cluster.md").read_text()
    assert [r["setting"]["name"] for r in results["searches"]] == [
        "gateway, REST", "gateway, gRPC", "TF Serving direct, REST"]
    for result in results["searches"]:
        (step,) = result["steps"]
        assert step["passed"] == (verdict(step, 5000) is None)
        assert f"| {result['setting']['name']} | **" in markdown
    assert {label: s["scenario"]["schedule"] for label, s in results["shapes"].items()} == {
        "spike, gateway": "spike", "ramp, gateway": "ramp"}
