"""The batcher's contract (serving/batching/batcher.py), one race or rule per test.

Handlers are held back with threading.Events, never with sleeps, so each test decides
exactly what is queued while a batch runs.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batching.batcher import Batcher
from serving.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServingError, Unavailable


class Model:
    """y = 2x, recording every batch it sees; optionally held until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[np.ndarray] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, tensors: dict[str, np.ndarray], deadline: float) -> dict[str, np.ndarray]:
        self.entered.set()
        self.release.wait(timeout=30)
        x = tensors["x"]
        self.batches.append(x.copy())
        if (x < 0).any():
            raise InvalidArgument("negative input")
        return {"y": x * 2}


class Gated:
    """y = 2x; each call waits in its executor thread until the test finishes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False
        self._calls: dict[float, threading.Event] = {}  # first x of each call running -> its release
        self.batches: list[list[float]] = []  # each call's x, in the order calls started
        self.most_running = 0
        self.threads: set[int] = set()  # the threads that ran the model

    def __call__(self, tensors: dict[str, np.ndarray], deadline: float) -> dict[str, np.ndarray]:
        x = tensors["x"]
        release = threading.Event()
        with self._lock:
            self.batches.append(x.tolist())
            self.threads.add(threading.get_ident())
            self._calls[float(x[0])] = release
            self.most_running = max(self.most_running, len(self._calls))
            if self._open:
                release.set()
        release.wait(timeout=30)
        with self._lock:
            del self._calls[float(x[0])]
        return {"y": x * 2}

    def running(self) -> int:
        with self._lock:
            return len(self._calls)

    def finish(self, first: float) -> None:
        """Let the running call whose first row is ``first`` return."""
        with self._lock:
            self._calls[first].set()

    def open(self) -> None:
        """Let every call, running or to come, return."""
        with self._lock:
            self._open = True
            for release in self._calls.values():
                release.set()


@pytest.fixture
def executor():
    # More threads than any test has slots: the slots, not the pool, limit what runs.
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def make(model, executor, slots: asyncio.Semaphore | None = None, **kwargs) -> Batcher:
    options = dict(max_batch_size=8, batch_timeout_s=0.002, max_queued_rows=64)
    options.update(kwargs)
    batcher = Batcher(model, slots=slots or asyncio.Semaphore(1), executor=executor, **options)
    batcher.start()
    return batcher


async def busy(executor, **kwargs) -> tuple[Model, Batcher, asyncio.Future]:
    """A batcher whose model is held running a first 1-row request, x=1."""
    model = Model(hold=True)
    batcher = make(model, executor, **kwargs)
    running = asyncio.ensure_future(batcher.submit(rows(1), 1, deadline()))
    await wait_for(model.entered.is_set)
    return model, batcher, running


def deadline(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32)}


async def wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll a condition with a deadline (tests never sleep for a fixed time)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def test_concurrent_requests_get_their_own_rows_and_are_merged(executor):
    model = Model(hold=True)
    batcher = make(model, executor, max_batch_size=64, max_queued_rows=1024)
    first = asyncio.ensure_future(batcher.submit(rows(-0.5 + 1), 1, deadline()))
    await wait_for(model.entered.is_set)
    tasks = [asyncio.ensure_future(batcher.submit(rows(i, i + 0.5), 2, deadline())) for i in range(200)]
    await wait_for(lambda: batcher.queued_rows == 400)
    model.release.set()
    results = await asyncio.gather(*tasks)
    await first
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [2 * i, 2 * i + 1])
    assert len(model.batches) < 20  # 1 + ceil(400 / 64) = 8 calls, not 201
    assert max(len(b) for b in model.batches) == 64
    await batcher.stop()


async def test_request_larger_than_max_batch_is_split_and_joined(executor):
    model = Model()
    batcher = make(model, executor, max_batch_size=4)
    values = np.arange(10, dtype=np.float32)
    result = await batcher.submit({"x": values}, 10, deadline())
    np.testing.assert_array_equal(result["y"], values * 2)
    assert [len(b) for b in model.batches] == [4, 4, 2]
    await batcher.stop()


async def test_merging_stops_at_the_fastest_measured_size(executor):
    """Calls of 4 rows were measured fastest: later requests join a call only up to 4 rows,
    while a call's first request still gets up to max_batch_size."""
    model, batcher, running = await busy(executor, max_batch_size=16)
    for size in (1, 2, 4, 8, 16):  # seconds per call: slowest per row at 1 and past 4
        for _ in range(5):
            batcher.sizes.observe(size, size * {1: 9.0, 2: 8.5, 4: 8.0}.get(size, 8.0 + size))
    assert batcher.sizes.cap() == 4
    big = asyncio.ensure_future(batcher.submit({"x": np.arange(6, dtype=np.float32)}, 6, deadline()))
    small = [asyncio.ensure_future(batcher.submit(rows(i), 1, deadline())) for i in range(10, 18)]
    await wait_for(lambda: batcher.queued_rows == 14)
    model.release.set()
    await running
    np.testing.assert_array_equal((await big)["y"], np.arange(6) * 2)
    for i, task in zip(range(10, 18), small):
        np.testing.assert_array_equal((await task)["y"], [2 * i])
    assert [len(b) for b in model.batches[1:]] == [6, 4, 4]
    await batcher.stop()


