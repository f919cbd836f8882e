"""Hostile binary tensor data against ``serving.v2.raw.decode`` (and ``shapes.check`` with a
request's limits first, as the adapters call them): random bytes, valid encodings mutated,
BYTES data whose length prefixes lie, and tiny buffers declaring huge shapes (2**31 to
2**64 elements, negative, overflowing and mistyped dimensions).

Every outcome must be a correct array (its shape and dtype as declared, and encoding it
gives back exactly the bytes decoded: the codec is a bijection on valid data) or
InvalidArgument / PayloadTooLarge; never another exception. Memory is checked two ways: per
case, the peak that ``tracemalloc`` sees (numpy reports its buffers to it) stays within a
small multiple of the data's size, so no case allocates for what a shape merely claims; and
over the run, this process's VmRSS (``/proc/self/status``, as the gRPC and upstream fuzzes
read it) does not grow.
"""
from __future__ import annotations

import random
import struct
import time
import tracemalloc

import numpy as np
import pytest

from loadtests.support.processes import rss_kb
from serving.errors import InvalidArgument, PayloadTooLarge
from serving.runtime.shapes import TensorLimits
from serving.v2 import raw, shapes
from serving.v2.datatypes import BOOL, BYTES, DATATYPES, Datatype

FUZZ_CASES = 20_000
FUZZ_SECONDS = 60.0
"""A bound, not a timing assertion: the run takes a few seconds; a hang fails with a message."""
SEED = 24
LIMITS = TensorLimits(max_rows=1000, max_bytes=1 << 20)
PEAK_PER_BYTE = 40
"""What a decode may hold at its peak per byte of data: a BYTES element of 4 bytes (an empty
string) costs its bytes object, its pointer and two list entries, about 100 bytes."""
PEAK_SLACK = 64 << 10
RSS_SLACK_KB = 16 * 1024
HOSTILE_DIMS = [-1, -(2**63), 0, 1, 2, 3, 4, 7, 255, 1000, 1001, 2**31, 2**32, 2**32 + 1, 2**40, 2**59, 2**62,
                2**63 - 1, 2**63, 2**64]
MISTYPED = [True, False, 1.0, 2.5, "2", None, [1], {"a": 1}]


