"""How a batch run ends: its counts told on stderr, and its verdict on its dead letters.

A finished run logs one summary line, and a WARNING when it dead-lettered rows; a run whose
flags set a bar for dead letters (``--fail_on_dead_letters``, ``--max_dead_letter_fraction``)
and passed it logs an ERROR and exits 3:

    INFO batch: finished: rows in: 22, written: 20, dead-lettered: 2 (1 not JSON; 1 input 'mother_age'); ...
    WARNING batch: 2 of 22 rows (9.09%) were dead-lettered: each is in PREFIX-errors-*.jsonl with ...
    ERROR batch: --max_dead_letter_fraction=0.05: 2 of 22 rows (9.09%) were dead-lettered: exit status 3

Exit statuses of ``batch/run.py``: 0 finished (dead letters within the bar), 1 the job failed
(an exception: a traceback), 2 bad flags, 3 finished with more dead letters than the flags allow.
Free of Beam: ``batch.pipeline.job_counts`` reads the counters.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field

from serving.cli import parse_bool

log = logging.getLogger("batch")

EXIT_TOO_MANY_DEAD_LETTERS = 3
"""The run finished, but dead-lettered more rows than --fail_on_dead_letters or
--max_dead_letter_fraction allow (2 stays argparse's: bad flags)."""


@dataclass(frozen=True)
class JobCounts:
    """What a finished run's counters say."""

    rows_in: int
    rows_written: int
    rows_dead_lettered: int
    rows_stored: int | None = None
    """None when the job writes no prediction store."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Dead-lettered rows per kind of reason (``batch.chunks.reason_kind``)."""

    def as_dict(self) -> dict[str, int]:
        """The row counters by their Beam names (``rows_stored`` only when there is a store)."""
        counts = {"rows_in": self.rows_in, "rows_written": self.rows_written,
                  "rows_dead_lettered": self.rows_dead_lettered}
        return counts if self.rows_stored is None else {**counts, "rows_stored": self.rows_stored}

    def dead_fraction(self) -> float:
        return self.rows_dead_lettered / self.rows_in if self.rows_in else 0.0


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction from 0 to 1 (0.01 is 1%), not {text}")
    return value


def add_dead_letter_flags(parser: argparse.ArgumentParser, shown: bool = True) -> None:
    """The bar a finished run's dead letters must pass (``shown=False``: parsed but kept out
    of ``--help``, for a job that refuses them with its own message)."""
    hidden = argparse.SUPPRESS
    parser.add_argument("--fail_on_dead_letters", type=parse_bool, nargs="?", const=True, default=False,
                        metavar="BOOL", help="exit with status 3 when any row was dead-lettered "
                        "(the same as --max_dead_letter_fraction=0)" if shown else hidden)
    parser.add_argument("--max_dead_letter_fraction", type=fraction, metavar="F",
                        help="exit with status 3 when more than this fraction (0 to 1) of the rows read "
                             "was dead-lettered" if shown else hidden)


def summary(counts: JobCounts, dead_letter_files: str) -> str:
    """One line: rows in, written, dead-lettered (by reason), stored, and where dead letters are."""
    line = f"rows in: {counts.rows_in}, written: {counts.rows_written}, dead-lettered: {counts.rows_dead_lettered}"
    if counts.reasons:
        kinds = sorted(counts.reasons.items(), key=lambda item: (-item[1], item[0]))
        line += " (" + "; ".join(f"{n} {kind}" for kind, n in kinds) + ")"
    if counts.rows_stored is not None:
        line += f", stored: {counts.rows_stored}"
    if counts.rows_dead_lettered:
        line += f"; dead letters in {dead_letter_files}"
    return line


def share(counts: JobCounts) -> str:
    """'2 of 22 rows (9.09%)'."""
    return f"{counts.rows_dead_lettered} of {counts.rows_in} rows ({100 * counts.dead_fraction():.3g}%)"


def verdict(counts: JobCounts, fail_on_dead_letters: bool, max_fraction: float | None) -> str | None:
    """Why the run fails its dead-letter bar (naming the flag), or None when it passes."""
    if fail_on_dead_letters and counts.rows_dead_lettered:
        return f"--fail_on_dead_letters: {share(counts)} were dead-lettered"
    if max_fraction is not None and counts.dead_fraction() > max_fraction:
        return f"--max_dead_letter_fraction={max_fraction:g}: {share(counts)} were dead-lettered"
    return None


def tell(counts: JobCounts, dead_letter_files: str, fail_on_dead_letters: bool, max_fraction: float | None) -> None:
    """Log the summary (and the warning, and the verdict); exit 3 when the run fails its bar."""
    log.info("finished: %s", summary(counts, dead_letter_files))
    if counts.rows_dead_lettered:
        log.warning("%s were dead-lettered: each is in %s with its input and the reason ('error')",
                    share(counts), dead_letter_files)
    failed = verdict(counts, fail_on_dead_letters, max_fraction)
    if failed:
        log.error("%s: exit status %d", failed, EXIT_TOO_MANY_DEAD_LETTERS)
        raise SystemExit(EXIT_TOO_MANY_DEAD_LETTERS)