async def test_request_over_max_request_rows_is_refused_at_once_and_never_runs(executor):
    """TF Serving's large batch splitting: max_batch_size (here max_request_rows) bounds a
    request, max_execution_batch_size (here max_batch_size) each call."""
    model = Model()
    batcher = make(model, executor, max_batch_size=4, max_request_rows=10)
    with pytest.raises(InvalidArgument, match="Task size 11 is larger than maximum input batch size 10"):
        await batcher.submit({"x": np.arange(11, dtype=np.float32)}, 11, deadline())
    assert batcher.queued_rows == 0 and model.batches == []
    values = np.arange(10, dtype=np.float32)  # at the bound: split into calls of 4
    result = await batcher.submit({"x": values}, 10, deadline())
    np.testing.assert_array_equal(result["y"], values * 2)
    assert [len(b) for b in model.batches] == [4, 4, 2]
    await batcher.stop()


async def test_full_queue_rejects_at_once_with_retry_after(executor):
    model = Model(hold=True)
    batcher = make(model, executor, max_batch_size=4, max_queued_rows=8)
    running = asyncio.ensure_future(batcher.submit(rows(1, 2, 3, 4), 4, deadline()))
    await wait_for(model.entered.is_set)
    queued = [asyncio.ensure_future(batcher.submit(rows(1, 2, 3, 4), 4, deadline())) for _ in range(2)]
    await wait_for(lambda: batcher.queued_rows == 8)
    with pytest.raises(ResourceExhausted) as info:
        await batcher.submit(rows(1), 1, deadline())
    assert info.value.retry_after_s >= 1
    model.release.set()
    await asyncio.gather(running, *queued)
    await batcher.stop()


async def test_deadline_expiring_in_queue_fails_and_never_runs(executor):
    model, batcher, running = await busy(executor)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows(777), 1, deadline(0.05))
    assert batcher.queued_rows == 0
    model.release.set()
    await running
    later = await batcher.submit(rows(3), 1, deadline())
    np.testing.assert_array_equal(later["y"], [6])
    assert all(777 not in b for b in model.batches)
    await batcher.stop()


async def test_each_request_expires_at_its_own_deadline_whatever_the_order(executor):
    """One timer serves every deadline: a request behind one with a later deadline still
    expires at its own, the later one at its own, and a running one is answered at its
    deadline while the model still holds its rows."""
    model, batcher, running = await busy(executor)
    late = asyncio.ensure_future(batcher.submit(rows(888), 1, deadline(0.3)))
    with pytest.raises(DeadlineExceeded, match="waited in the batch queue"):
        await batcher.submit(rows(777), 1, deadline(0.05))
    assert not late.done()
    with pytest.raises(DeadlineExceeded, match="waited in the batch queue"):
        await asyncio.wait_for(late, 10)  # not at the running request's (30 s): a hang guard
    model.release.set()
    await running
    model.release.clear()
    model.entered.clear()
    held = asyncio.ensure_future(batcher.submit(rows(5), 1, deadline(0.1)))
    await wait_for(model.entered.is_set)
    with pytest.raises(DeadlineExceeded, match="while the request was running"):
        await asyncio.wait_for(held, 10)
    model.release.set()
    assert all(777 not in b and 888 not in b for b in model.batches)
    await batcher.stop()


