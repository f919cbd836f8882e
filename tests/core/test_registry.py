"""Version discovery, policies, labels and failed loads (serving/core/registry.py)."""
from __future__ import annotations

import asyncio
import shutil

import pytest

from serving.core.registry import ModelRegistry, State
from serving.core.sources import LocalSource, select_versions
from serving.errors import NotFound
from serving.settings import ModelConfig, VersionPolicy


def config(path, **kwargs) -> ModelConfig:
    return ModelConfig(name="m", base_path=str(path), **kwargs)


@pytest.fixture
def two_versions(tfserving_dir, tmp_path):
    base = tmp_path / "m"
    shutil.copytree(tfserving_dir / "saved_model_half_plus_two_2_versions", base)
    (base / "not-a-version").mkdir()
    return base


def test_version_directories_are_numbers_with_their_own_names(two_versions):
    v123, v124 = str(two_versions / "00000123"), str(two_versions / "00000124")
    assert select_versions(config(two_versions)) == {124: v124}
    assert select_versions(config(two_versions, version_policy=VersionPolicy(kind="all"))) == {
        123: v123, 124: v124}
    specific = VersionPolicy(kind="specific", versions=(123, 999))
    assert select_versions(config(two_versions, version_policy=specific)) == {123: v123}
    latest2 = VersionPolicy(kind="latest", num_versions=2)
    assert list(select_versions(config(two_versions, version_policy=latest2))) == [123, 124]


def load(registry: ModelRegistry) -> None:
    asyncio.run(registry.load_all())


def test_resolution_by_latest_version_and_label(two_versions):
    registry = ModelRegistry([config(two_versions, version_policy=VersionPolicy(kind="all"),
                                     version_labels={"stable": 123, "ghost": 7})],
                             batcher_factory=None, source=LocalSource((1,)))
    load(registry)
    assert registry.ready()
    assert registry.resolve("m").version == 124
    assert registry.resolve("m", 123).version == 123
    assert registry.resolve("m", label="stable").version == 123
    with pytest.raises(NotFound):
        registry.resolve("m", label="ghost")  # points at a version that is not loaded
    with pytest.raises(NotFound, match="label"):
        registry.resolve("m", label="canary")
    with pytest.raises(NotFound, match="Specific"):
        registry.resolve("m", 5)
    with pytest.raises(NotFound, match="Latest"):
        registry.resolve("other")


def test_a_broken_version_is_reported_and_the_others_serve(two_versions):
    (two_versions / "00000124" / "saved_model.pb").write_bytes(b"garbage")
    registry = ModelRegistry([config(two_versions, version_policy=VersionPolicy(kind="all"))],
                             batcher_factory=None, source=LocalSource((1,)))
    load(registry)
    broken, good = registry.statuses("m", 124)[0], registry.statuses("m", 123)[0]
    assert broken.state is State.END and "Failed to load" in broken.error
    assert good.state is State.AVAILABLE
    assert registry.resolve("m").version == 123
    assert registry.ready()


def test_missing_base_path_is_not_ready_and_not_found(tmp_path):
    registry = ModelRegistry([config(tmp_path / "absent")], batcher_factory=None,
                             source=LocalSource((1,)))
    load(registry)
    assert not registry.ready()
    with pytest.raises(NotFound, match="Could not list the versions"):
        registry.statuses("m")
