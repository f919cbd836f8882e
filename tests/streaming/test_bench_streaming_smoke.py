"""`make bench-streaming` still runs (one setup, one short rate, one searched rate; no timing
assertions). Needs the Pub/Sub emulator: skipped without it, failed without it under CI=true
(tests/conftest.py)."""
from __future__ import annotations

import pytest

from loadtests.benchmarks.bench_streaming import BATCHING, MODELS, main
from tests.conftest import require_pubsub_emulator


@pytest.mark.slow
def test_bench_streaming_measures_the_gateway_path(models_dir, capsys):
    require_pubsub_emulator()
    results = main(["--models", "gateway", "--batching", "per-message", "--rates", "10",
                    "--seconds", "2", "--search_steps", "1", "--search_seconds", "1"])
    model, batching = MODELS["gateway"], BATCHING["per-message"].label
    assert set(results) == {(model, batching)}
    stages = results[(model, batching)].stages
    assert [s.rate for s in stages] in ([10.0, 20.0], [10.0, 5.0])  # the fixed rate, one searched
    for stage in stages:
        assert stage.received >= stage.sent > 0
        assert stage.p50_ms <= stage.p99_ms
    assert f"| {model} | {batching} |" in capsys.readouterr().out
