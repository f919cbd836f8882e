"""``make publish-results`` (``python -m loadtests.publish``): a run's reports, and only they,
copied over the committed tables."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loadtests.publish import JOBS, main, publish
from loadtests.support.outputs import PUBLISHED
from loadtests.support.processes import REPO


def write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"{name} of this run\n")


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.mark.parametrize("name", JOBS)
def test_each_job_publishes_over_committed_files(name: str):
    """What a job publishes is what the docs link to: each of its patterns names tracked files."""
    job = JOBS[name]
    for pattern in job.patterns:
        committed = sorted((PUBLISHED / job.into).glob(pattern))
        assert committed, f"{name}: no committed {pattern} in {PUBLISHED / job.into}"
        listed = subprocess.run(["git", "ls-files", "--error-unmatch", *map(str, committed)], cwd=REPO,
                                capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr


def test_the_reports_are_copied_and_the_raw_runs_are_not(tmp_path: Path):
    runs, published = tmp_path / "bench-results", tmp_path / "results"
    write(runs / "loadtest", "loadtest.md", "loadtest.json", "sweep.png", "runs/spike/summary.json",
          "logs/gateway.log", "batch-16.batching.config")
    write(runs / "precomputed", "natality.md", "natality.json", "natality.png", "sqlite/precompute-input.jsonl")
    copied = publish(["loadtest", "precomputed"], runs, published)
    assert files(published) == {"loadtest.md", "loadtest.json", "sweep.png",
                                "precomputed/natality.md", "precomputed/natality.json", "precomputed/natality.png"}
    assert all(target.read_text() == source.read_text() for source, target in copied)
    assert (published / "sweep.png").read_text() == "sweep.png of this run\n"


def test_a_named_job_without_outputs_publishes_nothing(tmp_path: Path):
    runs, published = tmp_path / "bench-results", tmp_path / "results"
    write(runs / "loadtest", "loadtest.md")
    with pytest.raises(FileNotFoundError, match="soak .*make soak"):
        publish(["loadtest", "soak"], runs, published)
    assert files(published) == set()


def test_without_names_every_job_that_has_outputs_is_published(tmp_path: Path):
    runs, published = tmp_path / "bench-results", tmp_path / "results"
    with pytest.raises(FileNotFoundError, match="make loadtest.*make soak.*make bench-precomputed"):
        publish([], runs, published)
    write(runs / "soak", "soak.md", "soak.json")
    publish([], runs, published)
    assert files(published) == {"soak/soak.md", "soak/soak.json"}


def test_an_unknown_job_is_refused():
    with pytest.raises(SystemExit) as exit_:
        main(["sweep"])
    assert exit_.value.code == 2
