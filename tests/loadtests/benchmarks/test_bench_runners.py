"""Smoke test of ``make bench-runners``: it finds the models, skips what it should, checks
the two runners agree and prints a row per model and size. No timing is asserted."""
from __future__ import annotations

import re

import pytest

from loadtests.benchmarks import bench_runners


@pytest.mark.slow
def test_bench_runners_reports_each_model_that_moves(models_dir, tmp_path, capsys):
    (tmp_path / "shapes").mkdir()
    (tmp_path / "natality").symlink_to(models_dir / "natality")
    (tmp_path / "shapes" / "vec16").symlink_to(models_dir / "shapes" / "vec16")
    (tmp_path / "half").mkdir()  # a TF1 SavedModel: in a Session either way
    (tmp_path / "half" / "1").symlink_to(models_dir / "tfserving" / "saved_model_half_plus_two_cpu" / "00000123")
    bench_runners.main(["--models", str(tmp_path), "--rows", "1,3", "--repeat", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^half +TF1 SavedModel", out, re.M), out
    for name in ("natality", "shapes/vec16"):
        for rows in (1, 3):
            assert re.search(rf"^{name} +{rows} +\d+ +\d+ +\d+\.\dx$", out, re.M), out
