"""The adaptive minibatcher: one queue per (model version, signature).

Contract (each point has a test in tests/batching/test_batcher.py):

- ``submit(tensors, rows, deadline)`` resolves to exactly the output rows of its own
  ``tensors``, in order, or raises a ``ServingError``. Results are never shared.
- Requests whose names, dtypes and row shapes agree are merged, in arrival order, into one
  call of at most ``max_batch_size`` rows; a larger request is split into chunks that run
  in consecutive batches and are joined back. A request with ``rows=None`` (its inputs do
  not share dimension 0) runs alone and whole.
- Merging stops at the batch size with the most rows/s measured so far (``SizeLadder``:
  a compute-bound model can be slower per row in big calls): a call's first request
  still gets up to ``max_batch_size`` rows, later ones join only while the call holds
  fewer rows than that size. Until sizes are measured there is no such cap.
- With ``max_request_rows`` set (TF Serving's ``enable_large_batch_splitting``, where
  ``max_batch_size`` bounds a request and ``max_execution_batch_size`` each call), a
  request with more rows raises ``InvalidArgument`` at once and is never queued.
- A batch is released when it is full (at that size), when its oldest request has waited
  ``batch_timeout_s``, or sooner when waiting is not worth it: the batcher learns the
  call cost ``per_row · n + fixed`` online (``CostModel``) and waits for another request
  only while one is expected sooner than ``fixed`` (the cost of a separate call). At low
  load a request therefore runs at once, as if unbatched; at high load batches fill.
- At most ``max_queued_rows`` rows wait; past that ``submit`` raises ``ResourceExhausted``
  at once, with a retry-after estimated from the queue and the cost model.
- A request whose deadline passes before it has started is removed and raises
  ``DeadlineExceeded``; its rows are never run. One whose deadline passes while it runs
  raises ``DeadlineExceeded`` then, its outputs discarded. Each request expires at its own
  deadline, whatever the order of arrivals (one timer, armed for the earliest). A
  cancelled ``submit`` (client gone) is removed the same way.
- If a merged call fails, every request of that batch is retried alone, so a bad request
  fails only itself and never hands its neighbours wrong rows.
- At most one batch per free slot of the shared ``slots`` semaphore runs, each in an
  ``executor`` thread: the event loop never runs the model.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Protocol

from serving.batching.cost import CostModel, SizeLadder
from serving.batching.rows import (
    BatchShapeError,
    Tensors,
    allowed_size,
    concat,
    first_rows,
    merge_key,
    pad_rows,
    slice_rows,
    split_rows,
)
from serving.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServingError, Unavailable

RunFn = Callable[[Tensors, float], Tensors]
"""The model call: a batch's inputs and its earliest deadline (time.monotonic()) -> outputs."""


class BatchMetrics(Protocol):
    """What the batcher reports; ``serving.metrics`` implements it per model."""

    def queued(self, rows: int) -> None: ...
    def queue_wait(self, seconds: float, rows: int) -> None: ...
    def batch(self, rows: int, seconds: float, padded_rows: int) -> None: ...


class _NoMetrics:
    def queued(self, rows: int) -> None:
        pass

    def queue_wait(self, seconds: float, rows: int) -> None:
        pass

    def batch(self, rows: int, seconds: float, padded_rows: int) -> None:
        pass


class _Pending:
    """One submitted request while it waits and runs."""

    __slots__ = ("tensors", "rows", "key", "deadline", "enqueued", "future", "taken", "returned",
                 "parts", "done")

    def __init__(self, tensors: Tensors, rows: int | None, key: Hashable, deadline: float,
                 enqueued: float, future: asyncio.Future) -> None:
        self.tensors = tensors
        self.rows = rows
        self.key = key
        self.deadline = deadline
        self.enqueued = enqueued
        self.future = future
        self.taken = 0  # rows handed to batches so far
        self.returned = 0  # rows whose outputs are back
        self.parts: dict[int, Tensors] = {}  # chunk start -> outputs
        self.done = False

    @property
    def weight(self) -> int:
        return self.rows if self.rows is not None else 1


Share = tuple[_Pending, int, int]  # a request's rows in one batch: request, first row, end row


