"""Version discovery, policies, labels and failed loads (serving/core/registry.py)."""
from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from serving.core.registry import ModelRegistry, Servable, State
from serving.core.sources import LocalSource, select_versions
from serving.errors import InvalidArgument, NotFound
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
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: canary"):
        registry.resolve("m", label="canary")  # TF Serving: INVALID_ARGUMENT
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


# -- failed loads are retried as TF Serving's LoaderHarness does ---------------------------


@pytest.fixture
def one_version(tfserving_dir, tmp_path):
    """(base path, the good saved_model.pb bytes) of a model whose one version, 123, is corrupt."""
    base = tmp_path / "m"
    shutil.copytree(tfserving_dir / "saved_model_half_plus_two_2_versions" / "00000123", base / "00000123")
    graph = base / "00000123" / "saved_model.pb"
    good = graph.read_bytes()
    graph.write_bytes(b"garbage")
    return base, good


class Intervals:
    """The registry's ``sleep``: records each retry interval and the version's status at that
    moment, runs ``between`` (a fix, a config change), and returns at once."""

    def __init__(self, registry_status, between=lambda: None) -> None:
        self.status, self.between = registry_status, between
        self.seen: list[tuple[float, State, str]] = []

    async def __call__(self, seconds: float) -> None:
        servable = self.status()
        self.seen.append((seconds, servable.state, servable.error))
        self.between()


async def load_and_finish_retries(registry: ModelRegistry, version: int) -> Servable:
    await registry.load_all()
    servable = registry.statuses("m", version)[0]
    if servable.retry is not None:
        await servable.retry
    return servable


def test_a_version_fixed_between_retries_becomes_available(one_version):
    base, good = one_version
    registry: ModelRegistry

    def fix() -> None:
        (base / "00000123" / "saved_model.pb").write_bytes(good)

    intervals = Intervals(lambda: registry.statuses("m", 123)[0], fix)
    registry = ModelRegistry([config(base)], batcher_factory=None, source=LocalSource((1,)),
                             load_retries=5, load_retry_interval_s=60.0, sleep=intervals)
    servable = asyncio.run(load_and_finish_retries(registry, 123))
    # One failure, one interval during which the status showed LOADING with the error, then loaded.
    [(seconds, state, error)] = intervals.seen
    assert seconds == 60.0 and state is State.LOADING and "Failed to load" in error
    assert servable.attempts == 2 and servable.state is State.AVAILABLE and servable.error == ""
    assert registry.resolve("m").version == 123 and registry.ready()


def test_a_version_that_never_loads_ends_with_its_error_after_the_configured_retries(one_version):
    base, _ = one_version
    registry: ModelRegistry
    intervals = Intervals(lambda: registry.statuses("m", 123)[0])
    registry = ModelRegistry([config(base)], batcher_factory=None, source=LocalSource((1,)),
                             load_retries=3, load_retry_interval_s=0.25, sleep=intervals)
    servable = asyncio.run(load_and_finish_retries(registry, 123))
    assert servable.attempts == 4  # the first attempt and 3 retries (TF Serving's count)
    assert [(s, state) for s, state, _ in intervals.seen] == [(0.25, State.LOADING)] * 3
    assert all("Failed to load" in error for _, _, error in intervals.seen)
    assert servable.state is State.END and "Failed to load" in servable.error
    assert not registry.ready()
    asyncio.run(registry.reconcile([config(base)]))  # still selected: not tried again
    assert registry.statuses("m", 123)[0] is servable and servable.attempts == 4


def test_no_retries_configured_means_one_attempt(one_version):
    base, _ = one_version
    registry = ModelRegistry([config(base)], batcher_factory=None, source=LocalSource((1,)))
    servable = asyncio.run(load_and_finish_retries(registry, 123))
    assert servable.attempts == 1 and servable.state is State.END and servable.retry is None


