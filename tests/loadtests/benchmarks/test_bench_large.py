"""``python -m loadtests.benchmarks.bench_large`` without servers: its bodies in both formats, its
answer check, the gateway's batching parameters, the ratios and the report (the real runs
share ``make bench``'s launcher and wrk runner, which test_bench_smoke.py runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.benchmarks import bench, bench_large
from loadtests.benchmarks.bench_large import LargeReport, Point, Row
from loadtests.benchmarks.bench_results import Failure
from loadtests.benchmarks.bench_wrk import Latency, WrkResult
from serving.examples.natality import expected_weight


def answer(rows: list[dict]) -> list[float]:
    return [float(w) for w in expected_weight(*([row[name] for row in rows] for name in rows[0]))]


def test_both_formats_carry_the_same_rows_and_are_checked_alike():
    row_bodies, columnar_bodies = bench_large.bodies(8, "row"), bench_large.bodies(8, "columnar")
    assert len(row_bodies) == bench_large.BODIES_PER_POINT
    rows = row_bodies[0]["instances"]
    assert len(rows) == 8 and columnar_bodies[0] == bench_large.request_body(rows, "columnar")
    weights = answer(rows)
    assert bench_large.check_any(row_bodies[0], {"predictions": weights}) is None
    assert bench_large.check_any(columnar_bodies[0], {"outputs": weights}) is None
    wrong = [w + 5 for w in weights]
    assert bench_large.check_any(columnar_bodies[0], {"outputs": wrong}).startswith("predicted")
    assert bench_large.check_any(columnar_bodies[0], {"error": "x"}).startswith("not 8 predictions")


def test_the_gateway_gets_make_bench_batching_with_another_max_batch_size(tmp_path: Path):
    config = bench_large.batching_config(512, tmp_path)
    text = config.read_text()
    assert "max_batch_size { value: 512 }" in text
    assert text.replace("512", "128") == bench.BATCHING_CONFIG.read_text()
    argv = bench_large.gateway_argv(["python", "-m", "serving", "--batching_parameters_file=x",
                                     "--enable_batching"], config)
    assert argv == ["python", "-m", "serving", f"--batching_parameters_file={config}",
                    "--enable_batching"]


def run(qps: float, errors: int = 0) -> WrkResult:
    return WrkResult(requests=int(qps * 5), duration_s=5.0, qps=qps,
                     latency_ms=Latency(1.0, 2.0, 3.0, 4.0), non_2xx=errors)


def test_ratios_table_and_json(tmp_path: Path):
    naive = Point("naive", 64, "row", run(100.0), server_cpu=0.8)
    gateway = Point("gateway", 64, "row", run(300.0), server_cpu=0.6)
    row = Row(64, "row", naive, gateway, raw_rows_per_s=64_000.0)
    assert row.gateway_vs_naive == pytest.approx(3.0)
    assert row.naive_vs_gateway_cpu_per_row == pytest.approx(4.0)
    assert row.gateway_vs_raw == pytest.approx(0.3)
    assert gateway.cpu_ms_per_row == pytest.approx(0.6 / 19_200 * 1e3)
    erring = Row(512, "columnar", naive, Point("gateway", 512, "columnar", run(900.0, errors=1)), None)
    assert erring.gateway_vs_naive is None and erring.naive_vs_gateway_cpu_per_row is None
    failed = Row(512, "row", naive, Point("gateway", 512, "row", error="boom"), None)
    report = LargeReport("now", "abc", "pinned", 16, 5, 2, 512, Failure("no model"),
                         (naive, gateway, failed.gateway), (row, erring, failed), goal_met=False)
    text = bench_large.table(report)
    assert "| 64 | row | 100 | 6,400 |" in text and "| 3.00x | 4.00x | 64,000 | 30% |" in text
    assert "(1 errors)" in text and "gateway 512 rows row: boom" in text
    assert "raw model: no model" in text and "NOT MET" in text
    bench_large.write(report, tmp_path)
    doc = json.loads((tmp_path / "large-latest.json").read_text())
    assert doc["rows"][0]["gateway_vs_naive"] == pytest.approx(3.0)
    assert doc["points"][1]["rows_per_s"] == pytest.approx(19_200)
    assert (tmp_path / "large-latest.md").read_text() == text


def test_max_batch_size_leaves_room_to_merge_the_largest_requests():
    assert bench_large.parse_args(["--rows", "512,64"]).max_batch_size == bench_large.MERGED_REQUESTS * 512
    assert bench_large.parse_args(["--rows", "64", "--max-batch-size", "100"]).max_batch_size == 100
