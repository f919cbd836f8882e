"""Smoke test of ``make bench`` (loadtests/bench.py): wrk output parsing, the report, the
process-group cleanup, and one tiny real run against the no-op and naive servers.

No timing is asserted: only that every piece runs and the outputs agree with each other.
wrk must be installed (``apt-get install -y wrk``); without it the run test fails, never
skips, so a missing load generator cannot pass unnoticed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from loadtests import bench

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
    assert bench.duration_ms("812.00us") == pytest.approx(0.812)
    assert bench.duration_ms("5.81ms") == pytest.approx(5.81)
    assert bench.duration_ms("1.20s") == pytest.approx(1200)
    assert bench.duration_ms("2.00m") == pytest.approx(120_000)
    with pytest.raises(ValueError):
        bench.duration_ms("5.81")


def test_parse_clean_report():
    result = bench.parse_wrk_output(CLEAN)
    assert result.requests == 157510
    assert result.duration_s == pytest.approx(15.02)
    assert result.qps == pytest.approx(10486.68)
    assert result.latency_ms == pytest.approx(
        {"p50": 0.812, "p75": 7.73, "p90": 8.81, "p99": 1020.0, "mean": 0.8125, "max": 1200.0})
    assert result.errors == 0 and not result.exact
    assert result.qps * result.duration_s == pytest.approx(result.requests, rel=0.01)


def test_exact_line_replaces_rounded_latencies():
    result = bench.parse_wrk_output(EXACT)
    assert result.exact
    assert result.latency_ms["p50"] == pytest.approx(0.811)
    assert result.latency_ms["p99"] == pytest.approx(1021.999)
    assert result.duration_s == pytest.approx(15.020114)


def test_exact_line_must_agree_with_the_text():
    with pytest.raises(ValueError, match="disagree"):
        bench.parse_wrk_output(EXACT.replace('"requests": 157510', '"requests": 1'))


def test_incomplete_report_is_refused():
    without_latency = re.sub(r"^\s+(50|75|90|99)%.*\n", "", CLEAN, flags=re.MULTILINE)
    assert "Requests/sec" in without_latency and "99%" not in without_latency
    with pytest.raises(ValueError, match="latency distribution"):
        bench.parse_wrk_output(without_latency)
    with pytest.raises(ValueError):
        bench.parse_wrk_output("")


def _report(noop_text: str, naive_text: str, gateway_text: str) -> dict:
    result = {"raw": {"best_rows_per_s": 2.5e6, "best_batch_size": 512, "by_batch": [
        {"batch_size": 512, "calls": 10, "seconds": 0.002, "ms_per_call": 0.2, "rows_per_s": 2.5e6}]},
              "setups": {name: bench.parse_wrk_output(text).to_json() for name, text in
                         (("noop", noop_text), ("naive", naive_text), ("gateway", gateway_text))}}
    result["ratios"] = bench.ratios(result)
    result["goal"] = bench.goal(result)
    return result


def test_errors_are_loud_and_void_the_goal():
    result = _report(CLEAN, CLEAN, FAILING)
    gateway = result["setups"]["gateway"]
    assert gateway["errors"] == 59990 + 3 + 7
    assert gateway["non_2xx"] == 59990 and gateway["socket_errors"]["timeout"] == 7
    assert result["ratios"]["invalid_because_of_errors"] == ["gateway"]
    assert result["goal"]["met"] is False  # 2.86x faster, but it answered errors
    table = bench.render_model("natality", result, 64)
    assert "**⚠ 60000 (non-2xx 59990, read 3, timeout 7)**" in table
    assert "WARNING: gateway had errors" in table
    assert "NOT MET" in table


def test_table_matches_the_numbers():
    result = _report(CLEAN, FAILING.replace("  Socket errors: connect 0, read 3, write 0, timeout 7\n", "")
                     .replace("  Non-2xx or 3xx responses: 59990\n", ""), EXACT)
    table = bench.render_model("natality", result, 64)
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip()[:3] for row in rows] == ["(a)", "(b)", "(c)", "(d)"]
    gateway = rows[3].split("|")
    assert gateway[2].strip() == "10.5K" and gateway[3].strip() == "0.81"
    assert gateway[4].strip() == "1022.0" and gateway[5].strip() == "0"
    ratio = result["ratios"]["gateway_vs_naive_qps"]
    assert ratio == pytest.approx(10486.68 / 30000.0)
    assert f"d/c QPS **{ratio:.2f}×**" in table
    json.dumps(result)  # the report is JSON-serialisable as written


def test_a_failed_server_is_reported_not_hidden():
    result = {"setups": {"noop": bench.parse_wrk_output(CLEAN).to_json(),
                         "gateway": {"error": "gateway exited with 1 before it was ready"}}}
    result["ratios"] = bench.ratios(result)
    table = bench.render_model("natality", result, 64)
    assert "| (d) gateway | **FAILED** |" in table
    assert "gateway_vs_noop_qps" not in result["ratios"]


def test_servers_are_killed_with_their_process_group(tmp_path):
    """A server and its children die when the benchmark fails while it runs."""
    pid_file = tmp_path / "child.pid"
    argv = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    with pytest.raises(RuntimeError, match="boom"):
        with bench.running("sleeper", argv, 0, tmp_path / "sleeper.log") as server:
            bench_poll(lambda: pid_file.exists() and pid_file.read_text().strip())
            child = int(pid_file.read_text())
            raise RuntimeError("boom")
    assert server.proc.poll() is not None
    bench_poll(lambda: not _alive(child))


def bench_poll(predicate, timeout: float = 10.0):
    from tests.conftest import poll

    return poll(predicate, timeout=timeout, what="process state")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.e2e
def test_tiny_real_run(tmp_path, models_dir):
    """raw + no-op + naive on natality for one second each: the whole pipeline, end to end."""
    assert shutil.which("wrk"), (
        "wrk is not installed; `make bench` installs it, or run: apt-get install -y wrk")
    out = tmp_path / "results"
    report = bench.main(["--duration", "1", "--warmup", "0", "--connections", "8",
                         "--models", "natality", "--setups", "raw,noop,naive",
                         "--out", str(out), "--models-dir", str(models_dir)])
    saved = json.loads((out / "latest.json").read_text())
    assert saved == json.loads(json.dumps(report))
    natality = saved["models"]["natality"]
    assert [r["batch_size"] for r in natality["raw"]["by_batch"]] == [1, 8, 32, 128, 512]
    assert natality["raw"]["best_rows_per_s"] == max(r["rows_per_s"] for r in natality["raw"]["by_batch"])
    for setup in ("noop", "naive"):
        run = natality["setups"][setup]
        assert "error" not in run, run
        assert run["errors"] == 0, run
        assert run["exact"] and run["requests"] > 0
        assert run["qps"] * run["duration_s"] == pytest.approx(run["requests"], rel=0.05)
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p75"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert run["loadgen_cpu"] is None or run["loadgen_cpu"] >= 0
    assert set(natality["ratios"]) == set()  # no gateway run: no ratio to claim
    markdown = (out / "latest.md").read_text()
    assert "| setup | QPS | p50 ms | p99 ms | errors |" in markdown
    assert "(b) no-op FastAPI (HTTP ceiling)" in markdown and "(c) naive FastAPI server" in markdown
    assert (out / "logs" / "natality-naive.log").is_file()


def test_help_imports_no_tensorflow():
    code = ("import sys; from loadtests import bench; "
            "assert 'tensorflow' not in sys.modules, 'bench imports TensorFlow'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=bench.REPO,
                   env={**os.environ, "PYTHONPATH": str(bench.REPO)})
