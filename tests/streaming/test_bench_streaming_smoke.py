"""`make bench-streaming` still runs (one short rate; no timing assertions). Needs the Pub/Sub
emulator: skipped without it, failed without it under CI=true (tests/conftest.py)."""
from __future__ import annotations

from loadtests.bench_streaming import SETTINGS, main
from tests.conftest import require_pubsub_emulator


def test_bench_streaming_measures_both_settings(models_dir, capsys):
    require_pubsub_emulator()
    results = main(["--rates", "10", "--seconds", "2"])
    assert set(results) == {(name, 10.0) for name in SETTINGS}
    for result in results.values():
        assert result.received >= result.sent > 0
        assert result.p50_ms <= result.p99_ms
    assert "| one message per call | 10 |" in capsys.readouterr().out
