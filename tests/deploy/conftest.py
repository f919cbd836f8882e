"""Each overlay, and prod with the load-test component, is rendered once per session, by the
real kubectl."""
from __future__ import annotations

import pytest

from tests.deploy.manifests import DEPLOY, LOCUST, OVERLAYS, WITH_LOCUST, Obj, kustomize, with_component


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    overlays = {overlay: kustomize(DEPLOY / "overlays" / overlay) for overlay in OVERLAYS}
    with_locust = with_component(tmp_path_factory.mktemp("with-locust"), "prod", LOCUST)
    return {**overlays, WITH_LOCUST: kustomize(with_locust)}
