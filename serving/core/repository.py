"""The Open Inference Protocol's model repository extension (Triton's
``extension_model_repository``: index, load, unload), onto the path TF Serving's
HandleReloadConfigRequest takes: the same ``--enable_reload_config_api`` gate
(PermissionDenied), the same model-roots check, then ``InferenceService.reload`` of the
whole set with one model added, reloaded or removed, one change at a time.

A model to load is the configured one (a reload: its versions are read again), else the
folder ``<root>/<name>`` under the first model root that has it (Triton's repository layout;
``--model_roots`` or the default roots); a name is one path segment, checked before any path
is built. A new model none of whose versions loads is removed again and the load answers
FailedPrecondition with the version's error, so one bad load cannot leave the server
unready. Unloaded names stay in the index as UNAVAILABLE ("unloaded"). Polling
``--model_config_file`` replaces the set at its next read, as it does after
HandleReloadConfigRequest.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.core.registry import State
from serving.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from serving.model_roots import ModelRoots
from serving.settings import ModelConfig

if TYPE_CHECKING:
    from serving.core.service import InferenceService

_STATES = {State.START: "LOADING", State.LOADING: "LOADING", State.AVAILABLE: "READY",
           State.UNLOADING: "UNLOADING", State.END: "UNAVAILABLE"}
"""TF Serving's version states by the names Triton's index uses."""
READY = "READY"


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index: a model version, or a model with no version."""

    name: str
    version: str | None
    state: str
    reason: str


class Repository:
    """Index, load and unload, serialised (one change at a time)."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service
        self._lock = asyncio.Lock()
        self._unloaded: set[str] = set()

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every configured model's versions (a model with none yet: one row, its error if
        any), and the models unloaded here; READY rows only if ``ready_only``."""
        registry = self._service.registry
        entries = []
        for name in sorted(registry.configs):
            try:
                entries += [IndexEntry(name, str(s.version), _STATES[s.state], s.error)
                            for s in registry.statuses(name)]
            except NotFound as error:
                entries.append(IndexEntry(name, None, "UNAVAILABLE", error.message))
        entries += [IndexEntry(name, None, "UNAVAILABLE", "unloaded")
                    for name in sorted(self._unloaded - set(registry.configs))]
        return [e for e in entries if e.state == READY] if ready_only else entries

    async def load(self, name: str) -> None:
        """Serve ``name`` (again): see the module's docstring."""
        self._gate("RepositoryModelLoad")
        _check_name(name)
        async with self._lock:
            registry = self._service.registry
            current = dict(registry.configs)
            config = current.get(name) or self._found(name)
            ModelRoots.from_settings(self._service.settings).check([config], "RepositoryModelLoad")
            await self._service.reload(tuple({**current, name: config}.values()))
            self._unloaded.discard(name)
            if name not in current and not registry.model_ready(name):
                reason = "; ".join(e.reason for e in self.index() if e.name == name and e.reason) or "no version"
                await self._service.reload(tuple(current.values()))
                raise FailedPrecondition(f"failed to load model '{name}': {reason}")

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` (its accepted requests are answered first)."""
        self._gate("RepositoryModelUnload")
        async with self._lock:
            current = self._service.registry.configs
            if name not in current:
                raise NotFound(f"failed to unload model '{name}': it is not loaded")
            await self._service.reload(tuple(c for n, c in current.items() if n != name))
            self._unloaded.add(name)

    def _gate(self, what: str) -> None:
        if not self._service.settings.enable_reload_config_api:
            raise PermissionDenied(f"{what} is switched off on this server (--enable_reload_config_api=false)")

    def _found(self, name: str) -> ModelConfig:
        roots = ModelRoots.from_settings(self._service.settings).roots
        for root in roots:
            path = os.path.join(root, name)
            if "://" not in root and os.path.isdir(path):
                return ModelConfig(name=name, base_path=path)
        raise NotFound(f"failed to load model '{name}': no folder of that name in the model roots "
                       f"({', '.join(roots) or 'none'})")


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise InvalidArgument(f"Model name {name[:64]!r} must be one path segment")
