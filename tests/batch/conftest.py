"""Fixtures shared by the batch tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from serving.examples import build, shapes
from tests.conftest import MODELS


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make models``' per-shape models, or a fresh build of them in tmp."""
    built = MODELS / shapes.FOLDER
    if all((built / name / "1" / "saved_model.pb").is_file() for name in shapes.MODELS):
        return built
    return build.build_shapes(tmp_path_factory.mktemp("models"))
