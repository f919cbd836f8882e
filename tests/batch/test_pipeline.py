"""`batch/run.py` end to end on the natality model, on Beam's local runner."""
from __future__ import annotations

import glob
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.util import assert_that

from batch.chunks import rows_to_chunk
from batch.model_handler import ModelLocation, SavedModelHandler, open_model
from batch.run import main
from serving.examples import natality

MALFORMED = [
    "not json",
    json.dumps({"id": "missing", "is_male": "True"}),
    json.dumps({"id": "wrong-type", "is_male": "True", "mother_age": "old", "plurality": "Single(1)",
                "gestation_weeks": 38.0}),
    json.dumps({"id": "unknown-category", "is_male": "maybe", "mother_age": 20.0,
                "plurality": "Single(1)", "gestation_weeks": 38.0}),
    json.dumps([1, 2, 3]),
]


def write_rows(path, n: int, seed: int = 5) -> dict[int, dict]:
    columns = natality.sample_rows(n, seed=seed)
    rows = {i: {**{k: v.tolist()[i] for k, v in columns.items()}, "id": i} for i in range(n)}
    lines = [json.dumps(row) for row in rows.values()]
    lines[n // 2:n // 2] = MALFORMED  # in the middle of a chunk
    path.write_text("\n".join(lines) + "\n")
    return rows


def read_jsonl(pattern: str) -> list[dict]:
    return [json.loads(line) for name in sorted(glob.glob(pattern)) for line in open(name) if line.strip()]


def expected(row: dict) -> float:
    return float(natality.expected_weight(
        **{k: np.array([row[k]]) for k in ("is_male", "mother_age", "plurality", "gestation_weeks")})[0])


@pytest.mark.slow
def test_jsonl_rows_are_enriched_and_nothing_is_lost(tmp_path, models_dir):
    rows = write_rows(tmp_path / "in.jsonl", 3000)
    counts = main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "pred"),
                   "--model_base_path", str(models_dir / "natality"), "--key_field", "id",
                   "--chunk_rows", "512"])
    written = read_jsonl(str(tmp_path / "out" / "pred-0*.jsonl"))
    errors = read_jsonl(str(tmp_path / "out" / "pred-errors-*.jsonl"))
    assert counts == {"rows_in": 3005, "rows_written": 3000, "rows_dead_lettered": 5}
    assert len(written) + len(errors) == 3000 + len(MALFORMED)
    assert sorted(r["id"] for r in written) == list(range(3000))
    for record in written:
        assert set(record) == {"id", "weight_pounds", "model_version"} and record["model_version"] == 1
        assert abs(record["weight_pounds"] - expected(rows[record["id"]])) < natality.TOLERANCE_POUNDS
    reasons = {json.dumps(e["input"]): e["error"] for e in errors}
    assert "not JSON" in reasons['"not json"']
    assert "missing input" in reasons[json.dumps({"id": "missing", "is_male": "True"})]
    assert any("mother_age" in r and "number" in r for r in reasons.values())
    assert any("inference failed" in r and "maybe" in r for r in reasons.values())
    assert any("JSON object" in r for r in reasons.values())


def test_without_a_key_the_whole_row_is_kept(tmp_path, models_dir):
    rows = write_rows(tmp_path / "in.jsonl", 10)
    main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
          "--model_base_path", str(models_dir / "natality")])
    for record in read_jsonl(str(tmp_path / "out-0*.jsonl")):
        source = rows[record["id"]]
        assert {k: record[k] for k in source} == source


def test_the_handler_serves_another_pipeline(models_dir):
    version, model = open_model(ModelLocation(str(models_dir / "natality")))
    spec = model.signature("serving_default")
    columns = natality.sample_rows(4, seed=9)
    rows = [{k: v.tolist()[i] for k, v in columns.items()} for i in range(4)]
    chunk, refused = rows_to_chunk(rows, spec)
    assert not refused

    def check(results):
        (result,) = results
        assert result.ok_rows == [0, 1, 2, 3] and result.model_version == version
        np.testing.assert_allclose(result.outputs["weight_pounds"], natality.expected_weight(**columns),
                                   atol=natality.TOLERANCE_POUNDS)

    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        handler = SavedModelHandler(ModelLocation(str(models_dir / "natality")))
        results = pipeline | beam.Create([chunk]) | RunInference(handler)
        assert_that(results, check)


def test_missing_model_is_a_clear_error(tmp_path):
    (tmp_path / "in.jsonl").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="no numeric version directories"):
        main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o"),
              "--model_base_path", str(tmp_path)])


