"""`make bench-batch` still runs (tiny sizes; no timing assertions)."""
from __future__ import annotations

import pytest

from loadtests.benchmarks.bench_batch import main


@pytest.mark.slow
def test_bench_batch_runs_every_pipeline(models_dir, capsys):
    natality, by_shape = main(["--small", "200", "--large", "400", "--rows", "50", "--ours_copies", "2",
                               "--stock_copies", "2", "--shapes", "vec16", "--formats", "csv"])
    assert len(natality) == 3
    for result in natality.values():
        assert set(result.seconds) == {200, 400}
    assert [(r.shape, r.input_format) for r in by_shape] == [("vec16", "csv")]
    out = capsys.readouterr().out
    assert "batch/run.py vs stock" in out and "| vec16 | csv |" in out
