"""The store contract (``serving.precomputed.api.PredictionStore``), clause by clause, on
both real stores: a SQLite file and a real redis-server (the ``redis_server`` fixture)."""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import ml_dtypes
import numpy as np
import pytest

from serving.precomputed import open_store
from serving.precomputed.api import PredictionStore, StoreError, StoreUnavailable
from serving.precomputed.codec import decode_rows, encode_rows

T = TypeVar("T")
TIMEOUT_S = 0.2
HANG = 10.0
"""Far above TIMEOUT_S: a call that takes this long is hanging, whatever the machine's load."""


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'predictions.db'}"
    return request.getfixturevalue("redis_server").url


@pytest.fixture
def prediction_store(url) -> Iterator[PredictionStore]:
    opened = open_store(url, timeout_s=TIMEOUT_S)
    yield opened
    opened.close()


def entries(url: str) -> int:
    """How many entries the store holds, asked of it directly."""
    if url.startswith("sqlite://"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as connection:
            return connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    import redis

    return redis.Redis.from_url(url).dbsize()


def without_hanging(call: Callable[[], T]) -> T:
    """``call()``'s result or exception; a call still running after HANG s fails the test
    (in a daemon thread, so a hanging call cannot hold up the test run)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"the call was still running after {HANG} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def connections_received(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        return client.info("stats")["total_connections_received"]


DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.int16, np.int32,
          np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128]
SHAPES = [(), (1,), (3,), (2, 3), (0,), (2, 0, 3)]


def test_rows_of_every_dtype_and_shape_come_back_exact_and_in_output_order(prediction_store):
    rows = {}
    for d, dtype in enumerate(DTYPES):
        for s, shape in enumerate(SHAPES):
            values = (np.arange(int(np.prod(shape))) * 7 - 3).astype(dtype).reshape(shape)
            rows[f"{d}-{s}"] = {"z_value": values, "a_label": np.array([b"x\xff\x00", b""], dtype=object)}
    rows["strings"] = {"text": np.array([[b"caf\xc3\xa9", b"\xff"], [b"", b"z"]], dtype=object)}
    prediction_store.put_many("m", 1, [(key, encode_rows({n: v[np.newaxis] for n, v in row.items()})[0])
                                       for key, row in rows.items()])

    got = prediction_store.get_many("m", 1, list(rows))

    for (key, row), data in zip(rows.items(), got):
        decoded = {name: values[0] for name, values in decode_rows([data]).items()}
        assert list(decoded) == list(row), key
        for name, values in row.items():
            assert decoded[name].dtype == values.dtype and decoded[name].shape == values.shape, (key, name)
            same = (decoded[name].tolist() == values.tolist() if values.dtype == object
                    else decoded[name].tobytes() == values.tobytes())
            assert same, (key, name)


def test_values_come_back_in_key_order_with_none_for_missing_keys(prediction_store):
    prediction_store.put_many("m", 1, [("a", b"A"), ("b", b"B"), ("", b"empty"), ("c:d", b"CD")])
    assert prediction_store.get_many("m", 1, ["b", "nope", "a", "b", "", "c:d", "c"]) == [
        b"B", None, b"A", b"B", b"empty", b"CD", None]
    assert prediction_store.get_many("m", 1, []) == []


def test_entries_of_another_version_or_model_are_never_seen(prediction_store):
    prediction_store.put_many("m", 1, [("k", b"v1")])
    prediction_store.put_many("m", 2, [("k", b"v2")])
    prediction_store.put_many("other", 1, [("k", b"other")])
    assert prediction_store.get_many("m", 1, ["k"]) == [b"v1"]
    assert prediction_store.get_many("m", 2, ["k"]) == [b"v2"]
    assert prediction_store.get_many("m", 3, ["k"]) == [None]
    assert prediction_store.get_many("m2", 1, ["k"]) == [None]


def test_a_colon_in_a_name_or_key_cannot_make_two_entries_one(prediction_store, url):
    # Joined with ':' alone, both would be "m:1:1:k".
    prediction_store.put_many("m:1", 1, [("k", b"model m:1")])
    prediction_store.put_many("m", 1, [("1:k", b"model m")])
    assert prediction_store.get_many("m:1", 1, ["k"]) == [b"model m:1"]
    assert prediction_store.get_many("m", 1, ["1:k"]) == [b"model m"]
    assert entries(url) == 2


def test_a_rerun_overwrites_instead_of_adding(prediction_store, url):
    prediction_store.put_many("m", 1, [("a", b"old"), ("b", b"old")])
    prediction_store.put_many("m", 1, [("a", b"new"), ("b", b"new")])
    prediction_store.put_many("m", 1, [])
    assert prediction_store.get_many("m", 1, ["a", "b"]) == [b"new", b"new"]
    assert entries(url) == 2


def test_a_lookup_larger_than_sqlites_variable_limit(tmp_path):
    store = open_store(f"sqlite://{tmp_path / 'predictions.db'}", timeout_s=TIMEOUT_S)
    keys = [str(i) for i in range(33_000)]  # the limit is 32766 here
    store.put_many("m", 1, [(key, key.encode()) for key in keys])
    got = store.get_many("m", 1, keys + ["missing"])
    assert got[:-1] == [key.encode() for key in keys] and got[-1] is None
    store.close()


def test_threads_share_one_store(prediction_store):
    prediction_store.put_many("m", 1, [(str(i), str(i).encode()) for i in range(64)])

    def read(offset: int) -> bool:
        keys = [str((i + offset) % 64) for i in range(64)]
        return all(prediction_store.get_many("m", 1, keys) == [k.encode() for k in keys] for _ in range(20))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read, range(8)))


def test_a_bad_model_or_version_is_refused(prediction_store):
    for model, version in [("", 1), (None, 1), ("m", -1), ("m", True), ("m", "1")]:
        with pytest.raises(ValueError, match="model"):
            prediction_store.get_many(model, version, ["k"])
        with pytest.raises(ValueError, match="model"):
            prediction_store.put_many(model, version, [("k", b"v")])


def test_a_positive_timeout_is_required(url):
    with pytest.raises(ValueError, match="timeout"):
        open_store(url, timeout_s=0)


# Down or slow: each backend's way of failing, raised within the timeout.

def test_a_killed_redis_server_is_unavailable_at_once(redis_server):
    store = open_store(redis_server.url, timeout_s=TIMEOUT_S)
    store.put_many("m", 1, [("k", b"v")])
    redis_server.kill()
    for call in (lambda: store.get_many("m", 1, ["k"]), lambda: store.put_many("m", 1, [("k", b"v")])):
        with pytest.raises(StoreUnavailable, match="Redis prediction store"):
            without_hanging(call)
    store.close()


def test_a_redis_server_that_stops_answering_fails_within_the_timeout_then_recovers(redis_server):
    store = open_store(redis_server.url, timeout_s=TIMEOUT_S)
    store.put_many("m", 1, [("k", b"v")])
    before = connections_received(redis_server.url)
    redis_server.pause()
    try:
        with pytest.raises(StoreUnavailable, match="Timeout"):
            without_hanging(lambda: store.get_many("m", 1, ["k"]))
    finally:
        redis_server.resume()
    assert store.get_many("m", 1, ["k"]) == [b"v"]
    # No retry reconnected while it was paused (the kernel would have queued those
    # connections): only the lookup's fresh connection and the one asking.
    assert connections_received(redis_server.url) - before == 2
    store.close()


def test_an_unreachable_redis_host_is_unavailable(tmp_path):
    from tests.conftest import free_port

    store = open_store(f"redis://127.0.0.1:{free_port()}/0", timeout_s=TIMEOUT_S)
    with pytest.raises(StoreUnavailable):
        without_hanging(lambda: store.get_many("m", 1, ["k"]))


def test_sqlite_reads_go_on_while_a_writer_holds_the_lock_and_writes_wait_only_timeout_s(tmp_path):
    path = tmp_path / "predictions.db"
    store = open_store(f"sqlite://{path}", timeout_s=TIMEOUT_S)
    store.put_many("m", 1, [("k", b"v")])
    writer = sqlite3.connect(path, isolation_level=None)  # another job, mid-transaction
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO predictions VALUES ('m', 1, 'w', x'00')")
    try:
        assert store.get_many("m", 1, ["k", "w"]) == [b"v", None]  # WAL: not blocked, not dirty
        with pytest.raises(StoreUnavailable, match="locked"):
            without_hanging(lambda: store.put_many("m", 1, [("k", b"v2")]))
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert store.get_many("m", 1, ["k", "w"]) == [b"v", b"\x00"]
    store.close()


def test_a_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path):
    store = open_store(f"sqlite://{tmp_path / 'no-such-dir' / 'p.db'}", timeout_s=TIMEOUT_S)
    with pytest.raises(StoreUnavailable, match="unable to open"):
        store.get_many("m", 1, ["k"])


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "p.db"
    path.write_bytes(b"not a database" * 100)
    store = open_store(f"sqlite://{path}", timeout_s=TIMEOUT_S)
    with pytest.raises(StoreError, match="not a database"):
        store.get_many("m", 1, ["k"])