async def test_cancelled_request_is_removed_from_the_queue(executor):
    model, batcher, running = await busy(executor)
    gone = asyncio.ensure_future(batcher.submit(rows(555), 1, deadline()))
    await wait_for(lambda: batcher.queued_rows == 1)
    gone.cancel()
    await wait_for(lambda: batcher.queued_rows == 0)
    model.release.set()
    await running
    await batcher.submit(rows(2), 1, deadline())
    assert all(555 not in b for b in model.batches)
    await batcher.stop()


async def test_one_failing_request_does_not_fail_its_batch(executor):
    model, batcher, running = await busy(executor, max_batch_size=16)
    good = [asyncio.ensure_future(batcher.submit(rows(i), 1, deadline())) for i in range(1, 6)]
    bad = asyncio.ensure_future(batcher.submit(rows(-1), 1, deadline()))
    await wait_for(lambda: batcher.queued_rows == 6)
    model.release.set()
    await running
    for i, task in enumerate(good, start=1):
        np.testing.assert_array_equal((await task)["y"], [2 * i])
    with pytest.raises(InvalidArgument, match="negative"):
        await bad
    assert any(len(b) == 6 for b in model.batches)  # the merged attempt happened
    await batcher.stop()


async def test_model_breaking_the_row_contract_fails_cleanly(executor):
    def shrink(tensors, deadline):
        return {"y": tensors["x"][:1]}

    batcher = make(shrink, executor)
    with pytest.raises(ServingError, match="The model broke the batching contract") as info:
        await batcher.submit(rows(1, 2), 2, deadline())
    assert type(info.value) is ServingError  # INTERNAL (500): the model's fault, not the request's
    await batcher.stop()


async def test_unmergeable_request_runs_alone_and_whole(executor):
    model, batcher, running = await busy(executor)
    alone = asyncio.ensure_future(batcher.submit(rows(5, 6, 7), None, deadline()))
    other = asyncio.ensure_future(batcher.submit(rows(9), 1, deadline()))
    await wait_for(lambda: batcher.queued_rows == 2)
    model.release.set()
    await running
    np.testing.assert_array_equal((await alone)["y"], [10, 12, 14])
    np.testing.assert_array_equal((await other)["y"], [18])
    assert [list(b) for b in model.batches[1:]] == [[5, 6, 7], [9]]
    await batcher.stop()


async def test_different_row_shapes_are_not_merged(executor):
    model, batcher, running = await busy(executor)
    flat = asyncio.ensure_future(batcher.submit(rows(2), 1, deadline()))
    wide = asyncio.ensure_future(
        batcher.submit({"x": np.array([[3, 4]], dtype=np.float32)}, 1, deadline())
    )
    await wait_for(lambda: batcher.queued_rows == 2)
    model.release.set()
    await running
    np.testing.assert_array_equal((await flat)["y"], [4])
    np.testing.assert_array_equal((await wide)["y"], [[6, 8]])
    await batcher.stop()


async def test_batches_are_padded_to_allowed_sizes(executor):
    model = Model()
    batcher = make(model, executor, max_batch_size=8, allowed_batch_sizes=(2, 8))
    result = await batcher.submit(rows(1, 2, 3), 3, deadline())
    np.testing.assert_array_equal(result["y"], [2, 4, 6])
    assert [len(b) for b in model.batches] == [8]
    await batcher.stop()


async def test_stop_fails_queued_requests(executor):
    model, batcher, running = await busy(executor)
    queued = asyncio.ensure_future(batcher.submit(rows(2), 1, deadline()))
    await wait_for(lambda: batcher.queued_rows == 1)
    stopping = asyncio.ensure_future(batcher.stop())
    with pytest.raises(Unavailable):
        await queued
    model.release.set()
    await running
    await stopping
    with pytest.raises(Unavailable):
        await batcher.submit(rows(3), 1, deadline())


