"""The batch job's second output: each row's model outputs in a prediction store
(``serving.precomputed``), under (model name, the version that ran, the row's key), for the
gateway to answer from.

    ChunkResult -> its ok rows' keys (``keys.store_key``) -> ONE ``put_many`` of their
    outputs (``codec.encode_rows``) -> the ChunkResult on to the file output, without the
    rows whose key cannot be a store key (those go to the dead letters, each alone)

One round trip per chunk (``--chunk_rows`` rows), never one per row. A rerun writes the same
entries again (a put replaces), so nothing is duplicated; a new model version writes beside
the old one, whose entries no gateway serving the new version reads.

Choices:

- **A bad key** (null, a float, a bool, a list: ``store_key`` refuses it; a row without the
  key field is refused when decoded) sends the row to the dead letters alone, with the
  reason, and keeps it out of the file output too: the store and the file then hold the
  same rows, every row is counted once (``rows_in = rows_written + rows_dead_lettered``, and
  ``rows_stored == rows_written``), and fixing the key and rerunning puts the row in both.
  Column-wise decoding reads a JSON column of integer keys as floats when one row of the
  block holds a float, and date-like string keys as timestamps; a key refused that way is
  read again from the row as it was read, so only the odd row is refused.
- **A store that fails** raises, naming the store: Beam retries the bundle (Dataflow retries
  a batch bundle 4 times; a put is idempotent, so a retry is safe) and fails the job if the
  store stays down. Nothing is lost, and the job does not end "successfully" with a store
  missing rows; dead-lettering instead would file good predictions as errors and leave the
  store's gaps for readers to find. A failed run leaves no final output files (Beam
  finalises them only on success) and the store with the chunks written before the
  failure; a rerun overwrites those and is the whole remedy.
- **The store is opened in ``setup``**, on the worker, never when the job is built: building
  a Dataflow job connects to nothing.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
import orjson
from apache_beam.metrics import Metrics

from batch.chunks import DEAD_LETTER, ChunkResult
from serving.errors import InvalidArgument
from serving.precomputed import open_store
from serving.precomputed.api import WRITE_TIMEOUT_S, PredictionStore, StoreError
from serving.precomputed.codec import encode_rows
from serving.precomputed.keys import store_key


class WriteToStore(beam.DoFn):
    """ChunkResults -> their ok rows in the store; the results on (main output), rows with
    bad keys -> dead letters, as (row, reason). Counts ``rows_stored`` in ``namespace``."""

    def __init__(self, url: str, model_name: str, key_field: str, namespace: str) -> None:
        self._url = url
        self._model = model_name
        self._key_field = key_field
        self._store: PredictionStore | None = None
        self._stored = Metrics.counter(namespace, "rows_stored")

    def setup(self) -> None:
        self._store = open_store(self._url, timeout_s=WRITE_TIMEOUT_S)

    def teardown(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def process(self, result: ChunkResult) -> Iterable[Any]:
        if result.outputs is None or not result.ok_rows:
            yield result
            return
        assert self._store is not None
        keys, refused = store_keys(result, self._key_field)
        items = [(key, value) for key, value in zip(keys, encode_rows(result.outputs)) if key is not None]
        try:
            self._store.put_many(self._model, result.model_version, items)
        except StoreError as error:  # raised on: Beam retries the bundle, then fails the job
            raise type(error)(f"Could not store {len(items)} rows of model '{self._model}' version "
                              f"{result.model_version}: {error}") from error
        self._stored.inc(len(items))
        for position, reason in refused:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (result.chunk.passthrough[result.ok_rows[position]], reason))
        yield result.without([position for position, _ in refused]) if refused else result


def store_keys(result: ChunkResult, field: str) -> tuple[list[str | None], list[tuple[int, str]]]:
    """Each ok row's store key (None for a row that has none), and (position in ``ok_rows``,
    reason) for those rows."""
    chunk = result.chunk
    assert chunk.keys is not None, "a job that writes a store decodes each row's key"
    decoded = chunk.keys.tolist() if isinstance(chunk.keys, np.ndarray) else chunk.keys
    keys: list[str | None] = []
    refused: list[tuple[int, str]] = []
    for position, row in enumerate(result.ok_rows):
        try:
            keys.append(store_key(decoded[row], field))
        except InvalidArgument as error:
            key, reason = _key_as_read(chunk.passthrough[row], field, error)
            keys.append(key)
            if key is None:
                refused.append((position, f"not stored: {reason}"))
    return keys, refused


def _key_as_read(row: Any, field: str, error: InvalidArgument) -> tuple[str | None, str]:
    """The store key of ``row`` as it was read (a JSON line, or a dict), for a key the
    column-wise decoding may have changed; (None, why) if that is no key either."""
    if isinstance(row, bytes):
        try:
            row = orjson.loads(row)
        except orjson.JSONDecodeError:
            return None, error.message
    if not isinstance(row, dict) or field not in row:
        return None, error.message
    try:
        return store_key(row[field], field), ""
    except InvalidArgument as again:
        return None, again.message