def _shape(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.03:
        return rng.choice(["2", 2, None, {"0": 1}, b"\x02", 2.0])
    rank = rng.choice([0, 1, 1, 2, 2, 3, 5, 64, 65])
    dims: list[object] = [rng.choice(HOSTILE_DIMS) if rng.random() < 0.3 else rng.randrange(0, 5)
                          for _ in range(rank)]
    if dims and rng.random() < 0.05:
        dims[rng.randrange(len(dims))] = rng.choice(MISTYPED)
    return dims


def _valid(rng: random.Random, dt: Datatype) -> tuple[bytes, list[int]]:
    shape = [rng.randrange(0, 4) for _ in range(rng.choice([0, 1, 2, 3]))]
    count = int(np.prod(shape))
    if dt is BYTES:
        array = np.empty(count, object)
        array[:] = [rng.randbytes(rng.choice([0, 0, 1, 3, 4, 17])) for _ in range(count)]
    elif dt is BOOL:
        array = np.array([rng.random() < 0.5 for _ in range(count)], bool)
    else:
        array = np.frombuffer(rng.randbytes(count * dt.itemsize), dt.wire).astype(dt.dtype)
    return raw.encode(array.reshape(shape), dt), shape


def _mutated(rng: random.Random, data: bytes, shape: list[int]) -> tuple[bytes, object]:
    data = bytearray(data)
    roll = rng.random()
    if roll < 0.3 and data:
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif roll < 0.5:
        del data[rng.randrange(len(data) + 1):]
    elif roll < 0.7:
        data += rng.randbytes(rng.choice([1, 3, 4, 8]))
    else:
        shape = list(shape) or [1]
        shape[rng.randrange(len(shape))] = rng.choice(HOSTILE_DIMS + MISTYPED[:3])
    return bytes(data), shape


def _lying_prefixes(rng: random.Random) -> tuple[bytes, object]:
    """BYTES data whose length prefixes point anywhere: inside, to the end, one past it, far
    past it; and a shape that counts as many elements, or one more or less, or 2**31."""
    parts, strings = [], rng.randrange(0, 6)
    for _ in range(strings):
        body = rng.randbytes(rng.choice([0, 1, 5]))
        claim = rng.choice([len(body)] * 4 + [len(body) + 1, len(body) + 4, 2**31, 2**32 - 1,
                                               max(0, len(body) - 1)])
        parts += [struct.pack("<I", claim), body]
    if rng.random() < 0.2:
        parts.append(rng.randbytes(rng.choice([1, 2, 3])))  # a length cut short
    count = rng.choice([strings, strings, strings + 1, max(0, strings - 1), 2**31, 2**32 // 4])
    return b"".join(parts), rng.choice([[count], [1, count], [count, 0]])


def _corpus(seed: int = SEED) -> list[tuple[str, Datatype, bytes, object]]:
    rng = random.Random(seed)
    cases = []
    while len(cases) < FUZZ_CASES:
        dt = BYTES if rng.random() < 0.35 else rng.choice(DATATYPES)
        roll = rng.random()
        if roll < 0.15:
            data, shape = _valid(rng, dt)
            cases.append(("valid", dt, data, shape))
        elif roll < 0.45:
            cases.append(("mutated valid", dt, *_mutated(rng, *_valid(rng, dt))))
        elif roll < 0.65:
            cases.append(("random bytes", dt, rng.randbytes(rng.randrange(0, 300)), _shape(rng)))
        elif roll < 0.85:
            cases.append(("lying length prefixes", BYTES, *_lying_prefixes(rng)))
        else:
            data = rng.randbytes(rng.choice([0, 1, 4, 8, 16]))
            cases.append(("huge shape, tiny data", dt, data, [rng.choice(HOSTILE_DIMS[8:])] + [1] * rng.randrange(3)))
    return cases


def _outcome(dt: Datatype, data: bytes, shape: object, with_limits: bool) -> str:
    """'ok' (the array checked correct here), or the refusal's class name."""
    try:
        if with_limits:
            shapes.check(shape, dt, "x", LIMITS)
        array = raw.decode(data, dt, shape, "x")
    except PayloadTooLarge:
        return "PayloadTooLarge"
    except InvalidArgument as error:
        assert error.message.startswith("Input 'x'"), error.message
        return "InvalidArgument"
    assert array.dtype == dt.dtype and array.shape == tuple(shape)
    assert raw.encode(array, dt) == data
    return "ok"


def test_hostile_binary_data_is_a_correct_array_or_a_refusal_in_bounded_memory():
    corpus = _corpus()
    for _, dt, data, shape in corpus[:200]:  # warm numpy's and the allocator's caches first
        try:
            raw.decode(data, dt, shape, "x")
        except InvalidArgument:
            pass
    outcomes: dict[str, int] = {}
    kinds: dict[str, set[str]] = {}
    bad: list[str] = []
    worst_peak = 0
    before = rss_kb()
    started = time.monotonic()
    tracemalloc.start()
    try:
        for i, (kind, dt, data, shape) in enumerate(corpus):
            assert time.monotonic() - started < FUZZ_SECONDS, f"fuzzing took over {FUZZ_SECONDS} s"
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            shown = repr(shape)[:80]
            try:
                outcome = _outcome(dt, data, shape, with_limits=i % 2 == 0)
            except Exception as error:  # noqa: BLE001 - anything but a refusal: collected, reported below
                outcome = type(error).__name__
                bad.append(f"{kind}: {dt.name} shape {shown} {len(data)} bytes: {outcome}: {error}"[:400])
            peak = tracemalloc.get_traced_memory()[1] - base
            if peak > PEAK_SLACK + PEAK_PER_BYTE * len(data):
                bad.append(f"{kind}: {dt.name} shape {shown} {len(data)} bytes: peak {peak} bytes")
            worst_peak = max(worst_peak, peak)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            kinds.setdefault(kind, set()).add(outcome)
    finally:
        tracemalloc.stop()
    after = rss_kb()
    print(f"raw.decode fuzz: {len(corpus)} cases, outcomes {outcomes}, worst traced peak {worst_peak} bytes, "
          f"VmRSS {before} kB -> {after} kB")
    assert not bad, "\n".join(bad[:20])
    assert set(outcomes) == {"ok", "InvalidArgument", "PayloadTooLarge"}
    assert kinds["valid"] == {"ok"} and "ok" in kinds["lying length prefixes"]
    assert min(outcomes.values()) > len(corpus) // 50, outcomes  # every outcome well exercised
    assert after - before < RSS_SLACK_KB, f"VmRSS grew from {before} to {after} kB"


@pytest.mark.parametrize("dt", DATATYPES, ids=lambda dt: dt.name)
def test_the_largest_claims_are_refused_without_allocating(dt):
    """Each datatype, the worst shapes a few bytes can declare, one by one."""
    tracemalloc.start()
    try:
        for shape in ([2**31], [2**32, 2**31], [2**59], [2**62, 0], [1000, 1000, 1000], [2**31 - 1, 1]):
            for data in (b"", b"\x00" * 4, struct.pack("<I", 2**32 - 1) * 4):
                tracemalloc.reset_peak()
                with pytest.raises(InvalidArgument):
                    raw.decode(data, dt, shape, "x")
                assert tracemalloc.get_traced_memory()[1] < PEAK_SLACK, (shape, data)
    finally:
        tracemalloc.stop()
