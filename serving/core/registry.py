"""The set of loaded model versions, and how requests select one.

Versions are discovered under each model's base path (numeric directories, TF Serving's
layout), filtered by the version policy, loaded and warmed up off the event loop, then
marked AVAILABLE. Requests select only among loaded versions by name, number or label:
nothing a client sends ever becomes part of a filesystem path or causes a load.

A failed load is retried as TF Serving's ``LoaderHarness::Load`` does: up to
``load_retries`` more attempts (``--max_num_load_retries``), ``load_retry_interval_s``
apart (``--load_retry_interval_micros``; negative: no wait). Meanwhile the version stays
LOADING and its status carries the last attempt's error; after the last failure it is END
with that error and is not tried again while its directory stays selected (TF Serving keeps
it in error too). Retries stop (END, with the last error) when the version is no longer
selected, TF Serving's ``cancel_load_retry``; a failed version that disappears and comes
back is loaded afresh. Retries run in a task of their own, so the registry's lock (config
reloads, version polling) is never held across the interval.
"""
from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from serving.batching.batcher import Batcher
from serving.core.sources import Model, ModelSource
from serving.errors import InvalidArgument, NotFound, ServingError
from serving.logs import RecurringErrors
from serving.settings import ModelConfig

log = logging.getLogger(__name__)


