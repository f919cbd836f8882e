"""Smoke test of ``make bench`` (loadtests/benchmarks/bench.py and its wrk runner, results and report):
wrk output parsing, the report, the process-group cleanup, reading the gateway's /metrics
counters, one tiny real run against the no-op and naive servers and one against an upstream
with a gateway in front of it.

No timing is asserted: only that every piece runs and the outputs agree with each other.
The real runs need wrk (``apt-get install -y wrk``): without it they skip, and under
``CI=true`` they fail, so a missing load generator cannot pass unnoticed in CI.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from loadtests.benchmarks import bench, bench_wrk
from loadtests.benchmarks.bench_report import render_model, render_upstream
from loadtests.benchmarks.bench_results import (
    BatchTiming,
    Failure,
    ModelResult,
    Ratios,
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
from loadtests.benchmarks.bench_wrk import Latency
from loadtests.support import probes
from loadtests.support.processes import Job, Pinning
from tests.conftest import require_tool, wait_until

WRK_INSTALL = "apt-get install -y wrk"

# wrk 4.1 with our Lua script: latencies in us/ms/s, SI-suffixed counts, no errors.
CLEAN = """\
Running 15s test @ http://127.0.0.1:40123/v1/models/natality:predict
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us    2.88ms    1.20s    78.19%
    Req/Sec    10.50k     1.63k   13.45k    73.33%
  Latency Distribution
     50%  812.00us
     75%    7.73ms
     90%    8.81ms
     99%    1.02s
  157510 requests in 15.02s, 22.10MB read
Requests/sec:  10486.68
Transfer/sec:      1.47MB
"""

# The same run with the script's exact line appended.
EXACT = CLEAN + (
    'BENCH_JSON {"requests": 157510, "duration_us": 15020114, "bytes": 23173012, '
    '"errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}, '
    '"latency_us": {"mean": 6098.8, "max": 1200341, "p50": 811, "p75": 7730, "p90": 8808, '
    '"p99": 1021999, "p99.9": 1100000}}\n')

# A server answering errors: wrk prints these two lines only when their counts are non-zero.
FAILING = """\
Running 2s test @ http://127.0.0.1:40124/v1/models/natality:predict
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   5.00ms   90.00%
    Req/Sec    30.00k     1.00k   32.00k    70.00%
  Latency Distribution
     50%    1.00ms
     75%    1.20ms
     90%    1.50ms
     99%    2.50ms
  60000 requests in 2.00s, 9.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 7
  Non-2xx or 3xx responses: 59990
