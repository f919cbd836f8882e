"""``python -m loadtests.benchmarks.bench_precomputed``: the keyed request pools, and one short real run
(a batch job writing a SQLite store, the gateway answering from it under Locust)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.benchmarks import bench_precomputed
from loadtests.support.payloads import KeyShare
from tests.conftest import MODELS


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_a_pool_holds_the_share_asked_of_stored_keys_each_with_its_own_row(share):
    keys = KeyShare("key", share, distinct=40)
    stored = {row["key"]: row for row in keys.precomputed("natality", seed=7)}
    rows = keys.rows("natality", seed=7)
    assert len(stored) == 20 and len(rows) == 40
    assert sum(row["key"] in stored for row in rows) == round(share * 40)
    for row in rows:  # a key always names the same features, so a stored answer is right
        assert row["key"] not in stored or row == stored[row["key"]]


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError):
        KeyShare("key", 1.5)


@pytest.mark.slow
def test_a_short_run_answers_stored_keys_from_the_store(tmp_path: Path):
    report = bench_precomputed.main([
        "--stores", "sqlite", "--shares", "90", "--skip-baseline", "--keys", "40", "--rate", "40",
        "--seconds", "1.5", "--warmup", "0.5", "--max-steps", "0", "--model-dir",
        str(MODELS / "natality"), "--out", str(tmp_path)])
    results = report["results"]
    fixed = results["sqlite, 90% precomputed"]["fixed"]
    assert fixed["errors"] == 0
    rows = fixed["precomputed_rows"]
    assert rows["fallback"] == 0 and rows["hit"] > rows["miss"] > 0  # the store answered most rows
    # the model computed exactly the rows the store lacked (counters span warm-up and step)
    assert fixed["model_rows_per_s"] * (0.5 + 1.5) == pytest.approx(rows["miss"])
    assert json.loads((tmp_path / "natality.json").read_text())["results"].keys() == results.keys()
    assert "| sqlite, 90% precomputed | sqlite | 90% |" in (tmp_path / "natality.md").read_text()
    assert (tmp_path / "natality.png").stat().st_size > 0
