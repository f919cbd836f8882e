"""CSV rows and TFRecord tf.Examples -> row dicts, for the row-by-row decoding path.

Typed columnar formats (Parquet) and JSON lines have fast column-wise paths in
``batch.columnar``; these two go through ``rows_to_chunk`` one row at a time.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from itertools import islice
from typing import Any

from serving.runtime.signature import SignatureSpec


def csv_blocks(handle: io.BufferedIOBase, rows_per_block: int) -> Iterable[list[dict[str, str]]]:
    """A CSV file with a header line -> its rows as dicts of strings, in blocks."""
    reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
    while block := list(islice(reader, rows_per_block)):
        yield block


def typed_csv_row(row: dict[str, Any], spec: SignatureSpec) -> dict[str, Any]:
    """CSV values are strings: numeric inputs become numbers where they parse (else they
    stay strings, and the row is refused with its reason)."""
    typed = dict(row)
    for name, tensor in spec.inputs.items():
        value = row.get(name)
        if tensor.is_string or value is None:
            continue
        try:
            typed[name] = int(value) if tensor.dtype.kind in "iu" else float(value)
        except ValueError:
            pass
    if None in typed:  # csv.DictReader puts extra fields of a ragged line under None
        typed["__extra_fields__"] = typed.pop(None)
    return typed


def examples_to_rows(records: list[bytes]) -> tuple[list[dict[str, Any]], list[tuple[Any, str]]]:
    """Serialized tf.Examples -> row dicts, and the records that are not tf.Examples."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    rows, refused = [], []
    for record in records:
        try:
            rows.append(_example_row(example_pb2.Example.FromString(record)))
        except DecodeError as error:
            refused.append((record, f"not a tf.Example: {error}"))
    return rows, refused


def _example_row(example: Any) -> dict[str, Any]:
    """{feature: value, or the list of values if there is not exactly one}."""
    row: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if kind == "bytes_list":
            values = [v.decode("utf-8", "replace") for v in values]
        row[name] = values[0] if len(values) == 1 else values
    return row