Requests/sec:  30000.00
Transfer/sec:      4.50MB
"""


def test_wrk_duration_units():
    assert bench_wrk.duration_ms("812.00us") == pytest.approx(0.812)
    assert bench_wrk.duration_ms("5.81ms") == pytest.approx(5.81)
    assert bench_wrk.duration_ms("1.20s") == pytest.approx(1200)
    assert bench_wrk.duration_ms("2.00m") == pytest.approx(120_000)
    with pytest.raises(ValueError):
        bench_wrk.duration_ms("5.81")


def test_parse_clean_report():
    result = bench_wrk.parse_output(CLEAN)
    assert result.requests == 157510
    assert result.duration_s == pytest.approx(15.02)
    assert result.qps == pytest.approx(10486.68)
    assert result.latency_ms == Latency(
        p50=pytest.approx(0.812), p75=pytest.approx(7.73), p90=pytest.approx(8.81),
        p99=pytest.approx(1020.0), mean=pytest.approx(0.8125), max=pytest.approx(1200.0))
    assert result.errors == 0 and not result.exact
    assert result.qps * result.duration_s == pytest.approx(result.requests, rel=0.01)


def test_exact_line_replaces_rounded_latencies():
    result = bench_wrk.parse_output(EXACT)
    assert result.exact
    assert result.latency_ms.p50 == pytest.approx(0.811)
    assert result.latency_ms.p99 == pytest.approx(1021.999)
    assert result.latency_ms.p999 == pytest.approx(1100.0)
    assert result.duration_s == pytest.approx(15.020114)


def test_exact_line_must_agree_with_the_text():
    with pytest.raises(ValueError, match="disagree"):
        bench_wrk.parse_output(EXACT.replace('"requests": 157510', '"requests": 1'))


def test_incomplete_report_is_refused():
    without_latency = re.sub(r"^\s+(50|75|90|99)%.*\n", "", CLEAN, flags=re.MULTILINE)
    assert "Requests/sec" in without_latency and "99%" not in without_latency
    with pytest.raises(ValueError, match="latency distribution"):
        bench_wrk.parse_output(without_latency)
    with pytest.raises(ValueError):
        bench_wrk.parse_output("")


def _report(noop_text: str, naive_text: str, gateway_text: str) -> ModelResult:
    raw = RawResult("2.21.0", 1.0, (BatchTiming(512, 10, 0.002, 0.2, 2.5e6),))
    setups = {name: ServerRun(bench_wrk.parse_output(text)) for name, text in
              (("noop", noop_text), ("naive", naive_text), ("gateway", gateway_text))}
    return ModelResult(setups, raw, goal=goal(ratios(setups, raw)))


def test_errors_are_loud_and_void_the_goal():
    result = _report(CLEAN, CLEAN, FAILING)
    gateway = result.setups["gateway"].wrk
    assert gateway.errors == 59990 + 3 + 7
    assert gateway.non_2xx == 59990 and gateway.socket_errors.timeout == 7
    assert result.ratios.invalid_because_of_errors == ("gateway",)
    assert result.goal.met is False  # 2.86x faster, but it answered errors
    table = render_model("natality", result, 64)
    assert "**⚠ 60000 (non-2xx 59990, read 3, timeout 7)**" in table
    assert "WARNING: gateway had errors" in table
    assert "NOT MET" in table


def test_table_matches_the_numbers():
    result = _report(CLEAN, FAILING.replace("  Socket errors: connect 0, read 3, write 0, timeout 7\n", "")
                     .replace("  Non-2xx or 3xx responses: 59990\n", ""), EXACT)
    table = render_model("natality", result, 64)
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip()[:3] for row in rows] == ["(a)", "(b)", "(c)", "(d)"]
    gateway = rows[3].split("|")
    assert gateway[2].strip() == "10.5K" and gateway[3].strip() == "0.81"
    assert gateway[4].strip() == "1022.0" and gateway[5].strip() == "0"
    ratio = result.ratios.gateway_vs_naive_qps
    assert ratio == pytest.approx(10486.68 / 30000.0)
    assert f"d/c QPS **{ratio:.2f}×**" in table
    written = to_json(result)
    json.dumps(written)  # the report is JSON-serialisable as written
    assert written["setups"]["gateway"]["qps"] == pytest.approx(10486.68)  # wrk's figures in place
    assert written["ratios"]["gateway_vs_naive_qps"] == ratio


def test_ceiling_goal_and_cpu_per_request_are_judged_and_shown():
    slow = bench_wrk.parse_output(CLEAN)  # 10486.68 requests/s
    fast = bench_wrk.parse_output(FAILING.replace(
        "  Socket errors: connect 0, read 3, write 0, timeout 7\n", "").replace(
        "  Non-2xx or 3xx responses: 59990\n", ""))  # 30000 requests/s, no errors
    below = {"noop": ServerRun(fast, server_cpu=1.0), "gateway": ServerRun(slow, server_cpu=0.9)}
    measured = ratios(below, None)
    assert measured.gateway_vs_noop_qps == pytest.approx(10486.68 / 30000)
    cpu = (0.9 / 10486.68) / (1.0 / 30000)
    assert measured.gateway_vs_noop_cpu_per_request == pytest.approx(cpu)
    table = render_model("natality", ModelResult(below, ceiling_goal=ceiling_goal(measured)), 64)
    assert f"d/b server CPU per request {cpu:.2f}×" in table
    assert ("Goal (QPS >= 75% of the no-op FastAPI server's, no errors): **NOT MET** "
            "(QPS ratio 0.35×).") in table
    above = {"noop": ServerRun(slow), "gateway": ServerRun(fast)}  # no CPU figures: no CPU ratio
    assert ceiling_goal(ratios(above, None)).met is True
    assert ratios(above, None).gateway_vs_noop_cpu_per_request is None
    assert ceiling_goal(ratios({"noop": below["noop"]}, None)).met is False


def test_a_failed_server_is_reported_not_hidden():
    result = ModelResult({"noop": ServerRun(bench_wrk.parse_output(CLEAN)),
                          "gateway": Failure("gateway exited with 1 before it was ready")})
    table = render_model("natality", result, 64)
    assert "| (d) gateway | **FAILED** |" in table
    assert result.ratios.gateway_vs_noop_qps is None
    assert to_json(result)["setups"]["gateway"] == {"error": "gateway exited with 1 before it was ready"}


def _exposition(predicts: int, batches: tuple[int, ...] = (), waits: tuple[float, ...] = (),
                in_flight: int = 0) -> str:
    """What the gateway's /metrics says, made by the gateway's own metrics class."""
    from serving.metrics import Metrics

    metrics = Metrics()
    if predicts:  # a counter with no increment yet is not exported
        metrics.requests.labels("natality", "predict", "OK", "tfserving").inc(predicts)
    metrics.requests.labels("natality", "predict", "INVALID_ARGUMENT", "tfserving").inc(3)
    metrics.requests.labels("natality", "classify", "OK", "tfserving").inc(5)
    metrics.requests.labels("other", "predict", "OK", "tfserving").inc(7)
    per_model = metrics.for_model("natality")
    for rows in batches:
        per_model.batch(rows, 0.001)
    for seconds in waits:
        per_model.queue_wait(seconds)
    metrics.in_flight.inc(in_flight)
    return metrics.exposition().decode()


def test_counters_read_the_gateway_metrics():
    counters = probes.Counters.parse(_exposition(19264, (32, 8), (0.004, 0.002), 2), "natality")
    assert counters == probes.Counters(predict_ok=19264, batches=2, batch_rows=40, queue_waits=2,
                                      queue_wait_seconds=pytest.approx(0.006), in_flight=2)
    # Before the first OK predict the counter is not exported: that is zero, not an error.
    assert probes.Counters.parse(_exposition(0), "natality").predict_ok == 0
    assert probes.Counters.parse(_exposition(5), "other").predict_ok == 7
    with pytest.raises(ValueError, match="not the gateway"):
        probes.Counters.parse("# nothing here\nup 1\n", "natality")


def _upstream_run(setup: str, connections: int, text: str, predicts: int, front: int) -> UpstreamRun:
    return UpstreamRun(setup, connections, ThroughRun(
        bench_wrk.parse_output(text), warmup_seconds=0,
        server_cpu={"upstream": 0.5, "front": 0.25 if front else 0.0},
        upstream_predicts=predicts, front_requests=front,
        front_mean_batch_rows=front / predicts if front else None,
        front_mean_queue_wait_ms=1.5 if front else None))


def _upstream_result(runs: list[UpstreamRun], **extra) -> UpstreamResult:
    pinning = Pinning(("taskset", "-c", "0"), ("taskset", "-c", "1"), "pinned")
    return UpstreamResult(64, bench.upstream_note(pinning), tuple(runs), **extra)


# (e) at 64 and 1 connection: 30000 req/s, p50 1.00 ms, p99 2.50 ms (FAILING without errors).
DIRECT = (FAILING.replace("  Socket errors: connect 0, read 3, write 0, timeout 7\n", "")
          .replace("  Non-2xx or 3xx responses: 59990\n", ""))


def test_upstream_table_matches_the_numbers():
    result = _upstream_result([
        _upstream_run("direct", 64, DIRECT, 60010, 0),
        _upstream_run("gateway", 64, EXACT, 4925, 157574),
        _upstream_run("direct", 1, DIRECT, 60000, 0),
        _upstream_run("gateway", 1, EXACT, 157510, 157510),
    ])
    r = result.ratios
    assert r.gateway_vs_direct_qps == pytest.approx(10486.68 / 30000.0)
    assert r.rows_per_upstream_predict == pytest.approx(157574 / 4925)
    assert r.added_p50_ms_at_1 == pytest.approx(0.811 - 1.0)
    assert r.added_p99_ms_at_1 == pytest.approx(1021.999 - 2.5)
    assert r.invalid_because_of_errors == ()
    table = render_model("natality", ModelResult(upstream=result), 64)
    assert "(a)" not in table  # --setups upstream alone: no empty (a)-(d) table
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| (")]
    assert [(row[0].strip()[:3], row[1].strip()) for row in rows] == [
        ("(e)", "64"), ("(f)", "64"), ("(e)", "1"), ("(f)", "1")]
    assert [cell.strip() for cell in rows[1][2:]] == [
        "10.5K", "0.81", "1022.0", "0", "4925 / 157574 (32.0 rows/call)"]
    assert rows[0][6].strip() == "60010 / 60010 (1.0 rows/call)"
    assert f"f/e QPS at 64 connections **{r.gateway_vs_direct_qps:.2f}×**" in table
    assert "the gateway adds **-0.19 ms** p50 at 1 connection (0.81 vs 1.00 ms" in table
    assert "merged 157574 requests into 4925 upstream Predicts (32.0 rows each)" in table
    assert "share core 1" in table and "understates the gateway's gain" in table
    written = to_json(result)
    json.dumps(written)
    assert written["runs"][1]["setup"] == "gateway" and written["runs"][1]["qps"] == pytest.approx(10486.68)


def test_upstream_errors_and_failures_are_loud():
    result = _upstream_result([
        _upstream_run("direct", 64, DIRECT, 60000, 0),
        _upstream_run("gateway", 64, FAILING, 100, 60000),
        UpstreamRun("direct", 1, Failure("wrk failed (1): boom")),
    ], error="natality front died during natality upstream direct -c1; log tail:\n...")
    r = result.ratios
    assert r.invalid_because_of_errors == ("(f) gateway → upstream at 64",)
    assert r.added_p50_ms_at_1 is None
    table = render_upstream("natality", result)
    assert "**WARNING: (f) gateway → upstream at 64 connections had errors" in table
    assert "| (e) upstream direct, one row per call | 1 | **FAILED** | – | – | wrk failed (1): boom |" in table
    assert "**FAILED**: natality front died during natality upstream direct -c1; log tail:" in table
    assert to_json(result)["runs"][2] == {"setup": "direct", "connections": 1,
                                          "error": "wrk failed (1): boom"}
    nothing = render_upstream("natality", _upstream_result([], error="upstream not ready"))
    assert "**FAILED**: upstream not ready" in nothing and "| setup |" not in nothing


def test_upstream_setup_is_a_setup_for_natality_only():
    assert "upstream" in bench.parse_args([]).setups
    assert bench.parse_args(["--setups", "upstream"]).setups == ("upstream",)
    assert bench.WORKLOADS["natality"].upstream and not bench.WORKLOADS["image_classifier"].upstream
    up, front = bench.upstream_argvs("natality", bench.REPO / "models" / "natality", 1, 2, 3,
                                     Pinning((), (), "not pinned"))
    assert "--port=1" in up and "--rest_api_port=2" in up and "--enable_batching" not in up
    assert "--upstream=127.0.0.1:1" in front and "--rest_api_port=3" in front
    assert "--enable_batching" in front and "--port=0" in front


def test_servers_are_killed_with_their_process_group(tmp_path):
    """A server and its children die when the benchmark fails while it runs."""
    pid_file = tmp_path / "child.pid"
    argv = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    with pytest.raises(RuntimeError, match="boom"):
        with Job("sleeper", argv, tmp_path / "sleeper.log") as job:
            wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10,
                       "the child's pid")
            child = int(pid_file.read_text())
            raise RuntimeError("boom")
    assert job.proc.poll() is not None
    wait_until(lambda: not _alive(child), 10, "the child to die")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tiny_run(setups: str, out, models_dir) -> tuple[Report, dict]:
    """``make bench`` on natality for one second per server at 8 connections: the report it
    returned, and the JSON it wrote (which must say the same)."""
    require_tool("wrk", install=WRK_INSTALL)
    report = bench.main(["--duration", "1", "--warmup", "0", "--connections", "8",
                         "--models", "natality", "--setups", setups,
                         "--out", str(out), "--models-dir", str(models_dir)])
    saved = json.loads((out / "latest.json").read_text())
    assert saved == json.loads(json.dumps(to_json(report)))
    return report, saved


@pytest.mark.e2e
@pytest.mark.slow
def test_tiny_real_run(tmp_path, models_dir):
    """raw + no-op + naive on natality for one second each: the whole pipeline, end to end."""
    out = tmp_path / "results"
    report, saved = tiny_run("raw,noop,naive", out, models_dir)
    natality = report.models["natality"]
    raw = natality.raw
    assert isinstance(raw, RawResult), raw
    assert [t.batch_size for t in raw.by_batch] == [1, 8, 32, 128, 512]
    assert raw.best_rows_per_s == max(t.rows_per_s for t in raw.by_batch)
    for setup in ("noop", "naive"):
        run = natality.setups[setup]
        assert isinstance(run, ServerRun), run
        wrk = run.wrk
        assert wrk.errors == 0, run
        assert wrk.exact and wrk.requests > 0
        assert wrk.qps * wrk.duration_s == pytest.approx(wrk.requests, rel=0.05)
        lat = wrk.latency_ms
        assert 0 < lat.p50 <= lat.p75 <= lat.p90 <= lat.p99 <= lat.max
        assert wrk.loadgen_cpu is None or wrk.loadgen_cpu >= 0
        assert saved["models"]["natality"]["setups"][setup]["qps"] == wrk.qps  # flat, as before
    assert natality.ratios == Ratios()  # no gateway run: no ratio to claim
    markdown = (out / "latest.md").read_text()
    assert "| setup | QPS | p50 ms | p99 ms | errors |" in markdown
    assert "(b) no-op FastAPI (HTTP ceiling)" in markdown and "(c) naive FastAPI server" in markdown
    assert (out / "logs" / "natality-naive.log").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_tiny_real_upstream_run(tmp_path, models_dir):
    """(e) and (f) for one second each: the front gateway really merges onto the upstream."""
    out = tmp_path / "results"
    report, _ = tiny_run("upstream", out, models_dir)
    natality = report.models["natality"]
    assert natality.raw is None and natality.setups == {}
    upstream = natality.upstream
    assert upstream is not None and upstream.error is None, upstream
    runs = {(r.setup, r.connections): r.outcome for r in upstream.runs}
    assert list(runs) == [("direct", 8), ("gateway", 8), ("direct", 1), ("gateway", 1)]
    for (setup, connections), run in runs.items():
        assert isinstance(run, ThroughRun), run
        assert run.wrk.errors == 0 and run.wrk.exact and run.wrk.requests > 0, run
        # Every request wrk counted was answered; a few more may have been in flight when it stopped.
        clients = run.front_requests if setup == "gateway" else run.upstream_predicts
        assert run.wrk.requests <= clients <= run.wrk.requests + connections, run
        if setup == "direct":
            assert run.front_requests == 0
        else:
            assert 1 <= run.upstream_predicts <= clients
    # One connection: each request waits for the previous one, so nothing can be merged.
    assert runs["gateway", 1].upstream_predicts == runs["gateway", 1].front_requests
    r = upstream.ratios
    assert None not in (r.gateway_vs_direct_qps, r.rows_per_upstream_predict,
                        r.added_p50_ms_at_1, r.added_p99_ms_at_1)
    assert r.invalid_because_of_errors == ()
    markdown = (out / "latest.md").read_text()
    assert "### natality, upstream:" in markdown and "| (f) gateway → upstream | 1 |" in markdown
    for name in ("upstream", "front"):
        assert (out / "logs" / f"natality-{name}.log").is_file()


def test_help_imports_no_tensorflow():
    code = ("import sys; from loadtests.benchmarks import bench; "
            "assert 'tensorflow' not in sys.modules, 'bench imports TensorFlow'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=bench.REPO,
                   env={**os.environ, "PYTHONPATH": str(bench.REPO)})
