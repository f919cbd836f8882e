"""Where model versions come from: SavedModels on disk, or a TF Serving upstream.

The registry asks a source which versions exist and to load one; everything else (states,
selection, unloading) is the registry's, whatever the source.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from serving.runtime import savedmodel, warmup
from serving.runtime.choice import SESSION, RunnerChoice
from serving.runtime.signature import SignatureSpec
from serving.runtime.versions import layout_hint, version_dirs
from serving.settings import ModelConfig

log = logging.getLogger(__name__)


class Model(Protocol):
    """A servable model version: signature specs and protos, a way to run them, and which
    runner runs them (``choice``)."""

    specs: dict[str, SignatureSpec]
    signature_defs: Mapping[str, Any]
    choice: RunnerChoice

    def signature(self, name: str) -> SignatureSpec: ...

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            deadline: float | None = None) -> dict[str, np.ndarray]: ...

    def close(self) -> None:
        """The version is unloaded (requests it accepted are answered): stop background work."""


class ModelSource(Protocol):
    """Blocking calls, made from worker threads."""

    def versions(self, config: ModelConfig) -> dict[int, str]:
        """Version number -> location of the versions ``config`` selects."""

    def load(self, name: str, version: int, location: str) -> Model:
        """Load (and warm up) one version."""

    def healthy(self) -> bool: ...

    def where(self, config: ModelConfig) -> str:
        """Where ``config``'s versions are looked for, for messages."""

    def hint(self, config: ModelConfig) -> str:
        """What to check when no version of ``config`` is found (may be empty), for the log."""


class LocalSource:
    """SavedModels under each model's base path (TF Serving's layout; local, ``gs://`` or
    ``s3://``: ``serving.runtime.storage``), loaded in process."""

    def __init__(self, warmup_batch_sizes: tuple[int, ...], tf2_session: bool = True, live_calls: int = 0,
                 on_moved: Callable[[], None] = lambda: None, direct_call: bool = True,
                 session_config: Any = None) -> None:
        """``tf2_session``, ``live_calls`` and ``direct_call`` (``tf_session_direct_call``): as
        the settings of those names (here
        ``live_calls`` defaults to 0, the runner chosen at load); ``on_moved`` runs (on a
        comparison's thread) when a version moved to a Session after its live calls;
        ``session_config``: every Session's ConfigProto (``serving.runtime.parallelism``)."""
        self._warmup_sizes = warmup_batch_sizes
        self._tf2_session = tf2_session
        self._live_calls = live_calls
        self._on_moved = on_moved
        self._direct_call = direct_call
        self._session_config = session_config

    def versions(self, config: ModelConfig) -> dict[int, str]:
        return select_versions(config)

    def load(self, name: str, version: int, location: str) -> Model:
        model = savedmodel.load(location, direct_call=self._direct_call, session_config=self._session_config)

        def settled(choice: RunnerChoice) -> None:
            log.info("%s version %d %s", name, version, choice)
            if choice.runner == SESSION:
                self._on_moved()

        count = warmup.run(model, self._warmup_sizes, self._tf2_session, self._live_calls, settled)
        log.info("%s version %d: %d warm-up requests; %s", name, version, count, model.choice)
        return model

    def healthy(self) -> bool:
        return True

    def where(self, config: ModelConfig) -> str:
        return config.base_path

    def hint(self, config: ModelConfig) -> str:
        return layout_hint(config.base_path)


def select_versions(config: ModelConfig) -> dict[int, str]:
    """Version number -> directory of the versions under the base path the policy selects."""
    found = version_dirs(config.base_path)
    numbers = sorted(found)
    policy = config.version_policy
    if policy.kind == "specific":
        numbers = [v for v in numbers if v in policy.versions]
    elif policy.kind == "latest":
        numbers = numbers[-policy.num_versions:]
    return {v: found[v] for v in numbers}
