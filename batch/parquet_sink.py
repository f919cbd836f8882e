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
    """The rows that ran: their key (or input columns), the outputs, the model version."""
    chunk, rows = result.chunk, result.ok_rows
    assert result.outputs is not None
    if key_field:
        columns: dict[str, Any] = {key_field: pa.array([chunk.keys[row] for row in rows])}
    else:
        carried = [chunk.passthrough[row] for row in rows]
        dicts = [orjson.loads(c) if isinstance(c, bytes) else c for c in carried]
        columns = {name: pa.array([d.get(name) for d in dicts]) for name in dicts[0]}
    for name, values in result.outputs.items():
        columns[name] = pa.array(list(values) if values.ndim > 1 else values)
    columns["model_version"] = pa.array(np.full(len(rows), result.model_version, dtype=np.int64))
    return pa.table(columns)
