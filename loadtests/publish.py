"""``make publish-results``: copy the latest run outputs into the committed tables.

Runs write only under ``bench-results/`` (``loadtests.support.outputs.RUNS``, ignored by git),
so ``make loadtest`` leaves a checkout clean. The tables and plots the docs link to
(``loadtests/results/``) change only here, when a maintainer chooses a run to publish::

    python -m loadtests.publish [loadtest] [soak] [precomputed] [v2]

Without names, every job that has outputs is published. Then review with ``git diff`` and
commit. Only each job's reports are copied, never its raw runs and logs.
"""
from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests.support.outputs import PUBLISHED, RUNS
from loadtests.support.processes import log


@dataclass(frozen=True)
class Job:
    """The reports ``target`` writes in ``RUNS/run``, published to ``PUBLISHED/into``."""

    target: str
    run: str
    into: str
    patterns: tuple[str, ...]
    """File names (globs) in the run folder, not below it."""


JOBS = {
    "loadtest": Job("make loadtest", "loadtest", "", ("loadtest.md", "loadtest.json", "sweep.png")),
    "soak": Job("make soak", "soak", "soak", ("soak.md", "soak.json")),
    # one set per model (MODEL.md, MODEL.json, MODEL.png)
    "precomputed": Job("make bench-precomputed", "precomputed", "precomputed", ("*.md", "*.json", "*.png")),
    "v2": Job("make bench-v2", "", "v2", ("v2-latest.md", "v2-latest.json", "v2-latest-*.png")),
}


def outputs(job: Job, runs: Path) -> list[Path]:
    """The job's reports found in its run folder, in the order of its patterns."""
    folder = runs / job.run
    return [path for pattern in job.patterns for path in sorted(folder.glob(pattern)) if path.is_file()]


def publish(names: Sequence[str], runs: Path = RUNS, published: Path = PUBLISHED) -> list[tuple[Path, Path]]:
    """Copy each named job's reports (none named: every job that has some); (from, to) pairs.
    A named job without outputs, or no outputs at all, is an error before anything is copied."""
    chosen = {name: JOBS[name] for name in names} if names else JOBS
    found = {name: outputs(job, runs) for name, job in chosen.items()}
    empty = [f"{name} (nothing in {runs / job.run}: run {job.target})"
             for name, job in chosen.items() if not found[name]]
    if empty and (names or len(empty) == len(chosen)):
        raise FileNotFoundError("no outputs to publish: " + "; ".join(empty))
    for note in empty:
        log(f"skipped {note}")
    copied = []
    for name, files in found.items():
        into = published / chosen[name].into
        into.mkdir(parents=True, exist_ok=True)
        for source in files:
            shutil.copyfile(source, into / source.name)
            copied.append((source, into / source.name))
    return copied


def main(argv: Sequence[str] | None = None) -> list[tuple[Path, Path]]:
    parser = argparse.ArgumentParser(prog="python -m loadtests.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", nargs="*", metavar="JOB",
                        help=f"any of {', '.join(JOBS)} (default: every job with outputs)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(JOBS)}")
    try:
        copied = publish(args.jobs)
    except FileNotFoundError as error:
        parser.exit(1, f"{error}\n")
    for source, target in copied:
        log(f"{source} -> {target}")
    return copied


if __name__ == "__main__":
    main()
