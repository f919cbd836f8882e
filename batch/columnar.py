"""Rows in columnar blocks: decode blocks column-wise into Chunks, and format outputs
column-wise.

Per row, Python does almost nothing. pyarrow parses a block into a table (JSON lines here;
CSV and tf.Example in ``batch.records``); each input column becomes one numpy array (a
list column is flattened to one array and its offsets, each row's length checked against
the input's shape); output lines are spliced together from pieces serialised a column at
a time.

A bad row must still go to the dead letters alone, with its own reason:
- rows the columns can point at (a null, a list of the wrong length) are split out and
  decoded row by row (``batch.chunks.rows_to_chunk``), which gives the reason;
- a block that does not parse, or whose column has the wrong type, is decoded in halves
  until the rows at fault are isolated (a few extra parses of the block per bad row).
"""
from __future__ import annotations

import binascii
import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from batch.chunks import Chunk, rows_to_chunk
from serving.batching.rows import concat
from serving.runtime.signature import SignatureSpec, TensorSpec

Refused = list[tuple[Any, str]]
Decoded = tuple[Chunk, Refused]

ROW_BY_ROW_BELOW = 16
"""Blocks this small that fail column-wise are decoded row by row rather than halved again."""


class Lines(Sequence[bytes]):
    """Non-blank lines of a text, left in the text: where each starts and stops. pyarrow
    parses the text in place (``span``); a line becomes bytes of its own only when one is
    asked for (a dead letter, the whole input carried to the output)."""

    __slots__ = ("text", "starts", "stops")

    def __init__(self, text: bytes, starts: np.ndarray, stops: np.ndarray) -> None:
        self.text = text
        self.starts = starts
        self.stops = stops

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice) and index.step in (None, 1):
            return Lines(self.text, self.starts[index], self.stops[index])
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.text[self.starts[index]:self.stops[index]]

    def __iter__(self) -> Iterator[bytes]:
        text = self.text
        return (text[start:stop] for start, stop in zip(self.starts.tolist(), self.stops.tolist()))

    def span(self) -> memoryview:
        """The text from the first line to the last (blank lines between them included:
        JSON readers skip them)."""
        if not len(self):
            return memoryview(b"")
        return memoryview(self.text)[self.starts[0]:self.stops[-1]]

    def __reduce__(self) -> tuple[Any, ...]:
        first = self.starts[0] if len(self) else 0
        return Lines, (bytes(self.span()), self.starts - first, self.stops - first)


READ_BYTES = 1 << 20

_SPACE = np.zeros(256, bool)
_SPACE[list(b" \t\r\n\x0b\x0c")] = True
"""The bytes ``bytes.strip`` removes."""


def read_blocks(handle: io.BufferedIOBase, lines_per_block: int) -> Iterator[Lines]:
    """Non-blank lines of a file (without their newlines), ``lines_per_block`` at a time;
    read a megabyte at a time, lines found with numpy rather than split out one by one."""
    pieces: list[bytes] = []
    newlines = 0
    while True:
        data = handle.read(READ_BYTES)
        if data:
            pieces.append(data)
            newlines += data.count(b"\n")
            if newlines < lines_per_block:
                continue
        text = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        starts, stops, tail = _line_bounds(text, final=not data)
        whole = len(starts) - len(starts) % lines_per_block if data else len(starts)
        for first in range(0, whole, lines_per_block):
            yield Lines(text, starts[first:first + lines_per_block], stops[first:first + lines_per_block])
        if not data:
            return
        rest = text[starts[whole] if whole < len(starts) else tail:]
        pieces = [rest] if rest else []
        newlines = rest.count(b"\n")


