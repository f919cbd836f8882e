"""Each overlay is rendered once per session, by the real kubectl."""
from __future__ import annotations

import pytest

from tests.deploy.manifests import DEPLOY, OVERLAYS, Obj, kustomize


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: kustomize(DEPLOY / "overlays" / overlay) for overlay in OVERLAYS}
