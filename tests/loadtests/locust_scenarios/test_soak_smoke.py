"""Smoke test of ``make soak`` (loadtests/locust_scenarios/soak.py): a 15-second soak at a low given rate
with versions rolled in every 3 s; the harness books every request, sees each version served
and samples the server's RSS. Its figures are a benchmark's, not asserted here."""
from __future__ import annotations

import pytest

from loadtests.locust_scenarios import soak


@pytest.mark.slow
def test_soak_rolls_versions_in_under_load_and_reports(models_dir, tmp_path):
    result = soak.main(["--minutes", "0.25", "--rollout-every", "3", "--max-qps", "100",
                        "--out", str(tmp_path)])
    assert result.rate == 70 and result.requests > 0
    versions = [r.version for r in result.rollouts]  # how many fit in depends on the clock
    assert versions and versions == list(range(2, 2 + len(versions)))
    assert all(r.served_after_s is not None for r in result.rollouts)
    assert len(result.rss_mb) >= 3 and result.rss_growth is not None
    report = (tmp_path / "soak.md").read_text()
    assert f"| {result.requests:,} | {result.errors} |" in report
    assert (tmp_path / "soak.json").is_file()
