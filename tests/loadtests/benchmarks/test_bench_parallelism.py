"""``make bench-parallelism``: its ratios, spread and notes from made-up runs, the subprocess
result read back, and one tiny real run (two settings, natality only). No timing is asserted."""
from __future__ import annotations

import json
import re

import pytest

from loadtests.benchmarks import bench_parallelism
from loadtests.benchmarks.bench_parallelism import Point, Report, Setting, SettingRun
from loadtests.benchmarks.bench_results import Failure, to_json

DEFAULT, CAPPED = Setting(0, 0), Setting(1, 1)


def point(calls: int, cpu_seconds: float, callers: int = 1) -> Point:
    return Point("natality", 1, callers, calls, seconds=2.0, cpu_seconds=cpu_seconds, others_cpu=0.5,
                 p50_ms=1.0, p99_ms=2.0)


def report(runs: tuple[SettingRun, ...], failures: tuple = ()) -> Report:
    return Report("now", "abc", 2, 2.0, 1.0, 3, (DEFAULT, CAPPED), runs, failures, (0.5, 0.4, 0.3))


def test_each_setting_is_the_median_of_its_rounds_against_the_baselines_median():
    runs = tuple(SettingRun(setting, round_, threads, {"natality": "session"}, (point(calls, cpu),))
                 for setting, threads, rounds in ((DEFAULT, 10, ((1000, 1.0), (800, 0.4), (900, 0.9))),
                                                  (CAPPED, 7, ((1500, 0.6), (1200, 0.3), (1350, 0.9))))
                 for round_, (calls, cpu) in enumerate(rounds, 1))
    text = bench_parallelism.table(report(runs, (("intra 1, inter 1 round 4", Failure("boom")),)))
    # default: 500, 400, 450 calls/s and 1.0, 0.5, 1.0 CPU ms/call; capped: 750, 600, 675 and
    # 0.4, 0.25, 0.67: medians 450 and 1.0 against 675 and 0.4
    assert "| natality | 1 | 1 | 450.0 | 1.00 | 1.25x | 1.50x / 0.40x |" in text, text
    assert "- default (0/0): 10/10/10 process threads after warm-up (natality in session)" in text
    assert "- intra 1, inter 1: 7/7/7 process threads" in text
    assert "0.50 cores busy on average, 0.50 at most (load average at start 0.50/0.40/0.30)" in text
    assert "- FAILED intra 1, inter 1 round 4: boom" in text


def test_a_point_missing_from_a_setting_shows_a_dash():
    runs = (SettingRun(DEFAULT, 1, 10, {}, (point(1000, 1.0), point(1000, 1.0, callers=2))),
            SettingRun(CAPPED, 1, 7, {}, (point(1000, 0.5),)))
    lines = bench_parallelism.table(report(runs)).splitlines()
    assert "| natality | 1 | 1 | 500.0 | 1.00 | 1.00x | 1.00x / 0.50x |" in lines
    assert "| natality | 1 | 2 | 500.0 | 1.00 | 1.00x | — |" in lines


def test_the_subprocess_result_reads_back_and_the_report_is_written(tmp_path):
    run = SettingRun(CAPPED, 2, 7, {"natality": "session"}, (point(1000, 1.0),))
    assert SettingRun.from_json(json.loads(json.dumps(to_json(run)))) == run
    bench_parallelism.write(report((run,)), tmp_path)
    doc = json.loads((tmp_path / "parallelism-latest.json").read_text())
    assert doc["runs"][0]["points"][0]["calls_per_s"] == pytest.approx(500.0)
    assert doc["runs"][0]["points"][0]["cpu_ms_per_call"] == pytest.approx(1.0)
    assert (tmp_path / "parallelism-latest.md").read_text() == bench_parallelism.table(report((run,)))


def test_settings_and_rows_are_checked():
    args = bench_parallelism.parse_args(["--settings", "0:0,2:1", "--rows", "1,4"])
    assert args.settings == (DEFAULT, Setting(2, 1)) and args.rows == (1, 4)
    for bad in (["--settings", "1:-1"], ["--models", "other"], ["--duration", "0"]):
        with pytest.raises(SystemExit):
            bench_parallelism.parse_args(bad)


@pytest.mark.slow
def test_a_tiny_run_measures_each_setting_in_its_own_process_and_writes_its_table(models_dir, tmp_path, capsys):
    bench_parallelism.main(["--settings", "0:0,1:1", "--models", "natality", "--rows", "1,4",
                            "--duration", "0.2", "--warmup", "0", "--rounds", "1",
                            "--models-dir", str(models_dir), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    for rows in (1, 4):
        for callers in (1, 2):
            assert re.search(rf"^\| natality \| {rows} \| {callers} \| [\d,.]+ \| [\d.]+ \| 1\.00x "
                             r"\| \d+\.\d\dx / \d+\.\d\dx \|$", out, re.M), out
    assert "natality in session" in out and "FAILED" not in out
    assert (tmp_path / "parallelism-latest.md").read_text() in out
    assert len(list((tmp_path / "logs").glob("parallelism-*.log"))) == 2
