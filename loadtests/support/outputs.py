"""Where runs write, and where the tables published from them live.

Every ``make loadtest``, ``make soak`` and ``make bench*`` run writes under ``RUNS``, which git
ignores: a run leaves the checkout as it found it. The committed tables and plots the docs
link to (``PUBLISHED``) change only when a maintainer publishes a run's outputs
(``make publish-results``, ``loadtests/publish.py``).
"""
from __future__ import annotations

from pathlib import Path

from loadtests.support.processes import REPO

RUNS = REPO / "bench-results"
"""Each run's reports, raw samples and server logs (in .gitignore)."""
PUBLISHED = REPO / "loadtests" / "results"
"""The committed tables and plots; only ``loadtests.publish`` writes here."""
ELSEWHERE = Path("loadtest-results")
"""Runs against servers elsewhere (``run scenario``, ``slo``, ``cluster``; ``locust -f``
itself) write here, relative to where they start: a pod passes ``--out``, a checkout ignores it."""
