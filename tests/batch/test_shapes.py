"""The column-wise decoders and formatters on every tensor shape and input format.

Real tiny SavedModels (``serving.examples.shapes``); decoding, the model call and the
output text are checked against each model's numpy twin without a pipeline (fast), and one
end-to-end run checks that bad rows reach the dead letters alone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.chunks import ChunkResult
from batch.columnar import format_text, read_blocks
from batch.model_handler import ModelLocation, open_model
from batch.parquet_sink import result_table
from batch.pipeline import DECODERS
from batch.records import csv_blocks
from batch.run import main
from loadtests.benchmarks.bench_batch import write_shape_input
from serving.examples import shapes

ROWS = 40
BLOCK = 64


def blocks(path: Path, input_format: str) -> list[Any]:
    """The blocks the pipeline's readers make of a file."""
    if input_format == "parquet":
        return [pa.Table.from_batches([b]) for b in pq.ParquetFile(path).iter_batches(BLOCK)]
    if input_format == "tfrecord":
        import tensorflow as tf

        records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
        return [records[i:i + BLOCK] for i in range(0, len(records), BLOCK)]
    with path.open("rb") as handle:
        return list((csv_blocks if input_format == "csv" else read_blocks)(handle, BLOCK))


def decode_and_run(path: Path, input_format: str, model_dir: Path) -> tuple[list[ChunkResult], list]:
    _, model = open_model(ModelLocation(str(model_dir)))
    spec = model.signature("serving_default")
    results, refused = [], []
    for block in blocks(path, input_format):
        chunk, bad = DECODERS[input_format](block, spec, "id")
        refused += bad
        outputs = model.run("serving_default", chunk.tensors)
        results.append(ChunkResult(chunk, outputs, list(range(len(chunk))), [], 1))
    return results, refused


@pytest.mark.parametrize("input_format", ["jsonl", "parquet", "csv", "tfrecord"])
@pytest.mark.parametrize("shape", list(shapes.MODELS))
def test_every_shape_and_format_gives_the_models_answers(tmp_path, shapes_dir, shape, input_format):
    path = tmp_path / f"in.{input_format}"
    write_shape_input(path, shape, input_format, ROWS)
    results, refused = decode_and_run(path, input_format, shapes_dir / shape)
    assert not refused
    want = shapes.MODELS[shape].expected(**shapes.sample_inputs(shape, ROWS, seed=7))
    if input_format == "parquet":
        got = pa.concat_tables([result_table(r, "id") for r in results]).to_pydict()
    else:
        lines = b"\n".join(format_text(r.chunk, r.ok_rows, r.outputs, 1, "id") for r in results)
        records = [json.loads(line) for line in lines.split(b"\n")]
        got = {name: [r[name] for r in records] for name in records[0]}
    assert [int(i) for i in got["id"]] == list(range(ROWS))
    assert got["model_version"] == [1] * ROWS
    for name, values in want.items():
        if values.dtype == object:
            assert [v.encode() if isinstance(v, str) else v for v in got[name]] == values.tolist(), name
        else:
            np.testing.assert_allclose(np.array(got[name], dtype=values.dtype), values, rtol=1e-5, atol=1e-5,
                                       err_msg=name)


def vec16_with_bad_rows(path: Path, input_format: str) -> dict[int, str]:
    """40 good vec16 rows with a ragged row and a malformed one among them; returns
    {bad row's id (-1: none readable): a word its reason must hold}."""
    write_shape_input(path, "vec16", input_format, ROWS)
    ragged = [0.5] * 15
    if input_format == "jsonl":
        lines = path.read_bytes().splitlines()
        lines[20:20] = [json.dumps({"id": 900, "x": ragged}).encode(), b"{not json"]
        path.write_bytes(b"\n".join(lines) + b"\n")
        return {900: "shape [16]", -1: "not JSON"}
    if input_format == "csv":
        lines = path.read_bytes().splitlines()
        lines[20:20] = [b'900,"%s"' % json.dumps(ragged).encode(), b'901,"[1.0, oops]"']
        path.write_bytes(b"\n".join(lines) + b"\n")
        return {900: "shape [16]", 901: "expected a list"}
    if input_format == "parquet":
        table = pq.read_table(path)
        bad = pa.table({"id": [900, 901], "x": pa.array([ragged, None], pa.list_(pa.float32()))})
        pq.write_table(pa.concat_tables([table.slice(0, 20), bad, table.slice(20)]), path)
        return {900: "shape [16]", 901: "expected a list"}
    import tensorflow as tf

    records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    example = tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[900])),
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=ragged))}))
    records[20:20] = [example.SerializeToString(), b"not an example"]
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return {900: "shape [16]", -1: "not a tf.Example"}


def reason_id(row: Any) -> int:
    if isinstance(row, dict):
        return int(row.get("id", -1))
    if isinstance(row, bytes) and row.startswith(b"{"):
        try:
            return int(json.loads(row)["id"])
        except ValueError:
            return -1
    return -1


@pytest.mark.parametrize("input_format", ["jsonl", "parquet", "csv", "tfrecord"])
def test_a_ragged_and_a_malformed_row_are_refused_alone(tmp_path, shapes_dir, input_format):
    path = tmp_path / f"in.{input_format}"
    bad = vec16_with_bad_rows(path, input_format)
    results, refused = decode_and_run(path, input_format, shapes_dir / "vec16")
    assert {reason_id(row): reason for row, reason in refused}.keys() == bad.keys()
    for row, reason in refused:
        assert bad[reason_id(row)] in reason, reason
    want = shapes.MODELS["vec16"].expected(**shapes.sample_inputs("vec16", ROWS, seed=7))
    total = {}
    for result in results:
        keys = [int(k) for k in result.chunk.keys]
        total.update(zip(keys, result.outputs["total"].tolist()))
    assert sorted(total) == list(range(ROWS))
    np.testing.assert_allclose([total[i] for i in range(ROWS)], want["total"], rtol=1e-5, atol=1e-5)


def test_dead_letters_end_to_end(tmp_path, shapes_dir):
    bad = vec16_with_bad_rows(tmp_path / "in.csv", "csv")
    counts = main(["--input", str(tmp_path / "in.csv"), "--input_format", "csv", "--output",
                   str(tmp_path / "out"), "--model_base_path", str(shapes_dir / "vec16"),
                   "--key_field", "id", "--chunk_rows", "32"])
    assert counts == {"rows_in": ROWS + 2, "rows_written": ROWS, "rows_dead_lettered": 2}
    errors = [json.loads(line) for name in tmp_path.glob("out-errors-*") for line in name.open()]
    assert sorted(int(e["input"]["id"]) for e in errors) == sorted(bad)
    written = [json.loads(line) for name in tmp_path.glob("out-0*") for line in name.open()]
    assert sorted(int(r["id"]) for r in written) == list(range(ROWS))
    assert all(len(r["scaled"]) == 16 for r in written)