def test_waits_only_when_another_request_is_expected_sooner_than_a_call_costs(executor):
    """The adaptive rule, on a cost model fitted to known numbers."""

    async def scenario() -> tuple[float, float]:
        batcher = Batcher(Model(), slots=asyncio.Semaphore(1), executor=executor,
                          max_batch_size=64, batch_timeout_s=0.010, max_queued_rows=640)
        for n in (1, 8, 32, 64):
            batcher.cost.observe(n, 0.001 + 0.00001 * n)  # fixed 1 ms, 10 us per row
        head = type("Head", (), {"rows": 1, "enqueued": time.monotonic(),
                                 "deadline": time.monotonic() + 30})()
        batcher._gap = 0.005  # low load: next request in 5 ms, a call costs 1 ms
        low = batcher._worth_waiting(head, time.monotonic(), 64)
        batcher._gap = 0.0002  # high load: next request in 0.2 ms
        high = batcher._worth_waiting(head, time.monotonic(), 64)
        return low, high

    low, high = asyncio.run(scenario())
    assert low == 0.0
    assert 0.0 < high <= 0.010


async def test_batch_is_released_once_its_oldest_request_has_waited_batch_timeout(executor):
    """Though another request is expected soon enough to be worth waiting for (for 80 s),
    the batch goes to the free slot after batch_timeout_s, while the other slot stays busy.

    No clock is injectable, so the test cannot tell the oldest request's wait from the
    newest's; it shows the timeout caps the wait: without it the poll's 10 s would run out.
    """
    model = Gated()
    batcher = make(model, executor, slots=asyncio.Semaphore(2), batch_timeout_s=0.05)
    busy = asyncio.ensure_future(batcher.submit(rows(1), 1, deadline()))
    await wait_for(lambda: model.running() == 1)
    for _ in range(3):
        batcher.cost.observe(1, 100.0)  # a separate call costs 100 s...
    batcher._gap = 50.0  # ...and the next request is expected within 2 x 40 s: worth waiting
    alone = asyncio.ensure_future(batcher.submit(rows(2), 1, deadline(1000)))
    await wait_for(lambda: model.running() == 2)
    assert model.batches == [[1.0], [2.0]]  # released alone, on the second slot
    assert batcher.queued_rows == 0
    model.open()
    np.testing.assert_array_equal((await alone)["y"], [4])
    np.testing.assert_array_equal((await busy)["y"], [2])
    await batcher.stop()


async def test_at_most_one_batch_per_free_slot_of_the_shared_semaphore(executor):
    """Two batchers share two slots; the executor has more threads than that."""
    model = Gated()
    slots = asyncio.Semaphore(2)
    batchers = [make(model, executor, slots=slots, max_batch_size=1) for _ in range(2)]
    values = {0: (1, 2, 3), 1: (11, 12, 13)}
    tasks = {v: asyncio.ensure_future(batchers[b].submit(rows(v), 1, deadline()))
             for b in values for v in values[b]}

    def queued() -> int:
        return sum(batcher.queued_rows for batcher in batchers)

    await wait_for(lambda: len(model.batches) >= 2)
    assert queued() == 4, model.batches  # both slots busy: no third batch was taken
    model.finish(model.batches[0][0])
    await wait_for(lambda: len(model.batches) >= 3)
    assert queued() == 3, model.batches  # one slot freed, one more batch
    assert model.running() == 2
    model.open()
    for v, task in tasks.items():
        np.testing.assert_array_equal((await task)["y"], [2 * v])
    assert model.most_running == 2
    assert threading.get_ident() not in model.threads  # the event loop never ran the model
    for batcher in batchers:
        await batcher.stop()


async def test_drain_answers_everything_accepted_then_refuses(executor):
    model, batcher, running = await busy(executor)
    queued = [asyncio.ensure_future(batcher.submit(rows(i), 1, deadline())) for i in (2, 3)]
    await wait_for(lambda: batcher.queued_rows == 2)
    draining = asyncio.ensure_future(batcher.drain())
    await wait_for(lambda: batcher._closed)
    with pytest.raises(Unavailable):
        await batcher.submit(rows(4), 1, deadline())
    model.release.set()
    await draining
    np.testing.assert_array_equal((await running)["y"], [2])
    assert [(await q)["y"].tolist() for q in queued] == [[4], [6]]
