"""CSV rows and TFRecords of tf.Example -> Chunks, column-wise like ``batch.columnar``.

CSV: pyarrow's CSV reader parses a block (the header line, then the block's lines) into
columns; a list input's cell holds a JSON array, a ``_bytes`` input's cell base64 text.
tf.Example: ``tf.io.parse_example`` parses a block into one tensor per feature. A block
that fails is halved until the bad records are isolated (``columnar.decode_in_halves``);
they are then decoded row by row, which gives each its reason.
"""
from __future__ import annotations

import csv
import io
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from batch.chunks import Chunk, rows_to_chunk
from batch.columnar import READ_BYTES, Decoded, ParsedOnDemand, decode_in_halves, from_table
from serving.runtime.signature import SignatureSpec


@dataclass(frozen=True)
class CsvBlock:
    """Lines of a CSV file (a quoted value may span lines) and the file's header line."""

    header: bytes
    lines: list[bytes]

    def __len__(self) -> int:
        return len(self.lines)


def csv_blocks(handle: io.BufferedIOBase, rows_per_block: int) -> Iterable[CsvBlock]:
    """A CSV file with a header line -> its records in blocks."""
    records = _records(handle)
    header = next(records, None)
    if header is None:
        return
    while block := list(islice(records, rows_per_block)):
        yield CsvBlock(header, block)


def _records(handle: io.BufferedIOBase) -> Iterator[bytes]:
    """Non-blank lines without their newline, a line whose quotes are not closed joined with
    the next ones; read a megabyte at a time and split in C."""
    tail = pending = b""
    while True:
        data = handle.read(READ_BYTES)
        lines = (tail + data).split(b"\n")
        tail = lines.pop() if data else b""
        for line in lines:
            if pending:
                line, pending = pending + b"\n" + line, b""
            if b'"' in line and line.count(b'"') % 2:
                pending = line
            elif line.strip():
                yield line
        if not data:
            if pending.strip():
                yield pending
            return


def decode_csv(block: CsvBlock, spec: SignatureSpec, key_field: str | None) -> Decoded:
    """A block of CSV records -> a Chunk carrying each record as a dict, and the refused ones."""
    names = next(csv.reader([block.header.decode("utf-8", "replace")]))
    text_columns = {name: pa.string() for name, tensor in spec.inputs.items()
                    if tensor.is_string or (tensor.shape is not None and len(tensor.shape) > 1)}
    if key_field:
        text_columns[key_field] = pa.string()  # keys are carried as they were written
    options = pa_csv.ConvertOptions(column_types=text_columns, strings_can_be_null=False)

    def to_table(lines: list[bytes]) -> pa.Table | None:
        text = b"\n".join([block.header, *lines, b""])
        quoted_newlines = text.count(b"\n") != len(lines) + 1
        try:
            return pa_csv.read_csv(io.BytesIO(text), convert_options=options,
                                   parse_options=pa_csv.ParseOptions(newlines_in_values=quoted_newlines))
        except pa.ArrowInvalid:
            return None

    def row_by_row(lines: list[bytes]) -> Decoded:
        reader = csv.DictReader(io.StringIO(b"\n".join(lines).decode("utf-8", "replace"), newline=""),
                                fieldnames=names)
        return rows_to_chunk([typed_csv_row(row, spec) for row in reader], spec, key_field)

    columnar = from_table(to_table, row_by_row, spec, key_field, strings_as="text",
                          carry=lambda lines: ParsedOnDemand(lines, partial(_csv_dict, names)))
    return decode_in_halves(block.lines, columnar, row_by_row)


def _csv_dict(names: list[str], line: bytes) -> dict[str, Any]:
    return dict(zip(names, next(csv.reader([line.decode("utf-8", "replace")]))))


def typed_csv_row(row: dict[str, Any], spec: SignatureSpec) -> dict[str, Any]:
    """CSV values are strings: numeric inputs become numbers where they parse, list inputs
    the JSON array their cell holds, ``_bytes`` inputs ``{"b64": cell}`` (anything else stays
    a string, and the row is refused with its reason)."""
    import orjson

    typed = dict(row)
    for name, tensor in spec.inputs.items():
        value = row.get(name)
        if value is None:
            continue
        try:
            if tensor.shape is not None and len(tensor.shape) > 1:
                typed[name] = orjson.loads(value)
            elif tensor.is_string:
                typed[name] = {"b64": value} if name.endswith("_bytes") else value
            else:
                typed[name] = int(value) if tensor.dtype.kind in "iu" else float(value)
        except ValueError:
            pass
    if None in typed:  # csv.DictReader puts extra fields of a ragged line under None
        typed["__extra_fields__"] = typed.pop(None)
    return typed