class State(enum.Enum):
    """TF Serving's ModelVersionStatus.State names."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


BatcherFactory = Callable[["Servable", str], Batcher]


@dataclass
class Servable:
    """One version of one model, from discovery to unload."""

    name: str
    version: int
    path: str  # where the source finds it: a directory, or the upstream's address
    state: State = State.START
    error: str = ""
    model: Model | None = None
    batchers: dict[str, Batcher] = field(default_factory=dict)
    attempts: int = 0  # load attempts made
    retry: asyncio.Task | None = None  # the pending load retries, while there are some


class ModelRegistry:
    """Loads the configured models and resolves requests to loaded versions."""

    def __init__(self, configs: Iterable[ModelConfig], batcher_factory: BatcherFactory,
                 source: ModelSource, *, load_retries: int = 0, load_retry_interval_s: float = 0.0,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 on_retry_loaded: Callable[[], None] = lambda: None,
                 recurring: RecurringErrors | None = None) -> None:
        """``load_retries`` more attempts after a failed load, ``load_retry_interval_s``
        apart; ``sleep`` waits out that interval (tests pass their own); ``on_retry_loaded``
        runs when a retry loaded a version (outside ``reconcile``, which reports changes);
        ``recurring`` logs what each poll finds wrong again (tests pass one with their clock)."""
        if load_retries < 0:
            raise ValueError("load_retries must be >= 0")
        self.configs = {config.name: config for config in configs}
        self._batcher_factory = batcher_factory
        self._source = source
        self._load_retries = load_retries
        self._retry_interval = max(0.0, load_retry_interval_s)
        self._sleep = sleep
        self._on_retry_loaded = on_retry_loaded
        self._versions: dict[str, dict[int, Servable]] = {name: {} for name in self.configs}
        self._errors: dict[str, str] = {}
        self._recurring = recurring or RecurringErrors(log)
        self._lock = asyncio.Lock()

    # -- loading and unloading ---------------------------------------------------------

    async def load_all(self) -> bool:
        return await self.reconcile(tuple(self.configs.values()))

    async def reconcile(self, configs: Iterable[ModelConfig] | None = None) -> bool:
        """Make the served set match ``configs`` and what is on disk; True if it changed.

        New models and newly selected versions are loaded and warmed before versions that
        are no longer selected are unloaded (TF Serving's availability-preserving policy),
        and an unloaded version first answers every request it had accepted. Removed models
        are unloaded. A version that fails to load is reported and the rest keep serving.
        ``None`` (version polling): the models configured when the lock is taken, so a poll
        that waited for a reload or an unload to finish never undoes it with what it saw before.
        """
        async with self._lock:
            wanted = {config.name: config for config in (self.configs.values() if configs is None else configs)}
            changed = False
            for name in [n for n in self.configs if n not in wanted]:
                log.info("model %s removed from the config: unloading", name)
                await self._unload(list(self._versions[name].values()))
                del self.configs[name], self._versions[name]
                changed = True
            for name, config in wanted.items():
                changed |= self.configs.get(name) != config
                self.configs[name] = config
                self._versions.setdefault(name, {})
            results = await asyncio.gather(*(self._sync_model(c) for c in wanted.values()))
            return changed or any(results)

    async def _sync_model(self, config: ModelConfig) -> bool:
        name = config.name
        try:
            selected = await asyncio.to_thread(self._source.versions, config)
        except (OSError, ServingError) as error:
            self._errors[name] = f"Could not list the versions in {self._source.where(config)}: {error}"
            await self._report((name, "versions"), config, self._errors[name])
            return False
        self._errors.pop(name, None)
        if not selected and not self._versions[name]:
            self._errors[name] = f"No versions of model {name} found under {self._source.where(config)}"
            await self._report((name, "versions"), config, self._errors[name])
        else:
            self._recurring.clear((name, "versions"))
        versions = self._versions[name]
        missing = set(config.version_policy.versions) - set(selected)
        if config.version_policy.kind == "specific" and missing:
            self._recurring.error((name, "specific"), f"model {name}: specific versions {sorted(missing)} not found")
        else:
            self._recurring.clear((name, "specific"))
        new = [Servable(config.name, v, location)
               for v, location in selected.items()
               if v not in versions or (versions[v].state is State.END and not versions[v].error)]
        for servable in new:
            versions[servable.version] = servable
        for version, servable in list(versions.items()):
            if version in selected:
                continue
            if servable.retry is not None:  # TF Serving's cancel_load_retry
                servable.retry.cancel()
            elif servable.state is State.END and servable.error:
                del versions[version]  # failed and gone: tried afresh if it comes back
        await asyncio.gather(*(self._load_version(s) for s in new))
        stale = [s for v, s in versions.items() if v not in selected and s.state is State.AVAILABLE]
        if stale and not any(versions[v].state is State.AVAILABLE for v in selected if v in versions):
            log.error("model %s: no newly selected version is available; keeping %s serving",
                      config.name, [s.version for s in stale])
            stale = []
        await self._unload(stale)
        for label, version in config.version_labels.items():
            if self._available(name, version) is None:
                self._recurring.error((name, "label", label), f"model {name}: label '{label}' points at "
                                      f"version {version}, which is not loaded")
            else:
                self._recurring.clear((name, "label", label))
        return bool(new or stale)

    async def _report(self, key: tuple[str, str], config: ModelConfig, error: str) -> None:
        """Log a model's missing versions with what to check, once per change of the problem
        and then at growing intervals (it is found again at every poll). The hint lists the
        base path (maybe a bucket): it is asked only for a line that is logged, in a thread."""
        def hint() -> str:
            text = self._source.hint(config)
            return f". Hint: {text}" if text else ""

        await asyncio.to_thread(self._recurring.error, key, f"model {config.name}: {error}", hint)

    async def _load_version(self, servable: Servable) -> None:
        servable.state = State.LOADING
        if await self._attempt_load(servable):
            return
        if self._load_retries:
            servable.retry = asyncio.create_task(self._retry_load(servable))
        else:
            servable.state = State.END

    async def _attempt_load(self, servable: Servable) -> bool:
        """One load attempt; on failure the version keeps LOADING with the error."""
        servable.attempts += 1
        log.info("loading %s version %d from %s (attempt %d of %d)", servable.name,
                 servable.version, servable.path, servable.attempts, self._load_retries + 1)
        try:
            servable.model = await asyncio.to_thread(
                self._source.load, servable.name, servable.version, servable.path)
        except Exception as error:  # noqa: BLE001 - a bad version must not take the server down
            servable.error = f"Failed to load {servable.path}: {error}"
            servable.model = None
            log.error("%s (attempt %d of %d)", servable.error, servable.attempts, self._load_retries + 1)
            return False
        servable.error = ""
        servable.state = State.AVAILABLE
        log.info("%s version %d AVAILABLE", servable.name, servable.version)
        return True

    async def _retry_load(self, servable: Servable) -> None:
        """The remaining attempts, ``load_retry_interval_s`` apart, off the registry's lock."""
        try:
            while servable.attempts <= self._load_retries:
                await self._sleep(self._retry_interval)
                if await self._attempt_load(servable):
                    servable.retry = None
                    await self._resync(servable.name)  # unload what the new version replaces
                    self._on_retry_loaded()
                    return
            log.error("%s version %d: giving up after %d load attempts",
                      servable.name, servable.version, servable.attempts)
        except asyncio.CancelledError:
            log.info("%s version %d: load retries cancelled", servable.name, servable.version)
        finally:
            if servable.retry is not None:
                servable.retry = None
                servable.state = State.END

    async def _resync(self, name: str) -> None:
        async with self._lock:
            config = self.configs.get(name)
            if config is not None:
                await self._sync_model(config)

    async def _unload(self, servables: list[Servable]) -> None:
        """Stop routing to these versions, answer what they accepted, then drop them."""
        for servable in servables:
            if servable.retry is not None:
                servable.retry.cancel()
            servable.state = State.UNLOADING
        for servable in servables:
            await asyncio.gather(*(b.drain() for b in servable.batchers.values()))
            servable.batchers.clear()
            if servable.model is not None:
                servable.model.close()  # e.g. a live runner comparison still under way
            servable.model = None
            servable.state = State.END
            log.info("%s version %d unloaded", servable.name, servable.version)

    async def unload_all(self) -> None:
        await self._unload([s for versions in self._versions.values() for s in versions.values()
                            if s.state is not State.END])

    # -- selection -----------------------------------------------------------------------

    def ready(self) -> bool:
        """Every configured model has at least one AVAILABLE (hence warmed-up) version."""
        return bool(self.configs) and all(self.model_ready(name) for name in self.configs)

    def healthy(self) -> bool:
        """Whether the source can serve now (an upstream whose circuit is open cannot)."""
        return self._source.healthy()

    def model_ready(self, name: str) -> bool:
        return any(s.state is State.AVAILABLE for s in self._versions.get(name, {}).values())

    def requested(self, name: str, version: int | None = None, label: str | None = None) -> int | None:
        """The version a request names (``label`` looked up in the model's config), None for
        the newest: NotFound if the model is not configured (TF Serving's wording),
        InvalidArgument for an unknown label. Whether that version is AVAILABLE is not asked."""
        config = self.configs.get(name)
        if config is None:
            raise NotFound(f"Servable not found for request: {_describe(name, version, label)}")
        if label is None:
            return version
        if label not in config.version_labels:
            # TF Serving's ServerCore: INVALID_ARGUMENT (REST 400), not NOT_FOUND
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        return config.version_labels[label]

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The AVAILABLE servable a request asks for, or NotFound (TF Serving's wording)."""
        version = self.requested(name, version, label)
        if version is None:  # the newest AVAILABLE version: the common case, found in one pass
            latest = None
            for servable in self._versions[name].values():
                if servable.state is State.AVAILABLE and (latest is None or servable.version > latest.version):
                    latest = servable
            if latest is None:
                raise NotFound(f"Servable not found for request: {_describe(name, None, None)}")
            return latest
        servable = self._available(name, version)
        if servable is None:
            raise NotFound(f"Servable not found for request: {_describe(name, version, label)}")
        return servable

    def statuses(self, name: str, version: int | None = None) -> list[Servable]:
        """Every known version of a model (or the one asked for), for GetModelStatus."""
        if name not in self.configs:
            raise NotFound(f"Could not find any versions of model {name}")
        versions = self._versions[name]
        if version is not None:
            if version not in versions:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [versions[version]]
        if not versions:
            raise NotFound(self._errors.get(name, f"Could not find any versions of model {name}"))
        return [versions[v] for v in sorted(versions)]

    def available(self) -> list[Servable]:
        """Every AVAILABLE version of every model, by model name then version."""
        return [servable for name in sorted(self._versions) for _, servable in sorted(self._versions[name].items())
                if servable.state is State.AVAILABLE]

    def batcher(self, servable: Servable, signature_name: str) -> Batcher:
        batcher = servable.batchers.get(signature_name)
        if batcher is None:
            batcher = self._batcher_factory(servable, signature_name)
            batcher.start()
            servable.batchers[signature_name] = batcher
        return batcher

    def _available(self, name: str, version: int) -> Servable | None:
        servable = self._versions.get(name, {}).get(version)
        return servable if servable is not None and servable.state is State.AVAILABLE else None


def _describe(name: str, version: int | None, label: str | None) -> str:
    if label is not None:
        return f"Labeled({name}, {label})"
    if version is not None:
        return f"Specific({name}, {version})"
    return f"Latest({name})"
