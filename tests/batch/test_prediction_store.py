"""``batch/run.py --prediction_store``: each row's outputs land in a real store (a SQLite file,
a real redis-server) under (model, version, key), exactly as the file output has them.

Pipelines start in seconds, so the natality runs (a run and its rerun, per store) are made
once per module and shared by the tests that look at them.
"""
from __future__ import annotations

import glob
import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from batch.chunks import ChunkResult
from batch.columnar import decode_block
from batch.model_handler import ModelLocation, open_model
from batch.run import main
from batch.store_writer import store_keys
from loadtests.benchmarks.bench_batch import write_shape_input
from serving.errors import InvalidArgument
from serving.examples import natality, shapes
from serving.precomputed import open_store
from serving.precomputed.codec import decode_rows
from serving.precomputed.keys import store_key
from tests.conftest import MODELS, RedisServer, wait_until

ROWS = 1000
CHUNK = 256
BAD_KEYS = {300: 1.5, 600: None, 700: True, 800: [8]}
"""Row index -> a key no store takes. Row 300's block holds no other odd row, so JSON
decoding reads that block's whole id column as floats: the other 255 must still be stored."""
STRING_KEY = (900, "k-900")
NOT_JSON = "not json"
INPUTS = ("is_male", "mother_age", "plurality", "gestation_weeks")



def natality_input(path: Path) -> dict[Any, dict]:
    """ROWS natality rows keyed ``id`` (bad keys among them, and a line that is not JSON);
    returns the rows with a good key, by their key."""
    columns = natality.sample_rows(ROWS, seed=3)
    rows = [{**{k: v.tolist()[i] for k, v in columns.items()}, "id": i} for i in range(ROWS)]
    for i, key in BAD_KEYS.items():
        rows[i]["id"] = key
    rows[STRING_KEY[0]]["id"] = STRING_KEY[1]
    lines = [json.dumps(row) for row in rows]
    lines.insert(850, NOT_JSON)
    path.write_text("\n".join(lines) + "\n")
    return {row["id"]: row for i, row in enumerate(rows) if i not in BAD_KEYS}


def read_jsonl(pattern: str) -> list[dict]:
    return [json.loads(line) for name in sorted(glob.glob(pattern)) for line in open(name) if line.strip()]


def file_key(record: dict) -> str | None:
    """A file output row's store key (None: it has none). A block whose id column JSON
    decoding widened to floats (row 300's) shows its integer ids as 257.0 in the file output."""
    key = record["id"]
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    try:
        return store_key(key, "id")
    except InvalidArgument:
        return None


def entries(url: str) -> dict[tuple[str, int], set[str]]:
    """Every key the store holds, by (model, version): read from the store's own files or
    server, not through the code under test."""
    found: dict[tuple[str, int], set[str]] = {}
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as db:
            for model, version, key in db.execute("SELECT model, version, key FROM predictions"):
                found.setdefault((model, version), set()).add(key)
        return found
    client = redis.Redis.from_url(url)
    for raw in client.scan_iter(match="tfgw:*", count=1000):
        size, rest = raw.decode().removeprefix("tfgw:").split(":", 1)
        model, rest = rest[:int(size)], rest[int(size) + 1:]
        version, key = rest.split(":", 1)
        found.setdefault((model, int(version)), set()).add(key)
    client.close()
    return found


def stored(url: str, model: str, version: int, keys: list[str]) -> dict[str, np.ndarray]:
    store = open_store(url, timeout_s=10)
    try:
        values = store.get_many(model, version, keys)
    finally:
        store.close()
    assert None not in values, [k for k, v in zip(keys, values) if v is None][:5]
    return decode_rows(values)


def msets(url: str) -> int:
    client = redis.Redis.from_url(url)
    calls = client.info("commandstats").get("cmdstat_mset", {}).get("calls", 0)
    client.close()
    return calls


@dataclass
class Run:
    counts: dict[str, int]
    written: list[dict]
    errors: list[dict]
    entries: dict[tuple[str, int], set[str]]
    values: dict[str, np.ndarray]
    """The stored outputs of the written rows, in the order of ``written``."""
    msets: int | None
    """Redis: MSET calls the run made."""


@dataclass
class NatalityRuns:
    url: str
    rows: dict[Any, dict]
    first: Run
    rerun: Run


