"""The gateway the load-test modules drive (scenarios, SLO searches, distributed runs)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.locust_scenarios.sweep import Setting, Target, serve
from loadtests.support.processes import Pinning

NOT_PINNED = Pinning((), (), "not pinned")


@pytest.fixture(scope="package")
def gateway(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One real gateway process (natality, batching) for the package: a start is a model load
    and warm-up, and the tests that share it count only their own requests (deltas)."""
    with serve(Setting("batch 32, 2 ms", "gateway", 32, 2.0), "natality",
               models_dir / "natality", NOT_PINNED, tmp_path_factory.mktemp("gateway")) as target:
        yield target