class Batcher:
    """Merges concurrent requests for one model signature into few model calls."""

    def __init__(
        self,
        run: RunFn,
        *,
        slots: asyncio.Semaphore,
        executor: Executor,
        max_batch_size: int,
        batch_timeout_s: float,
        max_queued_rows: int,
        allowed_batch_sizes: tuple[int, ...] = (),
        max_request_rows: int | None = None,
        merge: bool = True,
        metrics: BatchMetrics | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if batch_timeout_s < 0:
            raise ValueError("batch_timeout_s must be >= 0")
        if max_queued_rows < max_batch_size:
            raise ValueError("max_queued_rows must be >= max_batch_size")
        if allowed_batch_sizes and allowed_batch_sizes[-1] != max_batch_size:
            raise ValueError("the last allowed batch size must equal max_batch_size")
        if max_request_rows is not None and max_request_rows < max_batch_size:
            raise ValueError("max_request_rows must be >= max_batch_size")
        self._run = run
        self._slots = slots
        self._executor = executor
        self.max_batch_size = max_batch_size
        self._timeout = batch_timeout_s
        self._max_queued_rows = max_queued_rows
        self._allowed = allowed_batch_sizes
        self._max_request_rows = max_request_rows
        self._merge = merge
        self._metrics: BatchMetrics = metrics or _NoMetrics()
        self.cost = CostModel()
        self.sizes = SizeLadder.for_batches(max_batch_size, allowed_batch_sizes)
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._arrived = asyncio.Event()
        self._gap: float | None = None  # smoothed seconds between arrivals
        self._last_arrival: float | None = None
        self._dispatcher: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._progress = asyncio.Event()  # set whenever queued or running work changes
        self._closed = False
        self._live: set[_Pending] = set()  # submitted and not yet answered
        self._expiry: asyncio.TimerHandle | None = None  # fires at the earliest live deadline...
        self._expiry_at = math.inf  # ...which is this

    # -- public -------------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_loop())

    async def stop(self) -> None:
        """Refuse new work, fail what is still queued, let running batches finish."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        while self._queue:
            self._fail(self._queue.popleft(), Unavailable("The model is being unloaded"))
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._expiry is not None:  # every request is answered now: nothing left to expire
            self._expiry.cancel()

    async def drain(self) -> None:
        """Refuse new work, let everything queued and running finish, then stop.

        Used when a model version is unloaded: requests already accepted are answered.
        """
        self._closed = True
        while self._live_head() is not None or self._running:
            self._progress.clear()
            await self._progress.wait()
        await self.stop()

    async def submit(self, tensors: Tensors, rows: int | None, deadline: float) -> Tensors:
        """Queue a request and wait for its own outputs. ``deadline`` is time.monotonic()."""
        if self._closed:
            raise Unavailable("The model is being unloaded")
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineExceeded("Deadline exceeded before the request was queued")
        if rows is not None and self._max_request_rows is not None and rows > self._max_request_rows:
            raise InvalidArgument(  # TF Serving's words (SharedBatchScheduler's queue)
                f"Task size {rows} is larger than maximum input batch size {self._max_request_rows}")
        mergeable_rows = rows if self._merge else None
        weight = mergeable_rows if mergeable_rows is not None else 1
        if self._queued_rows and self._queued_rows + weight > self._max_queued_rows:
            raise ResourceExhausted(
                f"The batch queue is full ({self._queued_rows} rows waiting)",
                retry_after_s=self._retry_after(),
            )
        item = _Pending(tensors, mergeable_rows, merge_key(tensors), deadline, now,
                        asyncio.get_running_loop().create_future())
        self._note_arrival(now)
        self._queue.append(item)
        self._add_queued(item.weight)
        self._arrived.set()
        self._live.add(item)
        if deadline < self._expiry_at:
            self._expire_at(deadline, now)
        try:
            return await item.future
        except asyncio.CancelledError:
            self._abandon(item)
            raise
        finally:
            self._live.discard(item)

    # -- queue bookkeeping ---------------------------------------------------------------

    def _add_queued(self, rows: int) -> None:
        self._queued_rows += rows
        self._metrics.queued(rows)
        self._progress.set()

    def _note_arrival(self, now: float) -> None:
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self._gap = gap if self._gap is None else 0.8 * self._gap + 0.2 * gap
        self._last_arrival = now

    def _untaken(self, item: _Pending) -> int:
        return item.weight - item.taken

    def _abandon(self, item: _Pending) -> None:
        """The caller is gone: drop its remaining rows; running chunks are discarded."""
        if not item.done:
            item.done = True
            self._add_queued(-self._untaken(item))

    def _expire_at(self, deadline: float, now: float) -> None:
        """(Re)arm the one expiry timer for ``deadline``, now the earliest of the live requests."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = deadline
        self._expiry = asyncio.get_running_loop().call_later(deadline - now, self._expire_due)

    def _expire_due(self) -> None:
        """Fail every live request whose deadline is due (the timer was armed for the
        earliest), then re-arm for the earliest of the rest."""
        due, self._expiry, self._expiry_at = self._expiry_at, None, math.inf
        earliest = math.inf
        for item in list(self._live):
            if item.done:
                continue
            if item.deadline <= due:
                self._expire(item)
            else:
                earliest = min(earliest, item.deadline)
        if earliest < math.inf:
            self._expire_at(earliest, time.monotonic())

    def _expire(self, item: _Pending) -> None:
        started = item.taken > 0
        self._fail(item, DeadlineExceeded(
            "Deadline exceeded while the request was running" if started
            else "Deadline exceeded while the request waited in the batch queue"
        ))

    def _fail(self, item: _Pending, error: BaseException) -> None:
        if item.done:
            return
        self._abandon(item)
        if not item.future.done():
            item.future.set_exception(_as_serving_error(error))

    def _retry_after(self) -> int:
        batches = math.ceil(self._queued_rows / self.max_batch_size)
        return max(1, math.ceil(batches * self.cost.estimate(self.max_batch_size)))

    # -- dispatching ---------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            while not self._live_head():
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            try:
                cap = self.sizes.cap()
                await self._gather_more(cap)
                shares = self._take_batch(cap)
            except BaseException:
                self._slots.release()
                raise
            if not shares:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(shares))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _live_head(self) -> _Pending | None:
        while self._queue and self._queue[0].done:
            self._queue.popleft()
        return self._queue[0] if self._queue else None

    async def _gather_more(self, cap: int) -> None:
        """Wait while more rows are expected soon enough to be worth it (see module doc)."""
        while True:
            head = self._live_head()
            if head is None:
                return
            delay = self._worth_waiting(head, time.monotonic(), cap)
            if delay <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), delay)
            except TimeoutError:
                return

    def _worth_waiting(self, head: _Pending, now: float, cap: int) -> float:
        if head.rows is None or self._queued_rows >= cap:
            return 0.0
        left = head.enqueued + self._timeout - now
        if left <= 0 or not self.cost.known or self._gap is None:
            return 0.0
        _, fixed = self.cost.coefficients()
        if self._gap >= fixed:
            return 0.0
        slack = head.deadline - now - self.cost.estimate(self._queued_rows + 1)
        return min(left, 2 * self._gap, slack)

    def _take_batch(self, cap: int) -> list[Share]:
        """Pop compatible rows in arrival order: up to max_batch_size from the first request,
        from later ones only while the batch holds fewer than ``cap``."""
        shares: list[Share] = []
        skipped: list[_Pending] = []
        capacity = self.max_batch_size
        key: Hashable = None
        while self._queue and capacity > 0:
            item = self._queue.popleft()
            if item.done:
                continue
            if shares and (item.rows is None or item.key != key):
                skipped.append(item)
                continue
            if item.rows is None:
                shares.append((item, 0, 1))
                item.taken = 1
                break
            key = item.key
            take = min(item.rows - item.taken, capacity)
            shares.append((item, item.taken, item.taken + take))
            item.taken += take
            capacity -= take
            if len(shares) == 1:  # later requests fill the call only up to the measured best size
                capacity = min(capacity, cap - take)
            if item.taken < item.rows:
                self._queue.appendleft(item)
        self._queue.extendleft(reversed(skipped))
        taken = sum(stop - start for _, start, stop in shares)
        self._add_queued(-taken)
        now = time.monotonic()
        for item, start, _ in shares:
            if start == 0:
                self._metrics.queue_wait(now - item.enqueued, item.weight)
        return shares

    async def _execute(self, shares: list[Share]) -> None:
        try:
            await self._run_shares(shares)
        finally:
            self._slots.release()
            self._running.discard(asyncio.current_task())
            self._progress.set()

    async def _run_shares(self, shares: list[Share]) -> None:
        shares = [c for c in shares if not c[0].done]
        if not shares:
            return
        alone = shares[0][0].rows is None  # runs whole, outputs taken as they come
        if alone:
            inputs, rows = shares[0][0].tensors, None
        else:
            inputs = concat([item.tensors if stop - start == item.rows else slice_rows(item.tensors, start, stop)
                             for item, start, stop in shares])
            rows = sum(stop - start for _, start, stop in shares)
        target = allowed_size(rows, self._allowed) if rows is not None else None
        if target is not None and target != rows:
            inputs = pad_rows(inputs, rows, target)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            deadline = min(item.deadline for item, _, _ in shares)
            outputs = await loop.run_in_executor(self._executor, self._run, inputs, deadline)
            elapsed = time.monotonic() - started
            if target is not None:
                self.cost.observe(target, elapsed)
                self.sizes.observe(target, elapsed)
            self._metrics.batch(rows or 1, elapsed, target or 1)
            if target != rows:
                outputs = first_rows(outputs, rows)
            parts = [outputs] if alone else split_rows(outputs, [b - a for _, a, b in shares])
        except Exception as error:  # noqa: BLE001 - every failure is routed to its requests
            if len(shares) > 1:
                for share in shares:  # isolate the failing request(s)
                    await self._run_shares([share])
            else:
                self._fail(shares[0][0], error)
            return
        for (item, start, stop), part in zip(shares, parts):
            self._deliver(item, start, stop, part)

    def _deliver(self, item: _Pending, start: int, stop: int, part: Tensors) -> None:
        """Keep a chunk's outputs; once all of a request's rows are back, answer it."""
        if item.done:
            return
        item.parts[start] = part
        item.returned += stop - start
        if item.returned < item.weight:
            return
        item.done = True
        result = part if len(item.parts) == 1 else concat([item.parts[s] for s in sorted(item.parts)])
        item.future.set_result(result)


def _as_serving_error(error: BaseException) -> ServingError:
    if isinstance(error, ServingError):
        return error
    if isinstance(error, BatchShapeError):
        return ServingError(f"The model broke the batching contract: {error}")
    return ServingError(f"Model execution failed: {error}")