def test_retries_stop_when_the_version_is_no_longer_selected_and_it_loads_afresh_when_back(one_version):
    base, good = one_version

    async def scenario():
        held = asyncio.Event()
        registry = ModelRegistry([config(base)], batcher_factory=None, source=LocalSource((1,)),
                                 load_retries=5, load_retry_interval_s=60.0,
                                 sleep=lambda _: held.wait())  # the interval never ends by itself
        await registry.load_all()
        servable = registry.statuses("m", 123)[0]
        retry = servable.retry
        assert servable.state is State.LOADING and retry is not None
        (base / "00000123").rename(base.parent / "away")  # no longer selected
        await registry.reconcile([config(base)])
        await asyncio.gather(retry, return_exceptions=True)
        assert servable.state is State.END and "Failed to load" in servable.error  # TF Serving: cancelled
        assert servable.attempts == 1
        await registry.reconcile([config(base)])  # failed and gone: forgotten
        with pytest.raises(NotFound):
            registry.statuses("m", 123)
        (base.parent / "away" / "saved_model.pb").write_bytes(good)
        (base.parent / "away").rename(base / "00000123")  # back, fixed: loaded afresh
        await registry.reconcile([config(base)])
        again = registry.statuses("m", 123)[0]
        assert again is not servable and again.state is State.AVAILABLE and again.attempts == 1

    asyncio.run(scenario())


def test_the_old_version_serves_until_a_retry_loads_the_new_one(tfserving_dir, tmp_path):
    base = tmp_path / "m"
    source = tfserving_dir / "saved_model_half_plus_two_2_versions"
    shutil.copytree(source / "00000123", base / "00000123")
    fixed = (source / "00000124" / "saved_model.pb").read_bytes()

    async def scenario():
        interval_over = asyncio.Event()

        async def interval(_: float) -> None:  # ends when the test says, with 124 fixed
            await interval_over.wait()
            (base / "00000124" / "saved_model.pb").write_bytes(fixed)

        registry = ModelRegistry([config(base)], batcher_factory=None, source=LocalSource((1,)),
                                 load_retries=5, load_retry_interval_s=1.0, sleep=interval)
        await registry.load_all()
        shutil.copytree(source / "00000124", tmp_path / "staging")
        (tmp_path / "staging" / "saved_model.pb").write_bytes(b"garbage")
        (tmp_path / "staging").rename(base / "00000124")
        await registry.reconcile([config(base)])  # 124 fails: 123, no longer selected, keeps serving
        new = registry.statuses("m", 124)[0]
        assert new.state is State.LOADING and registry.resolve("m").version == 123
        interval_over.set()
        await new.retry  # the interval fixed it; the retry loads it
        assert new.state is State.AVAILABLE and registry.resolve("m").version == 124
        assert registry.statuses("m", 123)[0].state is State.END  # replaced once 124 loaded

    asyncio.run(scenario())


def test_an_unloaded_version_is_closed(models_dir, tmp_path):
    """A version whose first live calls are being gathered stops gathering when unloaded:
    calls made on it afterwards start no comparison (serving/runtime/live.py)."""
    base = tmp_path / "m"
    shutil.copytree(models_dir / "shapes" / "vec16" / "1", base / "1")
    registry = ModelRegistry([config(base)], batcher_factory=None, source=LocalSource((1,), live_calls=2))
    load(registry)
    model = registry.resolve("m").model
    assert model.choice.pending
    asyncio.run(registry.unload_all())
    assert model._observer is None  # closed: its calls are no longer recorded
    for _ in range(3):
        model.run("serving_default", {"x": np.ones((1, 16), np.float32)})
    assert model.choice.pending  # no comparison started


def test_a_version_poll_during_an_unload_does_not_bring_the_model_back(two_versions, tmp_path):
    """The version poll reconciles the models configured when it gets the registry's lock, not
    those it saw when it woke: a poll that waited behind an unload (here a batcher still
    answering what it accepted) must not load the removed model again. Passing the snapshot
    taken during the drain, ``reconcile(tuple(registry.configs.values()))``, brings it back."""
    other = tmp_path / "n"
    shutil.copytree(two_versions, other)
    kept = config(two_versions)
    registry = ModelRegistry([kept, ModelConfig(name="n", base_path=str(other))], batcher_factory=None,
                             source=LocalSource((1,)))
    load(registry)

    class Draining:  # a fault: the batcher of the model being removed has requests to answer
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def drain(self) -> None:
            await self.release.wait()

    async def scenario() -> None:
        draining = Draining()
        servable = registry.resolve("n")
        servable.batchers["serving_default"] = draining
        unload = asyncio.create_task(registry.reconcile([kept]))
        for _ in range(1000):  # yields until the unload is draining (no timing involved)
            if servable.state is State.UNLOADING:
                break
            await asyncio.sleep(0)
        assert servable.state is State.UNLOADING and "n" in registry.configs
        poll = asyncio.create_task(registry.reconcile())  # what the version poll calls
        await asyncio.sleep(0)
        draining.release.set()
        await asyncio.gather(unload, poll)
        assert list(registry.configs) == ["m"] and not registry.model_ready("n")

    asyncio.run(scenario())