def tfrecord_blocks(handle: io.BufferedIOBase, records_per_block: int) -> Iterable[list[bytes]]:
    """The records of a TFRecord file, in blocks, their checksums verified (as Beam's and
    TensorFlow's readers do). Read a megabyte at a time: Beam's ReadFromTFRecord spends tens
    of microseconds per record on element bookkeeping."""
    import google_crc32c

    buffer, offset, block = b"", 0, []
    while True:
        available = len(buffer) - offset
        length = _U64.unpack_from(buffer, offset)[0] if available >= 8 else 0
        if available < 16 + length:  # the next record is not all in the buffer yet
            data = handle.read(max(READ_BYTES, 16 + length - available))
            if not data:
                if available:
                    raise ValueError(f"truncated TFRecord: {available} bytes left over")
                break
            buffer, offset = buffer[offset:] + data, 0
            continue
        if _masked_crc(google_crc32c.value(buffer[offset:offset + 8])) != _U32.unpack_from(buffer, offset + 8)[0]:
            raise ValueError("corrupt TFRecord: the length's checksum does not match")
        record = buffer[offset + 12:offset + 12 + length]
        if _masked_crc(google_crc32c.value(record)) != _U32.unpack_from(buffer, offset + 12 + length)[0]:
            raise ValueError("corrupt TFRecord: the data's checksum does not match")
        block.append(record)
        offset += 16 + length
        if len(block) == records_per_block:
            yield block
            block = []
    if block:
        yield block


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _masked_crc(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def decode_examples(records: list[bytes], spec: SignatureSpec, key_field: str | None) -> Decoded:
    """Serialized tf.Examples -> a Chunk carrying each record's features as a dict, and the
    refused records (not a tf.Example, or features that do not fit the inputs)."""
    features = _feature_spec(records, spec, key_field)

    def columnar(part: list[bytes]) -> Decoded | None:
        import tensorflow as tf

        if features is None:
            return None
        try:
            parsed = {k: v.numpy() for k, v in tf.io.parse_example(part, features).items()}
        except (tf.errors.InvalidArgumentError, ValueError):
            return None
        tensors = {name: parsed[name] if tensor.is_string else parsed[name].astype(tensor.dtype, copy=False)
                   for name, tensor in spec.inputs.items()}
        rows = ParsedOnDemand(part, partial(_example_row, spec=spec))
        return Chunk(tensors, rows, parsed[key_field] if key_field else None), []

    def row_by_row(part: list[bytes]) -> Decoded:
        parsed, unreadable = examples_to_rows(part, spec)
        chunk, refused = rows_to_chunk(parsed, spec, key_field)
        return chunk, unreadable + refused

    return decode_in_halves(records, columnar, row_by_row)


def _feature_spec(records: list[bytes], spec: SignatureSpec, key_field: str | None) -> dict[str, Any] | None:
    """tf.io.parse_example's features: one fixed-length feature per input, and the key as
    the first record holds it; None if the inputs cannot be parsed that way."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    features = {}
    for name, tensor in spec.inputs.items():
        if tensor.shape is None or any(d is None for d in tensor.shape[1:]):
            return None
        kind = tf.string if tensor.is_string else tf.float32 if tensor.dtype.kind == "f" else tf.int64
        features[name] = tf.io.FixedLenFeature(tensor.shape[1:], kind)
    if key_field and records:
        try:
            first = example_pb2.Example.FromString(records[0]).features.feature.get(key_field)
        except DecodeError:
            first = None
        kinds = {"int64_list": tf.int64, "float_list": tf.float32, "bytes_list": tf.string}
        if first is None or first.WhichOneof("kind") not in kinds:
            return None
        features[key_field] = tf.io.FixedLenFeature([], kinds[first.WhichOneof("kind")])
    return features


def examples_to_rows(records: list[bytes], spec: SignatureSpec | None = None
                     ) -> tuple[list[dict[str, Any]], list[tuple[Any, str]]]:
    """Serialized tf.Examples -> row dicts, and the records that are not tf.Examples."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    rows, refused = [], []
    for record in records:
        try:
            rows.append(_example_row(example_pb2.Example.FromString(record), spec))
        except DecodeError as error:
            refused.append((record, f"not a tf.Example: {error}"))
    return rows, refused


def _example_row(example: Any, spec: SignatureSpec | None) -> dict[str, Any]:
    """{feature: value, or the list of values if there is not exactly one or the input is
    list-shaped}; bytes as text, except for ``_bytes`` features. ``example`` may be serialized."""
    if isinstance(example, bytes):
        from tensorflow.core.example import example_pb2

        example = example_pb2.Example.FromString(example)
    lists = {name for name, t in (spec.inputs.items() if spec else ()) if t.shape is not None and len(t.shape) > 1}
    row: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if kind == "bytes_list" and not name.endswith("_bytes"):
            values = [v.decode("utf-8", "replace") for v in values]
        row[name] = values[0] if len(values) == 1 and name not in lists else values
    return row
