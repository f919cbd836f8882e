"""Smoke test of ``make bench-v2`` (loadtests/benchmarks/bench_v2.py): the report's ratios from
made-up runs, and one tiny real run of every protocol on both models against a real gateway,
through tritonclient's aio clients and aiohttp, and against Seldon MLServer (its venv, built by
``make bench-v2``) with adaptive batching on and off. No timing is asserted: only that every piece
runs, every driver checked its answers and had no errors, and the outputs agree."""
from __future__ import annotations

import json

import pytest

from loadtests.benchmarks.bench_v2 import PROTOCOLS, Run, main, ratios, slo_ratios, table
from loadtests.support.processes import REPO
from tests.conftest import missing_outside


def _run(protocol: str, cpu_s: float, model: str = "natality", concurrency: int = 4) -> Run:
    return Run(model, protocol, concurrency, None, qps=100.0, p50_ms=1.0, p99_ms=2.0, ok=100, errors={},
               server_cpu_s=cpu_s, mean_batch_rows=None if model == "image_classifier" else 2.0,
               loadgen_cpu=0.5, seconds=1.0)


def test_ratios_compare_each_protocol_with_tf_serving_rest_of_its_model_and_concurrency():
    runs = [_run("tfs-rest", 0.1), _run("v2-binary", 0.105), _run("v2-grpc", 0.12), _run("v2-json", 0.2),
            _run("tfs-grpc", 0.15), _run("tfs-rest", 1.0, concurrency=1),
            _run("v2-grpc", 1.0, model="image_classifier")]
    assert ratios(runs) == [
        "natality x4: v2-binary/tfs-rest server CPU per request 1.05 (goal <= 1.10: met)",
        "natality x4: v2-grpc/tfs-rest server CPU per request 1.20 (goal <= 1.10: NOT met)",
        "natality x4: v2-grpc/tfs-grpc server CPU per request 0.80",
        "natality x4: v2-json/tfs-rest server CPU per request 2.00",
        "natality x4: tfs-grpc/tfs-rest server CPU per request 1.50",
    ]  # the image model has no tfs-rest run to compare with
    assert "| natality | v2-grpc | x4 | 100 | 1.00 | 2.00 | 0 | 1.200 | 2.0 | 0.12 | 0.50 |" in table(runs, "t")


def _searched(protocol: str, max_qps: int | None, p99: float | None = 20.0) -> dict:
    return {"model": "natality", "protocol": protocol, "max_qps": max_qps, "p99_ms_at_max": p99}


def test_the_best_protocol_is_compared_with_mlserver_once_when_it_is_v2_json():
    searches = [_searched("v2-json", 900, 12.5), _searched("mlserver v2-json, batching on", 300, 22.0)]
    assert slo_ratios(searches) == ["natality: gateway v2-json / mlserver v2-json, batching on: req/s at the SLO "
                                    "3.00x (900 vs 300), p99 there 12.5 vs 22.0 ms"]


def test_slo_ratios_compare_v2_with_tf_serving_rest_and_the_gateway_with_mlserver():
    searches = [_searched("v2-json", 900, 12.5), _searched("v2-grpc", 1200, 9.0), _searched("tfs-rest", 1000),
                _searched("tfs-grpc", 1500),
                _searched("mlserver v2-json, batching on", 300, 22.0),
                _searched("mlserver v2-json, batching off", None, None)]
    assert slo_ratios(searches) == [
        "natality: v2-json/tfs-rest req/s at the SLO 0.90",
        "natality: v2-grpc/tfs-rest req/s at the SLO 1.20",
        "natality: v2-grpc/tfs-grpc req/s at the SLO 0.80",
        "natality: gateway v2-json / mlserver v2-json, batching on: req/s at the SLO 3.00x (900 vs 300), "
        "p99 there 12.5 vs 22.0 ms",
        "natality: gateway tfs-grpc / mlserver v2-json, batching on: req/s at the SLO 5.00x (1500 vs 300), "
        "p99 there 20.0 vs 22.0 ms",
        "natality: gateway v2-json / mlserver v2-json, batching off: req/s at the SLO (the peer met no rate) "
        "(900 vs None), p99 there 12.5 vs nan ms",
        "natality: gateway tfs-grpc / mlserver v2-json, batching off: req/s at the SLO (the peer met no rate) "
        "(1500 vs None), p99 there 20.0 vs nan ms",
    ]