def test_parquet_rows_are_enriched_and_bad_rows_dead_lettered(tmp_path, models_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = natality.sample_rows(2000, seed=13)
    data = {k: v.tolist() for k, v in columns.items()}
    data["id"] = list(range(2000))
    data["mother_age"][10] = None
    data["mother_age"][1500] = None
    data["is_male"][700] = "maybe"
    pq.write_table(pa.table(data), tmp_path / "in.parquet", row_group_size=1000)
    counts = main(["--input", str(tmp_path / "in.parquet"), "--input_format", "parquet",
                   "--output", str(tmp_path / "out"), "--model_base_path", str(models_dir / "natality"),
                   "--key_field", "id"])
    assert counts == {"rows_in": 2000, "rows_written": 1997, "rows_dead_lettered": 3}
    written = read_jsonl(str(tmp_path / "out-0*.jsonl"))
    errors = read_jsonl(str(tmp_path / "out-errors-*.jsonl"))
    assert sorted(e["input"]["id"] for e in errors) == [10, 700, 1500]
    rows = {i: {k: data[k][i] for k in data} for i in range(2000)}
    for record in written:
        assert abs(record["weight_pounds"] - expected(rows[record["id"]])) < natality.TOLERANCE_POUNDS


@pytest.mark.slow
def test_microservice_approach_calls_the_gateway_instead(tmp_path, models_dir, gateway_factory):
    from serving.settings import ModelConfig
    from tests.conftest import free_port

    gateway = gateway_factory(port=free_port(), enable_batching=True,
                              models=(ModelConfig(name="natality", base_path=str(models_dir / "natality")),))
    rows = write_rows(tmp_path / "in.jsonl", 500)
    counts = main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
                   "--prediction_service", gateway.grpc_target, "--model_name", "natality",
                   "--key_field", "id", "--chunk_rows", "128"])
    assert counts == {"rows_in": 505, "rows_written": 500, "rows_dead_lettered": 5}
    for record in read_jsonl(str(tmp_path / "out-0*.jsonl")):
        assert record["model_version"] == 1
        assert abs(record["weight_pounds"] - expected(rows[record["id"]])) < natality.TOLERANCE_POUNDS
    assert gateway.metric("tfgw_requests_total", model="natality", method="predict", code="OK", api="tfserving") >= 4


def test_csv_and_tfrecord_inputs(tmp_path, models_dir):
    import csv as csv_module

    import tensorflow as tf

    rows = write_rows(tmp_path / "unused.jsonl", 300)
    fields = ["id", "is_male", "mother_age", "plurality", "gestation_weeks"]
    with open(tmp_path / "in.csv", "w", newline="") as handle:
        writer = csv_module.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows.values():
            writer.writerow(row)
        writer.writerow({"id": 900, "is_male": "True", "mother_age": "old", "plurality": "Single(1)",
                         "gestation_weeks": 38})
    with tf.io.TFRecordWriter(str(tmp_path / "in.tfrecord")) as writer:
        for row in rows.values():
            feature = {
                "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[row["id"]])),
                "mother_age": tf.train.Feature(float_list=tf.train.FloatList(value=[row["mother_age"]])),
                "gestation_weeks": tf.train.Feature(float_list=tf.train.FloatList(value=[row["gestation_weeks"]])),
                "is_male": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["is_male"].encode()])),
                "plurality": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row["plurality"].encode()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        writer.write(b"not an example")
    for fmt, name in (("csv", "in.csv"), ("tfrecord", "in.tfrecord")):
        counts = main(["--input", str(tmp_path / name), "--input_format", fmt, "--output", str(tmp_path / fmt),
                       "--model_base_path", str(models_dir / "natality"), "--key_field", "id"])
        assert counts == {"rows_in": 301, "rows_written": 300, "rows_dead_lettered": 1}, fmt
        for record in read_jsonl(str(tmp_path / f"{fmt}-0*.jsonl")):
            source = rows[int(record["id"])]
            assert abs(record["weight_pounds"] - expected(source)) < natality.TOLERANCE_POUNDS, fmt
        assert len(read_jsonl(str(tmp_path / f"{fmt}-errors-*.jsonl"))) == 1


def test_parquet_output(tmp_path, models_dir):
    import pyarrow.parquet as pq

    rows = write_rows(tmp_path / "in.jsonl", 1000)
    counts = main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "pred"),
                   "--output_format", "parquet", "--model_base_path", str(models_dir / "natality"),
                   "--chunk_rows", "256"])
    assert counts["rows_written"] == 1000
    table = pq.read_table(sorted((tmp_path / "out").glob("pred*.parquet")))
    assert table.num_rows == 1000
    assert {"id", "is_male", "weight_pounds", "model_version"} <= set(table.column_names)
    for record in table.to_pylist():
        assert abs(record["weight_pounds"] - expected(rows[record["id"]])) < natality.TOLERANCE_POUNDS
    assert len(read_jsonl(str(tmp_path / "out" / "pred-errors-*.jsonl"))) == len(MALFORMED)
