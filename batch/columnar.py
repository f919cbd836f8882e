"""Rows in columnar blocks: decode JSON-lines blocks and Parquet tables column-wise, and
format output lines by splicing the outputs into each input row's JSON text.

Per row, Python does almost nothing: pyarrow parses a block into columns, numpy converts
them, and output lines are byte concatenations. A block the fast path cannot take whole
(a malformed line, a missing field, a null, a wrong type) is decoded row by row instead,
so each bad row is refused with its own reason.
"""
from __future__ import annotations

import io
from collections.abc import Iterable
from itertools import islice
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pa_json

from batch.chunks import Chunk, rows_to_chunk
from serving.runtime.signature import SignatureSpec

Refused = list[tuple[Any, str]]


def read_blocks(handle: io.BufferedIOBase, lines_per_block: int) -> Iterable[list[bytes]]:
    """Non-blank lines of a file, ``lines_per_block`` at a time."""
    lines = (line for line in handle if line.strip())
    while block := list(islice(lines, lines_per_block)):
        yield block


def decode_block(lines: list[bytes], spec: SignatureSpec, key_field: str | None) -> tuple[Chunk, Refused]:
    """A block of JSON lines -> a Chunk carrying each raw line, and the refused lines."""
    chunk = _decode_json_columnar(lines, spec, key_field)
    if chunk is not None:
        return chunk, []
    rows: list[Any] = []
    refused: Refused = []
    parsed: list[bytes] = []
    for line in lines:
        try:
            rows.append(orjson.loads(line))
            parsed.append(line)
        except orjson.JSONDecodeError as error:
            refused.append((line, f"not JSON: {error}"))
    chunk, bad = rows_to_chunk(rows, spec, key_field, passthrough=parsed)
    return chunk, refused + bad


def decode_table(table: pa.Table, spec: SignatureSpec, key_field: str | None) -> tuple[Chunk, Refused]:
    """A Parquet row group -> a Chunk carrying each row as a dict, and the refused rows."""
    rows = table.to_pylist()
    chunk = _decode_columnar(table, rows, spec, key_field)
    if chunk is not None:
        return chunk, []
    return rows_to_chunk(rows, spec, key_field)


def _decode_json_columnar(lines: list[bytes], spec: SignatureSpec, key_field: str | None) -> Chunk | None:
    text = b"".join(lines)
    if not text.endswith(b"\n"):
        text += b"\n"
    try:
        table = pa_json.read_json(io.BytesIO(text))
    except pa.ArrowInvalid:
        return None
    if table.num_rows != len(lines):
        return None
    return _decode_columnar(table, lines, spec, key_field)


def _decode_columnar(table: pa.Table, passthrough: list[Any], spec: SignatureSpec,
                     key_field: str | None) -> Chunk | None:
    tensors = {}
    for name, tensor in spec.inputs.items():
        if name not in table.column_names or (tensor.shape is not None and len(tensor.shape) > 1):
            return None
        column = table.column(name)
        if column.null_count:
            return None
        if tensor.is_string:
            if not pa.types.is_string(column.type):
                return None
            tensors[name] = column.to_numpy(zero_copy_only=False).astype(object)
        else:
            if not (pa.types.is_integer(column.type) or (pa.types.is_floating(column.type)
                                                         and tensor.dtype.kind == "f")):
                return None
            tensors[name] = column.to_numpy().astype(tensor.dtype)
    keys = None
    if key_field:
        if key_field not in table.column_names or table.column(key_field).null_count:
            return None
        keys = table.column(key_field).to_pylist()
    return Chunk(tensors, passthrough, keys)


def format_lines(chunk: Chunk, rows: list[int], outputs: dict[str, np.ndarray], model_version: int,
                 key_field: str | None) -> list[bytes]:
    """Output lines for ``rows`` of ``chunk``: the key (or the input object), then the outputs."""
    labels = [b',"%s":' % name.encode() for name in outputs]
    columns = [_json_values(values) for values in outputs.values()]
    suffix = b',"model_version":%d}' % model_version
    if len(columns) == 1:
        label = labels[0]
        tails = [label + value + suffix for value in columns[0]]
    else:
        tails = [b"".join(part for pair in zip(labels, values) for part in pair) + suffix
                 for values in zip(*columns)]
    if key_field:
        prefix = b'{"%s":' % key_field.encode()
        return [prefix + orjson.dumps(chunk.keys[row]) + tail for row, tail in zip(rows, tails)]
    lines = []
    for row, tail in zip(rows, tails):
        carried = chunk.passthrough[row]
        text = carried if isinstance(carried, bytes) else orjson.dumps(carried, default=str)
        body = text.rstrip()[:-1].rstrip()  # the object without its closing brace
        lines.append(body + (tail[1:] if body.endswith(b"{") else tail))
    return lines


def _json_values(values: np.ndarray) -> list[bytes]:
    """Each row's JSON text; one orjson call for a 1-D numeric column."""
    if values.ndim == 1 and values.dtype.kind in "fiub":
        text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
        return text.split(b",") if text else []
    return [orjson.dumps(_plain(value), option=orjson.OPT_SERIALIZE_NUMPY) for value in values]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_plain(v) for v in value]
    return value
