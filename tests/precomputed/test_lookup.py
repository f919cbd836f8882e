"""``serving.precomputed.lookup``: the batcher's run function behind the prediction store,
clause by clause of its module docstring, with an in-memory store and a model that records
what it is asked (the gateway tests, test_gateway_store.py, use the real stores and models)."""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from serving.errors import InvalidArgument
from serving.precomputed.api import StoreUnavailable
from serving.precomputed.codec import encode_rows
from serving.precomputed.lookup import (
    BREAKER_FAILURES,
    FALLBACK,
    HIT,
    KEYS,
    MISS,
    NO_KEY,
    OUTCOMES,
    Lookups,
    StoreLookup,
    key_column,
)
from serving.runtime.signature import PREDICT, SignatureSpec, TensorSpec

FAR = 1e18
"""A deadline (time.monotonic()) no test reaches."""


class MemoryStore:
    """A PredictionStore in a dict; ``fail`` makes every call raise StoreUnavailable,
    ``hold`` makes calls wait until it is set."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int, str], bytes] = {}
        self.calls: list[tuple[str, int, list[str]]] = []
        self.fail = False
        self.hold: threading.Event | None = None
        self.closed = False

    def put_many(self, model: str, version: int, items: Sequence[tuple[str, bytes]]) -> None:
        self.entries.update(((model, version, key), value) for key, value in items)

    def get_many(self, model: str, version: int, keys: Sequence[str]) -> list[bytes | None]:
        self.calls.append((model, version, list(keys)))
        if self.hold is not None:
            self.hold.wait(30)
        if self.fail:
            raise StoreUnavailable("the store is down")
        return [self.entries.get((model, version, key)) for key in keys]

    def close(self) -> None:
        self.closed = True


class Recorder:
    """LookupMetrics, kept."""

    def __init__(self) -> None:
        self.lookups = 0
        self.failures: list[str] = []

    def lookup(self, seconds: float) -> None:
        self.lookups += 1

    def failed(self, reason: str) -> None:
        self.failures.append(reason)


class Model:
    """y = x * 10 (and, with ``two``, z = -x), recording the rows of each call."""

    def __init__(self, two: bool = False) -> None:
        self.calls: list[list[float]] = []
        self.two = two

    def __call__(self, inputs: dict[str, np.ndarray], deadline: float) -> dict[str, np.ndarray]:
        assert KEYS not in inputs
        x = inputs["x"]
        self.calls.append(x.tolist())
        outputs = {"y": x * 10}
        if self.two:
            outputs = {"z": -x, "y": x * 10}  # not the signature's order
        return outputs


def spec(two: bool = False) -> SignatureSpec:
    outputs = {"y": TensorSpec("y", np.dtype(np.float32), (None,))}
    if two:
        outputs["z"] = TensorSpec("z", np.dtype(np.float32), (None,))
    return SignatureSpec("serving_default", PREDICT, {"x": TensorSpec("x", np.dtype(np.float32), (None,))},
                         outputs)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lookups(store):
    recorder = Recorder()
    opened = Lookups(store, timeout_s=5.0, threads=2, metrics=lambda model: recorder)
    opened.recorder = recorder  # type: ignore[attr-defined]
    yield opened
    opened.close()


def wrap(lookups: Lookups, model: Model, *, allowed: tuple[int, ...] = (), two: bool = False) -> StoreLookup:
    return lookups.wrap(model, model="m", version=3, spec=spec(two), allowed_batch_sizes=allowed)


def batch(x: Sequence[float], keys: Sequence[str | None]) -> dict[str, np.ndarray]:
    column = np.empty(len(keys), dtype=object)
    column[:] = list(keys)
    return {"x": np.array(x, np.float32), KEYS: column}


def put(store: MemoryStore, version: int, **rows: float) -> None:
    """Store y = value for each key (one row each)."""
    store.put_many("m", version, [(key, encode_rows({"y": np.array([value], np.float32)})[0])
                                  for key, value in rows.items()])


# -- the batch's rows, from the store or the model -------------------------------------

def test_hits_and_misses_come_back_in_row_order_with_one_lookup(lookups, store):
    put(store, 3, b=-1.0, d=-2.0)
    model = Model()

    outputs = wrap(lookups, model)(batch([1, 2, 3, 4, 5], ["a", "b", "c", "d", None]), FAR)

    assert outputs["y"].tolist() == [10, -1, 30, -2, 50]
    assert outputs[OUTCOMES].tolist() == [MISS, HIT, MISS, HIT, NO_KEY]
    assert model.calls == [[1, 3, 5]]
    assert store.calls == [("m", 3, ["a", "b", "c", "d"])]
    assert outputs["y"].dtype == np.float32


def test_a_batch_of_hits_only_never_calls_the_model(lookups, store):
    put(store, 3, a=7.0, b=8.0)
    model = Model()
    outputs = wrap(lookups, model)(batch([1, 2], ["a", "b"]), FAR)
    assert outputs["y"].tolist() == [7, 8] and outputs[OUTCOMES].tolist() == [HIT, HIT]
    assert model.calls == []


def test_rows_without_keys_are_not_looked_up(lookups, store):
    model = Model()
    outputs = wrap(lookups, model)(batch([1, 2], [None, None]), FAR)
    assert outputs["y"].tolist() == [10, 20] and outputs[OUTCOMES].tolist() == [NO_KEY, NO_KEY]
    assert store.calls == []


def test_inputs_without_a_key_column_go_to_the_model_as_they_are(lookups, store):
    model = Model()
    outputs = wrap(lookups, model)({"x": np.array([1.0], np.float32)}, FAR)
    assert list(outputs) == ["y"] and outputs["y"].tolist() == [10]
    assert store.calls == []


def test_entries_of_another_version_are_never_served(lookups, store):
    put(store, 2, a=-1.0)
    put(store, 4, a=-1.0)
    outputs = wrap(lookups, Model())(batch([1], ["a"]), FAR)
    assert outputs["y"].tolist() == [10] and outputs[OUTCOMES].tolist() == [MISS]


def test_the_models_call_is_padded_to_an_allowed_batch_size_and_cut_back(lookups, store):
    put(store, 3, b=-1.0)
    model = Model()
    outputs = wrap(lookups, model, allowed=(2, 4, 8))(batch([1, 2, 3, 4], ["a", "b", "c", "d"]), FAR)
    assert model.calls == [[1, 3, 4, 4]]  # three misses, padded to 4 by repeating the last
    assert outputs["y"].tolist() == [10, -1, 30, 40]


# -- falling back -----------------------------------------------------------------------

def test_a_store_error_sends_the_whole_batch_to_the_model(lookups, store):
    put(store, 3, a=-1.0)
    store.fail = True
    model = Model()
    outputs = wrap(lookups, model)(batch([1, 2, 3], ["a", "b", None]), FAR)
    assert outputs["y"].tolist() == [10, 20, 30]
    assert outputs[OUTCOMES].tolist() == [FALLBACK, FALLBACK, NO_KEY]
    assert model.calls == [[1, 2, 3]]
    assert lookups.recorder.failures == ["error"]


def test_after_repeated_failures_lookups_are_skipped(lookups, store):
    store.fail = True
    run = wrap(lookups, Model())
    for _ in range(BREAKER_FAILURES + 2):
        assert run(batch([1], ["a"]), FAR)[OUTCOMES].tolist() == [FALLBACK]
    assert len(store.calls) == BREAKER_FAILURES
    assert lookups.recorder.failures == ["error"] * BREAKER_FAILURES + ["skipped"] * 2


def test_a_hanging_store_is_waited_for_only_until_half_the_time_left(lookups, store):
    """The store would hold the call for 30 s; the deadline is 0.4 s away, so the lookup is
    abandoned after about 0.2 s and the model answers (a hang would fail the join)."""
    import time

    store.hold = threading.Event()
    model = Model()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        out=wrap(lookups, model)(batch([1], ["a"]), time.monotonic() + 0.4)))
    worker.start()
    worker.join(20)
    store.hold.set()
    assert not worker.is_alive(), "the lookup was not abandoned"
    assert result["out"][OUTCOMES].tolist() == [FALLBACK] and model.calls == [[1]]
    assert lookups.recorder.failures == ["timeout"]


def test_no_lookup_when_the_deadline_leaves_no_time(lookups, store):
    import time

    outputs = wrap(lookups, Model())(batch([1], ["a"]), time.monotonic() - 1)
    assert outputs[OUTCOMES].tolist() == [FALLBACK]
    assert store.calls == [] and lookups.recorder.failures == ["skipped"]


@pytest.mark.parametrize("entry", [
    b"not a row",
    encode_rows({"y": np.array([1], np.int64)})[0],  # another dtype
    encode_rows({"y": np.array([[1, 2]], np.float32)})[0],  # another row shape
    encode_rows({"w": np.array([1], np.float32)})[0],  # another output
])
def test_an_entry_that_does_not_fit_the_models_outputs_is_computed(lookups, store, entry):
    store.put_many("m", 3, [("a", entry)])
    put(store, 3, b=-1.0)
    model = Model()
    outputs = wrap(lookups, model)(batch([1, 2, 3], ["a", "b", "c"]), FAR)
    assert outputs["y"].tolist() == [10, 20, 30]
    assert outputs[OUTCOMES].tolist() == [FALLBACK, FALLBACK, MISS]  # the hits decode together
    assert model.calls == [[1, 2, 3]]


def test_several_outputs_are_served_once_the_model_has_given_their_order(lookups, store):
    # Written in the signature's order (y, z); the model answers z first.
    store.put_many("m", 3, [("a", encode_rows({"y": np.array([7], np.float32),
                                                "z": np.array([8], np.float32)})[0])])
    model = Model(two=True)
    run = wrap(lookups, model, two=True)

    first = run(batch([1], ["a"]), FAR)
    second = run(batch([1, 2], ["a", "b"]), FAR)
    third = run(batch([1], ["a"]), FAR)  # hits only

    assert first[OUTCOMES].tolist() == [FALLBACK]
    assert store.calls == [("m", 3, ["a", "b"]), ("m", 3, ["a"])]  # the first batch was not looked up
    assert list(second) == ["z", "y", OUTCOMES]
    assert second["y"].tolist() == [7, 20] and second["z"].tolist() == [8, -2]
    assert second[OUTCOMES].tolist() == [HIT, MISS]
    assert list(third) == ["z", "y", OUTCOMES] and third[OUTCOMES].tolist() == [HIT]
    assert model.calls == [[1], [2]]


def test_close_closes_the_store(store):
    Lookups(store, timeout_s=1.0, threads=1, metrics=lambda model: Recorder()).close()
    assert store.closed


# -- the key column -----------------------------------------------------------------------

def test_keys_are_normalised_once_per_instance():
    column = key_column(["a", 42, np.int64(7), b"b"], 4, "id")
    assert column.tolist() == ["a", "42", "7", "b"]
    assert key_column(np.array([[b"x"], [b"y"]], dtype=object), 2, "id").tolist() == ["x", "y"]
    assert key_column(None, 3, "id").tolist() == [None, None, None]


@pytest.mark.parametrize(("keys", "rows", "words"), [
    (["a", 1.5], 2, "got float 1.5 (instance 1)"),
    ([True], 1, "got bool True (instance 0)"),
    ([None], 1, "got NoneType None (instance 0)"),
    ([["a"]], 1, "got list"),
    (["a"], 2, "has 1 keys for 2 instances"),
    (np.array([[1, 2], [3, 4]]), 2, "one key per instance, got a tensor of shape [2, 2]"),
    (np.array(5), 1, "one key per instance, got a tensor of shape []"),
    (np.array([0.5, 1.5]), 2, "got float64"),
])
def test_a_bad_key_names_the_field(keys, rows, words):
    with pytest.raises(InvalidArgument, match="Key field 'id'") as refused:
        key_column(keys, rows, "id")
    assert words in refused.value.message