@pytest.mark.slow
def test_a_tiny_slo_search_reports_its_steps_table_and_plot(tmp_path):
    main(["--search-only", "--slo", "1000", "--start-rate", "20", "--search-steps", "2", "--duration", "0.5",
          "--warmup", "0", "--concurrency", "8", "--models", "natality", "--protocols", "v2-grpc,tfs-rest",
          "--out", str(tmp_path)])
    report = json.loads((tmp_path / "v2-latest.json").read_text())
    assert report["runs"] == [] and report["slo_ms"] == "every model 1000"
    for found in report["searches"]:  # 20/s then 30/s, both within a 1 s p99, every request answered
        assert [(s["rate"], s["passed"], s["errors"]) for s in found["steps"]] == [(20, True, {}), (30, True, {})]
        assert found["max_qps"] == 30 and found["first_failing_rate"] is None
    assert [s["setting"]["name"] for s in report["searches"]] == ["natality v2-grpc", "natality tfs-rest"]
    assert report["slo_ratios"] == ["natality: v2-grpc/tfs-rest req/s at the SLO 1.00"]
    markdown = (tmp_path / "v2-latest.md").read_text()
    assert "| natality v2-grpc | **30** |" in markdown and report["slo_ratios"][0] in markdown
    assert (tmp_path / "v2-latest-natality.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_tiny_real_run_of_every_protocol_and_model(tmp_path):
    runs = main(["--duration", "0.5", "--warmup", "0", "--concurrency", "2", "--out", str(tmp_path)])
    cells = [(r.model, r.protocol) for r in runs]
    assert cells == [("natality", p) for p in PROTOCOLS] + [
        ("image_classifier", p) for p in PROTOCOLS if p != "v2-json"]  # JPEGs are not UTF-8 text
    for r in runs:
        assert r.ok > 0 and not r.errors and r.server_cpu_s > 0 and r.mean_batch_rows >= 1, r
    report = json.loads((tmp_path / "v2-latest.json").read_text())
    assert [(r["model"], r["protocol"]) for r in report["runs"]] == cells
    assert report["ratios"] == ratios(runs) and len(report["ratios"]) == 11
    markdown = (tmp_path / "v2-latest.md").read_text()
    assert all(line in markdown for line in report["ratios"])


@pytest.mark.slow
def test_fixed_rates_send_every_protocol_at_the_same_rate(tmp_path):
    runs = main(["--duration", "1", "--warmup", "0", "--rates", "20,40", "--concurrency", "8", "--models",
                 "natality", "--protocols", "v2-binary,tfs-rest", "--out", str(tmp_path)])
    assert [(r.protocol, r.load) for r in runs] == [
        ("v2-binary", "20/s"), ("v2-binary", "40/s"), ("tfs-rest", "20/s"), ("tfs-rest", "40/s")]
    for r in runs:  # every send was due at the rate (20 or 40 in the second), all answered
        assert not r.errors and r.ok == r.rate, r
    assert [line.split(":")[0] for line in ratios(runs)] == ["natality 20/s", "natality 40/s"]


@pytest.mark.slow
def test_a_tiny_run_against_mlserver_with_and_without_batching(tmp_path):
    mlserver = REPO / "build" / "mlserver-venv"
    if not (mlserver / "bin" / "mlserver").exists():
        missing_outside(f"no MLServer venv at {mlserver}", "build it with: make mlserver-venv")
    runs = main(["--duration", "0.5", "--warmup", "0", "--concurrency", "2", "--models", "natality",
                 "--protocols", "v2-json,v2-grpc-typed", "--mlserver", str(mlserver), "--out", str(tmp_path)])
    assert [r.protocol for r in runs] == [
        "v2-json", "v2-grpc-typed", "mlserver v2-json, batching on", "mlserver v2-grpc-typed, batching on",
        "mlserver v2-json, batching off", "mlserver v2-grpc-typed, batching off"]
    for r in runs:  # each driver checked MLServer's first answers against the model's truth
        assert r.ok > 0 and not r.errors and r.server_cpu_s > 0, r
    assert [line.split(":")[1] for line in ratios(runs) if "mlserver" in line] == [
        " gateway v2-json / mlserver v2-json, batching on",
        " gateway v2-grpc-typed / mlserver v2-grpc-typed, batching on",
        " gateway v2-json / mlserver v2-json, batching off",
        " gateway v2-grpc-typed / mlserver v2-grpc-typed, batching off"]
    settings = json.loads((tmp_path / "mlserver" / "batching-on" / "natality" / "model-settings.json").read_text())
    assert settings["max_batch_size"] == 128 and "max_batch_size" not in json.loads(
        (tmp_path / "mlserver" / "batching-off" / "natality" / "model-settings.json").read_text())


def test_the_slo_flag_takes_one_for_every_model_and_one_per_model():
    from loadtests.benchmarks.bench_v2 import parse_args

    assert parse_args(["--slo", "25,image_classifier=100"]).slo == {"": 25.0, "image_classifier": 100.0}
    assert parse_args([]).slo == {}
    with pytest.raises(SystemExit):
        parse_args(["--slo", "nosuchmodel=10"])
    with pytest.raises(SystemExit):
        parse_args(["--search-only"])  # a search needs an SLO
