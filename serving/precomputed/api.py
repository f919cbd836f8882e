"""What every prediction store offers, and how it fails.

A store holds one row's encoded outputs (``serving.precomputed.codec``) under (model name,
model version, key): batch jobs write it, the gateway reads it and answers from it. Each
call is one round trip and fails fast, so a reader can always fall back to the model:

    StoreError              the store failed; a reader falls back to the model
    ├── StoreUnavailable    down, unreachable, locked or slower than ``timeout_s``
    └── CorruptEntry        a stored value that does not decode (codec)
    BadStoreUrl             a store URL that cannot be used (a ValueError: refused at start)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

LOOKUP_TIMEOUT_S = 0.1
"""For a gateway's lookups: a batch of 64 keys costs about 0.4-0.8 ms of CPU on either store
(tests/precomputed/bench_lookups.py), a few ms of wall time on a busy machine, plus a
network round trip to Memorystore; a store 100x slower than that is broken, and the model
is the better answer."""
WRITE_TIMEOUT_S = 10.0
"""For a batch job's writes: a batch of rows may be megabytes, and a job would rather wait
than fail."""


class StoreError(Exception):
    """The store could not do what was asked (any backend's error, translated)."""


class StoreUnavailable(StoreError):
    """The store is down, unreachable, busy or did not answer within ``timeout_s``."""


class CorruptEntry(StoreError):
    """A stored value is not an encoded row."""


class BadStoreUrl(ValueError):
    """A store URL that does not parse or names something we cannot use."""


class PredictionStore(Protocol):
    """Precomputed rows under (model, version, key); thread-safe; every call one round trip.

    ``model`` is a non-empty name, ``version`` an int >= 0 and keys come from
    ``serving.precomputed.keys.store_key``. Entries of one version are never seen under
    another. Errors are ``StoreError``s, raised within about ``timeout_s`` (per network
    step: connecting, then answering), never a hang.
    """

    def get_many(self, model: str, version: int, keys: Sequence[str]) -> list[bytes | None]:
        """The value of each key, in the keys' order; None where there is none."""
        ...

    def put_many(self, model: str, version: int, items: Sequence[tuple[str, bytes]]) -> None:
        """Store every (key, value), replacing what the keys held (a rerun overwrites)."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def check_entry(model: str, version: int) -> None:
    """The (model, version) a store call names is one it can hold apart from all others."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"A model name must be a non-empty string, got {model!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"A model version must be an int >= 0, got {version!r}")