def _line_bounds(text: bytes, final: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Where ``text``'s non-blank lines start and stop (newline excluded), and where its
    unfinished last line starts (taken as a line too if ``final``)."""
    codes = np.frombuffer(text, np.uint8)
    stops = np.flatnonzero(codes == ord("\n"))
    starts = np.concatenate(([0], stops + 1))
    tail = int(starts[-1])
    if final and tail < len(text):
        stops = np.append(stops, len(text))
    else:
        starts = starts[:-1]
    maybe_blank = np.flatnonzero((starts == stops) | _SPACE[codes[np.minimum(starts, max(len(text) - 1, 0))]])
    blank = [i for i in maybe_blank.tolist() if not text[starts[i]:stops[i]].strip()]
    if blank:
        keep = np.ones(len(starts), bool)
        keep[blank] = False
        starts, stops = starts[keep], stops[keep]
    return starts, stops, tail


# --- decoding ---------------------------------------------------------------------------------

def decode_block(lines: Sequence[bytes], spec: SignatureSpec, key_field: str | None) -> Decoded:
    """A block of JSON lines -> a Chunk carrying each raw line, and the refused lines."""
    def row_by_row(part: Sequence[bytes]) -> Decoded:
        return _json_rows(part, spec, key_field)

    return decode_in_halves(lines, from_table(_json_table, row_by_row, spec, key_field), row_by_row)


def decode_table(table: pa.Table, spec: SignatureSpec, key_field: str | None) -> Decoded:
    """A Parquet row group -> a Chunk carrying its rows (as dicts, made only if asked for),
    and the refused rows."""
    rows = TableRows(table)
    decoded = table_chunk(table, rows, spec, key_field, lambda bad: rows_to_chunk(rows.take(bad), spec, key_field),
                          strings_as="typed")
    if decoded is not None:
        return decoded
    return rows_to_chunk(list(rows), spec, key_field)


def decode_in_halves(records: Sequence[Any], columnar: Callable[[Sequence[Any]], Decoded | None],
                     row_by_row: Callable[[Sequence[Any]], Decoded]) -> Decoded:
    """``records`` decoded by ``columnar``; a part it cannot take (None) is halved until its
    bad records are isolated and decoded by ``row_by_row``."""
    decoded = columnar(records) if len(records) >= ROW_BY_ROW_BELOW else None
    if decoded is not None:
        return decoded
    if len(records) < ROW_BY_ROW_BELOW:
        return row_by_row(records)
    middle = len(records) // 2
    return merge([decode_in_halves(part, columnar, row_by_row) for part in (records[:middle], records[middle:])])


def from_table(to_table: Callable[[list[Any]], pa.Table | None], row_by_row: Callable[[list[Any]], Decoded],
               spec: SignatureSpec, key_field: str | None, strings_as: str = "typed",
               carry: Callable[[list[Any]], Sequence[Any]] = lambda records: records,
               ) -> Callable[[list[Any]], Decoded | None]:
    """A ``columnar`` decoder for ``decode_in_halves``: records -> a table (None: they do not
    parse) -> ``table_chunk``; each row carries ``carry(records)[i]``."""
    def columnar(records: list[Any]) -> Decoded | None:
        table = to_table(records)
        if table is None or table.num_rows != len(records):
            return None
        return table_chunk(table, carry(records), spec, key_field,
                           lambda bad: row_by_row([records[i] for i in bad]), strings_as)

    return columnar


def table_chunk(table: pa.Table, carried: Sequence[Any], spec: SignatureSpec, key_field: str | None,
                row_by_row: Callable[[list[int]], Decoded], strings_as: str = "typed") -> Decoded | None:
    """``table``'s rows as a Chunk (row i carries ``carried[i]``), the rows its columns
    point at as bad decoded by ``row_by_row`` (given their indices); None if a column as a
    whole cannot be used (missing, or of the wrong type).

    ``strings_as``: how list and bytes inputs are held in string columns: "text" (a JSON
    array; base64 for a ``_bytes`` input: CSV), or "typed" (in the column's own types).
    """
    names = [*spec.inputs, *([key_field] if key_field else [])]
    if any(name not in table.column_names for name in names):
        return None
    columns = {name: table.column(name).combine_chunks() for name in names}
    bad = np.zeros(table.num_rows, dtype=bool)
    for column in columns.values():
        if column.null_count:
            bad |= column.is_null().to_numpy(zero_copy_only=False)
    for name, tensor in spec.inputs.items():
        if _is_list(tensor):
            if strings_as == "text" and pa.types.is_string(columns[name].type):
                if columns[name].null_count:
                    return None
                columns[name] = _text_lists(columns[name], tensor)
                if columns[name] is None:
                    return None
            if not _is_list_type(columns[name].type):
                return None
            bad |= _wrong_lengths(columns[name], tensor)
    good = np.flatnonzero(~bad)
    if len(good) < table.num_rows:
        indices = pa.array(good)
        columns = {name: column.take(indices) for name, column in columns.items()}
    tensors = {}
    for name, tensor in spec.inputs.items():
        converted = _tensor(columns[name], tensor, strings_as)
        if converted is None:
            return None
        tensors[name] = converted
    keys = columns[key_field].to_numpy(zero_copy_only=False) if key_field else None
    chunk = Chunk(tensors, _take(carried, good, table.num_rows), keys)
    if len(good) == table.num_rows:
        return chunk, []
    return merge([(chunk, []), row_by_row(np.flatnonzero(bad).tolist())])


def merge(parts: Sequence[Decoded]) -> Decoded:
    """Decoded parts of one block -> one Chunk (rows in part order) and all refused rows."""
    chunks = [chunk for chunk, _ in parts if len(chunk)]
    refused = [row for _, bad in parts for row in bad]
    if len(chunks) == 1:
        return chunks[0], refused
    if not chunks:
        return parts[0][0], refused
    keys = None if chunks[0].keys is None else _joined([c.keys for c in chunks])
    return Chunk(concat([c.tensors for c in chunks]), _joined([c.passthrough for c in chunks]), keys), refused


def _joined(parts: list[Any]) -> Sequence[Any]:
    """Sequences of values one after the other, as a numpy array if they all are one."""
    if all(isinstance(p, np.ndarray) and p.dtype.kind in "iu" for p in parts):
        return np.concatenate(parts)
    if all(isinstance(p, TableRows) for p in parts):
        return TableRows(pa.concat_tables([p.table for p in parts]))
    return [value for part in parts for value in (part.tolist() if isinstance(part, np.ndarray) else part)]


def _json_table(lines: Sequence[bytes]) -> pa.Table | None:
    text = lines.span() if isinstance(lines, Lines) else b"\n".join(lines) + b"\n"
    try:
        return pa_json.read_json(pa.BufferReader(text))
    except pa.ArrowInvalid:
        return None


def _json_rows(lines: Sequence[bytes], spec: SignatureSpec, key_field: str | None) -> Decoded:
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


def _is_list(tensor: TensorSpec) -> bool:
    return tensor.shape is not None and len(tensor.shape) > 1


def _is_list_type(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


_FLAT_LIST = r"^\s*\[[^\[\]\"]*\]\s*$"
"""A JSON array of numbers (no nested array, no string)."""


def _text_lists(column: pa.Array, tensor: TensorSpec) -> pa.Array | None:
    """A column of JSON arrays as text (CSV cells of list inputs) -> a list column. Flat
    arrays of numbers are split and cast by pyarrow; anything else is parsed as JSON."""
    if tensor.is_string or not pc.all(pc.match_substring_regex(column, _FLAT_LIST)).as_py():
        return _parsed_json(column)
    parts = pc.split_pattern(pc.utf8_trim(column, "[] \t"), ",")
    try:
        numbers = pc.cast(pc.utf8_trim_whitespace(parts.flatten()), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return pa.ListArray.from_arrays(parts.offsets, numbers)


def _parsed_json(column: pa.Array) -> pa.Array | None:
    lines = pc.binary_join_element_wise('{"v":', column, "}\n", "")
    offsets = lines.offsets.to_numpy()
    text = lines.buffers()[2][offsets[0]:offsets[-1]]  # the lines, one after the other
    try:
        return pa_json.read_json(pa.BufferReader(text)).column("v").combine_chunks()
    except (pa.ArrowInvalid, KeyError):
        return None


def _wrong_lengths(column: pa.Array, tensor: TensorSpec) -> np.ndarray:
    """Rows whose list does not have the length the input's second dimension asks for
    (any length, if it is None: then the first row's)."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    assert tensor.shape is not None
    want = tensor.shape[1] if tensor.shape[1] is not None else (lengths[0] if len(lengths) else 0)
    return lengths != want


def _tensor(column: pa.Array, tensor: TensorSpec, strings_as: str) -> np.ndarray | None:
    """A column with no null and no wrong-length row -> the input's numpy array, or None if
    its type does not fit the input."""
    rows = len(column)
    row_shape: list[int] = []
    while _is_list_type(column.type):
        if len(row_shape) + 1 >= len(tensor.shape or ()):
            return None
        offsets = column.offsets.to_numpy() if not pa.types.is_fixed_size_list(column.type) else None
        length = column.type.list_size if offsets is None else (
            int(offsets[1] - offsets[0]) if len(column) else (tensor.shape[len(row_shape) + 1] or 0))
        if offsets is not None and len(column) and not (np.diff(offsets) == length).all():
            return None  # ragged below the first level: halve until the row is found
        row_shape.append(length)
        column = column.flatten()
        if column.null_count:
            return None
    if tensor.shape is not None and len(row_shape) != len(tensor.shape) - 1:
        return None
    if tensor.is_string:
        values = _strings(column, tensor, strings_as)
    elif pa.types.is_integer(column.type) or (pa.types.is_floating(column.type) and tensor.dtype.kind == "f"):
        values = column.to_numpy(zero_copy_only=False).astype(tensor.dtype, copy=False)
    else:
        return None
    if values is None:
        return None
    return values.reshape(rows, *row_shape) if row_shape else values


def _strings(column: pa.Array, tensor: TensorSpec, strings_as: str) -> np.ndarray | None:
    """A string input's values: text, raw bytes (Parquet), or bytes from base64 (JSON's
    ``{"b64": ...}``; CSV cells of ``_bytes`` inputs)."""
    if pa.types.is_struct(column.type) and column.type.num_fields == 1 and column.type.field(0).name == "b64":
        return _from_base64(column.field(0))
    if strings_as == "text" and tensor.name.endswith("_bytes") and pa.types.is_string(column.type):
        return _from_base64(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_binary(
            column.type) or pa.types.is_large_binary(column.type):
        return column.to_numpy(zero_copy_only=False).astype(object, copy=False)
    return None


def _from_base64(column: pa.Array) -> np.ndarray | None:
    if not pa.types.is_string(column.type) or column.null_count:
        return None
    try:
        return np.array([binascii.a2b_base64(text, strict_mode=True) for text in column.to_pylist()], dtype=object)
    except binascii.Error:
        return None


class ParsedOnDemand(Sequence[Any]):
    """Records (CSV lines, tf.Examples) that read as row dicts, parsed only for the rows that
    need it (dead letters, the whole input carried to the output)."""

    def __init__(self, records: list[Any], parse: Callable[[Any], dict[str, Any]]) -> None:
        self._records = records
        self._parse = parse

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._parse(record) for record in self._records[index]]
        return self._parse(self._records[index])


class TableRows(Sequence[dict[str, Any]]):
    """A table's rows as dicts, made only for the rows that need them (dead letters, the
    whole input carried to a JSON output)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.take(range(*index.indices(len(self))))
        return self.table.slice(index, 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.table.to_pylist())

    def take(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        return self.table.take(pa.array(list(indices), pa.int64())).to_pylist()


# --- formatting -------------------------------------------------------------------------------

def format_text(chunk: Chunk, rows: Sequence[int], outputs: dict[str, np.ndarray], model_version: int,
                key_field: str | None) -> bytes:
    """The output lines (joined by newlines) for ``rows`` of ``chunk``: the key (or the input
    object), then the outputs and the model version.

    The key and each output are serialised a column at a time (``json_column``); the text
    between two columns' values is the same on every row, so the lines are spliced from
    the pieces in one join, with no Python per row.
    """
    n = len(rows)
    if not n:
        return b""
    if key_field:
        assert chunk.keys is not None
        opening, keys, closing = json_column(_take(chunk.keys, rows, len(chunk)))
        columns = [(b'{"%s":' % key_field.encode() + opening, keys, closing)]
    else:
        columns = [(b"", [_object_body(row) for row in _take(chunk.passthrough, rows, len(chunk))], b"")]
    for name, values in outputs.items():
        opening, texts, closing = json_column(values)
        columns.append((b',"%s":' % name.encode() + opening, texts, closing))
    stride = 2 * len(columns) + 1
    pieces: list[Any] = [None] * stride * n
    before = b""
    for i, (label, texts, closing) in enumerate(columns):
        pieces[2 * i::stride] = [before + label] * n
        pieces[2 * i + 1::stride] = texts
        before = closing
    end = before + b',"model_version":%d}' % model_version
    pieces[stride - 1::stride] = [end + b"\n"] * n
    pieces[-1] = end
    if not key_field and outputs:  # an empty input object: no comma before the first output
        pieces[2::stride] = [label[1:] if body.endswith(b"{") else label
                             for label, body in zip(pieces[2::stride], pieces[1::stride])]
    return b"".join(pieces)


def _object_body(carried: Any) -> bytes:
    """A row's input object as JSON text without its closing brace."""
    text = carried if isinstance(carried, bytes) else orjson.dumps(carried, default=json_default)
    return text.rstrip()[:-1].rstrip()


def _take(values: Sequence[Any], rows: Sequence[int], total: int) -> Sequence[Any]:
    """``values[rows]`` (all of ``values`` when ``rows`` are all ``total`` rows)."""
    if len(rows) == total:
        return values
    if isinstance(values, np.ndarray):
        return values[np.asarray(rows, dtype=np.int64)]
    if isinstance(values, TableRows):
        return TableRows(values.table.take(pa.array(np.asarray(rows, dtype=np.int64))))
    return [values[row] for row in rows]


def json_column(values: Any) -> tuple[bytes, list[bytes], bytes]:
    """A column as JSON: (opening, each row's text between them, closing), the opening and
    closing being the same on every row (brackets of a numeric list, quotes of a string),
    so that ``format_text`` can fold them into its constant text.

    Numeric columns are serialised by one orjson call and split; strings by one join.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub" and values.size and len(values):
        text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
        depth = values.ndim - 1
        if not depth:
            return b"", text[1:-1].split(b","), b""
        opening, closing = b"[" * depth, b"]" * depth
        return opening, text[depth + 1:-(depth + 1)].split(closing + b"," + opening), closing
    texts = _plain_texts(values)
    if texts is not None:
        return b'"', texts, b'"'
    return b"", [orjson.dumps(_plain(value), option=orjson.OPT_SERIALIZE_NUMPY, default=json_default)
                 for value in values], b""


def _plain_texts(values: Any) -> list[bytes] | None:
    """Each string's JSON text without its quotes (bytes as UTF-8, invalid bytes replaced),
    from one orjson call on the whole column: an unescaped '","' only ever separates two
    strings. None if any value is not a string."""
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    try:
        joined = b"\0".join(values).decode("utf-8", "replace")
    except TypeError:
        try:
            joined = "\0".join(values)
        except TypeError:
            return None
    strings = joined.split("\0")
    if not values or len(strings) != len(values):
        return None
    return orjson.dumps(strings)[2:-2].split(b'","')


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_plain(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """orjson's fallback for what it cannot write: bytes (string tensors) as UTF-8 text
    (invalid bytes replaced), arrays of them as lists, NaN as null, anything else as its str()."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
