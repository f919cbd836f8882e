"""Writing enriched rows as Parquet: one pyarrow table per chunk, appended to the shard.

The schema is taken from the first table a shard receives, so nothing about the input's
columns has to be known when the job is built.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio

from batch.chunks import ChunkResult
from batch.columnar import TableRows


class ParquetSink(fileio.FileSink):
    """A Beam FileSink of pyarrow tables."""

    def __init__(self) -> None:
        self._writer: pq.ParquetWriter | None = None
        self._handle: Any = None

    def open(self, fh: Any) -> None:
        self._handle = fh
        self._writer = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._handle, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def result_table(result: ChunkResult, key_field: str | None) -> pa.Table:
    """The rows that ran: their key (or input columns), the outputs, the model version;
    built a column at a time."""
    chunk, rows = result.chunk, result.ok_rows
    assert result.outputs is not None
    everything = len(rows) == len(chunk)
    selected = pa.array(np.asarray(rows, dtype=np.int64))
    if key_field:
        keys = chunk.keys
        assert keys is not None
        if isinstance(keys, np.ndarray):
            columns: dict[str, Any] = {key_field: pa.array(keys if everything else keys[np.asarray(rows)])}
        else:
            columns = {key_field: pa.array([keys[row] for row in rows])}
    elif isinstance(chunk.passthrough, TableRows):
        table = chunk.passthrough.table if everything else chunk.passthrough.table.take(selected)
        columns = dict(zip(table.column_names, table.columns))
    else:
        carried = [chunk.passthrough[row] for row in rows]
        dicts = [orjson.loads(c) if isinstance(c, bytes) else c for c in carried]
        columns = {name: pa.array([d.get(name) for d in dicts]) for name in dicts[0]}
    for name, values in result.outputs.items():
        columns[name] = _arrow(values)
    columns["model_version"] = pa.array(np.full(len(rows), result.model_version, dtype=np.int64))
    return pa.table(columns)


def _arrow(values: np.ndarray) -> pa.Array:
    """An output column: a list column per extra dimension, built from the flat values."""
    if values.ndim <= 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        offsets = pa.array(np.arange(0, len(flat) + 1, size, dtype=np.int32))
        flat = pa.ListArray.from_arrays(offsets, flat)
    return flat