def run_natality(url: str, tmp: Path, name: str) -> Run:
    before = msets(url) if url.startswith("redis") else None
    counts = main(["--input", str(tmp / "in.jsonl"), "--output", str(tmp / name / "pred"),
                   "--model_base_path", str(MODELS / "natality"), "--model_name", "natality",
                   "--key_field", "id", "--chunk_rows", str(CHUNK), "--prediction_store", url])
    written = read_jsonl(str(tmp / name / "pred-0*.jsonl"))
    return Run(counts, written, read_jsonl(str(tmp / name / "pred-errors-*.jsonl")), entries(url),
               stored(url, "natality", 1, [key for key in map(file_key, written) if key is not None]),
               None if before is None else msets(url) - before)


@pytest.fixture(scope="module")
def redis_store(tmp_path_factory) -> Iterator[RedisServer]:
    """conftest's real redis-server, for the whole module (``redis_server`` is per test)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def natality_runs(url: str, tmp: Path) -> NatalityRuns:
    rows = natality_input(tmp / "in.jsonl")
    first = run_natality(url, tmp, "first")
    return NatalityRuns(url, rows, first, run_natality(url, tmp, "rerun"))


@pytest.fixture(scope="module")
def sqlite_runs(tmp_path_factory, models_dir) -> NatalityRuns:
    tmp = tmp_path_factory.mktemp("sqlite-runs")
    return natality_runs(f"sqlite:///{tmp / 'predictions.db'}", tmp)


@pytest.fixture(scope="module")
def redis_runs(tmp_path_factory, redis_store, models_dir) -> NatalityRuns:
    return natality_runs(redis_store.url, tmp_path_factory.mktemp("redis-runs"))


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def runs(request) -> NatalityRuns:
    return request.getfixturevalue(f"{request.param}_runs")


@pytest.mark.slow
def test_rows_land_under_model_version_key_as_the_file_output_has_them(runs):
    run = runs.first
    good = sorted(map(str, (key for key in runs.rows)))
    assert set(run.entries) == {("natality", 1)}
    assert sorted(run.entries[("natality", 1)]) == good
    assert sorted(file_key(r) for r in run.written) == good
    np.testing.assert_array_equal(run.values["weight_pounds"],
                                  np.array([r["weight_pounds"] for r in run.written], np.float32))
    assert run.values["weight_pounds"].shape == (len(good),)
    rows = {str(key): row for key, row in runs.rows.items()}
    for record, value in zip(run.written, run.values["weight_pounds"]):
        row = rows[file_key(record)]
        want = natality.expected_weight(**{k: np.array([row[k]]) for k in INPUTS})[0]
        assert abs(float(value) - want) < natality.TOLERANCE_POUNDS


def test_bad_keys_are_dead_lettered_alone_and_the_counts_add_up(runs):
    run = runs.first
    assert run.counts == {"rows_in": ROWS + 1, "rows_written": ROWS - len(BAD_KEYS),
                          "rows_dead_lettered": len(BAD_KEYS) + 1, "rows_stored": ROWS - len(BAD_KEYS)}
    assert run.counts["rows_in"] == run.counts["rows_written"] + run.counts["rows_dead_lettered"]
    refused = {json.dumps(e["input"]["id"]) if isinstance(e["input"], dict) else e["input"]: e["error"]
               for e in run.errors}
    assert set(refused) == {json.dumps(key) for key in BAD_KEYS.values()} | {NOT_JSON}
    assert "must be a string or an integer, got float 1.5" in refused["1.5"]
    assert "NoneType" in refused["null"] and "bool" in refused["true"] and "list" in refused["[8]"]
    assert all(reason.startswith("not stored: Key field 'id'") for key, reason in refused.items() if key != NOT_JSON)
    assert STRING_KEY[1] in run.entries[("natality", 1)]
    # kept out of the file output too: the file and the store hold the same rows
    assert not {json.dumps(r["id"]) for r in run.written} & set(refused)


def test_a_rerun_overwrites_rather_than_duplicates(runs):
    first, rerun = runs.first, runs.rerun
    assert rerun.counts == first.counts
    assert rerun.entries == first.entries
    values = dict(zip(map(file_key, rerun.written), rerun.values["weight_pounds"]))
    assert values == dict(zip(map(file_key, first.written), first.values["weight_pounds"]))


def test_writes_are_one_round_trip_per_chunk(redis_runs):
    blocks = -(-(ROWS + 1) // CHUNK)
    for run in (redis_runs.first, redis_runs.rerun):
        assert 1 <= run.msets <= blocks, run.msets
        assert run.counts["rows_stored"] >= 100 * run.msets


WIDENED = [*range(5), 5.5, *range(6, 32)]
DATES = [f"2024-01-{day:02}" for day in range(1, 32)]


@pytest.mark.parametrize("ids,keys,refused", [
    (WIDENED, [None if i == 5 else str(i) for i in range(32)], {5: "got float 5.5"}),  # a float64 column
    (DATES, DATES, {}),  # a timestamp column
])
def test_keys_the_column_wise_decoding_changed_are_read_as_written(shapes_dir, ids, keys, refused):
    _, model = open_model(ModelLocation(str(shapes_dir / "scalar")))
    lines = [json.dumps({"id": key, "x": 1.0}).encode() for key in ids]
    chunk, bad = decode_block(lines, model.signature("serving_default"), "id")
    assert not bad and not isinstance(chunk.keys, list)  # decoded as columns, not row by row
    result = ChunkResult(chunk, {"y": np.zeros(len(ids))}, list(range(len(ids))), [], 1)
    got, problems = store_keys(result, "id")
    assert got == keys
    assert {position: reason for position, reason in problems}.keys() == refused.keys()
    for position, reason in problems:
        assert reason.startswith("not stored: Key field 'id'") and refused[position] in reason


def versions(base: Path, **folders: Path) -> Path:
    """A model base path whose numeric version folders are copies of ``folders``."""
    for version, source in folders.items():
        shutil.copytree(source, base / version.removeprefix("v"))
    return base


@pytest.mark.slow
def test_a_new_model_version_writes_beside_the_old_and_a_rerun_overwrites(tmp_path, shapes_dir, tfserving_dir):
    scalar = shapes_dir / "scalar" / "1"
    half_plus_three = tfserving_dir / "saved_model_half_plus_three" / "00000123"
    x = np.arange(40, dtype=np.float32) / 4
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"u{i}", "x": float(v)}) + "\n"
                                                for i, v in enumerate(x)))
    url = f"sqlite:///{tmp_path / 'p.db'}"
    keys = [f"u{i}" for i in range(len(x))]

    def run(base: Path, name: str, *extra: str) -> dict[str, int]:
        # each run its own base path: the worker's model cache is per location
        return main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / name),
                     "--model_base_path", str(base), "--model_name", "m", "--key_field", "id",
                     "--chunk_rows", "16", "--prediction_store", url, *extra])

    run(versions(tmp_path / "a", v1=scalar), "a")
    np.testing.assert_array_equal(stored(url, "m", 1, keys)["y"], 3 * x + 1)
    # version 1 exported again, with other weights: the rerun replaces its entries
    assert run(versions(tmp_path / "b", v1=half_plus_three), "b")["rows_stored"] == len(x)
    assert entries(url) == {("m", 1): set(keys)}
    np.testing.assert_array_equal(stored(url, "m", 1, keys)["y"], x / 2 + 3)
    # a new version: written beside version 1, which keeps its entries and values
    assert run(versions(tmp_path / "c", v1=half_plus_three, v2=scalar), "c")["rows_stored"] == len(x)
    assert entries(url) == {("m", 1): set(keys), ("m", 2): set(keys)}
    np.testing.assert_array_equal(stored(url, "m", 2, keys)["y"], 3 * x + 1)
    np.testing.assert_array_equal(stored(url, "m", 1, keys)["y"], x / 2 + 3)
    assert {r["model_version"] for r in read_jsonl(str(tmp_path / "c-0*.jsonl"))} == {2}


def file_rows(prefix: Path, output_format: str) -> list[dict]:
    if output_format == "parquet":
        return pq.read_table(sorted(prefix.parent.glob(prefix.name + "*.parquet"))).to_pylist()
    return read_jsonl(str(prefix) + "-0*.jsonl")


def as_bytes(value: Any) -> Any:
    return value.encode() if isinstance(value, str) else value


@pytest.mark.parametrize("input_format,output_format,shape", [
    ("jsonl", "parquet", "vec16"), ("parquet", "jsonl", "text"), ("csv", "parquet", "bytes"),
    ("tfrecord", "jsonl", "scalar"),
])
def test_every_input_and_output_format_stores_what_it_writes(tmp_path, shapes_dir, input_format, output_format,
                                                             shape):
    rows = 50
    write_shape_input(tmp_path / f"in.{input_format}", shape, input_format, rows)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    counts = main(["--input", str(tmp_path / f"in.{input_format}"), "--input_format", input_format,
                   "--output", str(tmp_path / "out"), "--output_format", output_format,
                   "--model_base_path", str(shapes_dir / shape), "--model_name", shape, "--key_field", "id",
                   "--chunk_rows", "16", "--prediction_store", url])
    assert counts == {"rows_in": rows, "rows_written": rows, "rows_dead_lettered": 0, "rows_stored": rows}
    written = file_rows(tmp_path / "out", output_format)
    keys = [store_key(r["id"], "id") for r in written]
    assert sorted(keys, key=int) == [str(i) for i in range(rows)]
    values = stored(url, shape, 1, keys)
    outputs = shapes.MODELS[shape].expected(**shapes.sample_inputs(shape, 1, seed=7))
    assert set(values) == set(outputs)
    for name, column in values.items():
        if column.dtype == object:
            assert column.tolist() == [as_bytes(r[name]) for r in written], name
        else:
            np.testing.assert_array_equal(column, np.array([r[name] for r in written], column.dtype), err_msg=name)


def test_a_store_killed_mid_job_fails_the_job_loudly(tmp_path, redis_server, models_dir):
    """The store is part of the job's output: a job whose store dies fails (on Dataflow
    after Beam's retries of the bundle) rather than end with rows missing from it."""
    natality_input(tmp_path / "in.jsonl")
    client = redis.Redis.from_url(redis_server.url)
    client.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # holds the job's first MSET
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            outcome["counts"] = main([
                "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "pred"),
                "--model_base_path", str(models_dir / "natality"), "--model_name", "natality",
                "--key_field", "id", "--chunk_rows", str(CHUNK), "--prediction_store", redis_server.url])
        except Exception as error:  # noqa: BLE001 - the test looks at what the job raised
            outcome["error"] = error

    thread = threading.Thread(target=job)
    thread.start()
    try:
        wait_until(lambda: client.info("clients")["blocked_clients"] >= 1 or not thread.is_alive(),
                   timeout=120, what="the job's first write to reach the store")
        assert thread.is_alive(), outcome
        redis_server.kill()
    finally:
        client.close()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert "counts" not in outcome, outcome
    message = str(outcome["error"])
    assert "Could not store" in message and "model 'natality' version 1" in message, message
    assert f"Redis prediction store {redis_server.url}" in message, message
    assert not glob.glob(str(tmp_path / "out" / "pred-0*.jsonl")), "a failed job left final output files"


