"""`make bench-batch` still runs (tiny sizes; no timing assertions)."""
from __future__ import annotations

from loadtests.bench_batch import main


def test_bench_batch_runs_every_pipeline(models_dir, capsys):
    results = main(["--small", "200", "--large", "400"])
    assert len(results) == 3
    for result in results.values():
        assert set(result.seconds) == {200, 400}
    assert "batch/run.py vs stock" in capsys.readouterr().out