@pytest.mark.parametrize("url,says", [
    ("redis://admin:s3cr3t-pw@cache.internal:six/0", "the port must be a number"),
    ("redis://:s3cr3t-pw@10.0.0.3:6379/zero", "the database must be a number"),
    ("sqlite://relative/s3cr3t-pw.db", "absolute file path"),
    ("memcached://user:s3cr3t-pw@host:11211", "unknown scheme"),
    ("s3cr3t-pw", "is not a URL"),
])
def test_a_store_url_that_does_not_parse_is_refused_at_start(tmp_path, capsys, url, says):
    with pytest.raises(SystemExit) as exit_:
        main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
              "--model_base_path", str(tmp_path), "--key_field", "id", "--prediction_store", url])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--prediction_store" in err and says in err, err
    if "@" in url:
        assert "s3cr3t-pw" not in err, err


@pytest.mark.parametrize("args,says", [
    (["--prediction_store", "sqlite:///tmp/p.db"], "needs --key_field"),
    (["--prediction_store", "sqlite:///tmp/p.db", "--key_field", "id", "--runner=DataflowRunner"],
     "Use a redis:// store"),
])
def test_a_store_the_job_cannot_use_is_refused_at_start(tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as exit_:
        main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
              "--model_base_path", str(tmp_path), *args])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
