"""Hostile binary-extension requests against a real gateway process over v2 REST:
``Inference-Header-Content-Length`` values, ``binary_data_size`` lies, BYTES length prefixes,
tiny bodies claiming huge shapes, and valid requests mutated at random.

Every answer must be a deliberate 4xx with a ``{"error"}`` body (or a 200, for a random
case that happens to be a valid request; never for a named one), the process must stay up, and its resident memory
(``/proc/PID/status`` VmRSS of the gateway process alone, as ``tests/grpc/test_hostile_tensors``
measures it) must not grow: sizes are checked before anything is allocated.
"""
from __future__ import annotations

import json
import random
import struct
import sys
import time

import httpx
import numpy as np
import pytest

from loadtests.support.processes import Server, free_port, rss_kb
from tests.v2.models import hostile_models_config

FUZZ_CASES = 400
FUZZ_SECONDS = 120.0
RSS_SLACK_KB = 8 * 1024
DELIBERATE = {400, 404, 413}
HALF = "/v2/models/half_plus_two/infer"
TEXT = "/v2/models/text/infer"


def _body(doc: dict, binary: bytes = b"", length: str | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(doc).encode()
    return head + binary, {"Inference-Header-Content-Length": str(len(head)) if length is None else length}


def _x(shape: object, size: object, binary: bytes) -> tuple[bytes, dict[str, str]]:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": size}}]}
    return _body(doc, binary)


def _text(shape: object, binary: bytes, size: object = None) -> tuple[bytes, dict[str, str]]:
    size = len(binary) if size is None else size
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": size}}]}
    return _body(doc, binary)


def _prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


VALID_X = np.array([1, 2, 3], "<f4").tobytes()


def _known_hostile() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(name, path, body, headers): each a named way to lie."""
    valid_body, _ = _x([3, 1], 12, VALID_X)
    cases = [
        (f"header length {value!r}", HALF, valid_body, {"Inference-Header-Content-Length": value})
        for value in ("-1", "abc", "1e3", "0x10", "99999999999999999999999", str(len(valid_body) + 1), "0", "",
                      "\u0661\u0662".encode())
    ]
    cases += [
        ("binary_data_size larger than the data", HALF, *_x([3, 1], 13, VALID_X)),
        ("binary_data_size smaller than the data", HALF, *_x([3, 1], 11, VALID_X)),
        ("binary_data_size negative", HALF, *_x([3, 1], -12, VALID_X)),
        ("binary_data_size a bool", HALF, *_x([3, 1], True, VALID_X)),
        ("binary_data_size a float", HALF, *_x([3, 1], 12.0, VALID_X)),
        ("binary_data_size a string", HALF, *_x([3, 1], "12", VALID_X)),
        ("binary_data_size 2**63", HALF, *_x([3, 1], 2**63, VALID_X)),
        ("binary_data_size 2**64 on a huge shape", HALF, *_x([2**62, 1], 2**64, VALID_X)),
        ("2**31 rows from 12 bytes", HALF, *_x([2**31, 1], 12, VALID_X)),
        ("2**40 elements from 12 bytes", HALF, *_x([3, 2**40], 12, VALID_X)),
        ("overflowing shape", HALF, *_x([2**32, 2**32, 2**32], 12, VALID_X)),
        ("negative dimension", HALF, *_x([-3, 1], 12, VALID_X)),
        ("65 dimensions", HALF, *_x([1] * 65, 12, VALID_X)),
        ("a million dimensions", HALF, *_x([1] * 1_000_000, 12, VALID_X)),
        ("BYTES prefix 2**32-1 with 3 bytes", TEXT, *_text([1], struct.pack("<I", 2**32 - 1) + b"abc")),
        ("BYTES prefix past the end", TEXT, *_text([2], _prefixed(b"ab") + struct.pack("<I", 9) + b"x")),
        ("BYTES leftover bytes", TEXT, *_text([1], _prefixed(b"ab") + b"zz")),
        ("BYTES too few bytes for the elements", TEXT, *_text([2**40], _prefixed(b"ab"))),
        ("BYTES truncated prefix", TEXT, *_text([2], _prefixed(b"ab") + b"\x01\x00")),
        ("BYTES two inputs' worth claimed by one", TEXT, *_text([1], _prefixed(b"a", b"b"))),
        ("data and binary_data_size both", HALF, *_body({"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 3],
             "parameters": {"binary_data_size": 12}}]}, VALID_X)),
        ("data past a binary header", HALF, *_body({"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 3]}]}, VALID_X)),
        ("binary data without the header", HALF, _x([3, 1], 12, VALID_X)[0], {}),
        ("10000 inputs, the last a duplicate", HALF, *_body({"inputs": [  # found in one pass, not n**2
            {"name": f"in{i}", "datatype": "FP32", "shape": [1], "data": [1]} for i in range(10_000)] + [
            {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}] * 2})),
        ("non-JSON header", HALF, b"\xff\xfe" + VALID_X, {"Inference-Header-Content-Length": "2"}),
    ]
    return cases


def _mutate(rng: random.Random, body: bytes) -> bytes:
    mutated = bytearray(body)
    for _ in range(rng.randrange(1, 6)):
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
    return bytes(mutated)


def _fuzz_corpus(seed: int = 24) -> list[tuple[str, str, bytes, dict[str, str]]]:
    rng = random.Random(seed)
    cases = _known_hostile()
    dims = [-1, 0, 1, 3, 2**31, 2**32 + 1, 2**62, 2**63]
    while len(cases) < FUZZ_CASES:
        roll = rng.random()
        if roll < 0.3:
            body, headers = _x([3, 1], 12, VALID_X)
            cases.append(("mutated valid FP32", HALF, _mutate(rng, body), headers))
        elif roll < 0.5:
            words = [rng.randbytes(rng.randrange(0, 8)) for _ in range(rng.randrange(1, 4))]
            body, headers = _text([len(words)], _prefixed(*words))
            cases.append(("mutated valid BYTES", TEXT, _mutate(rng, body), headers))
        elif roll < 0.7:
            shape = [rng.choice(dims) for _ in range(rng.randrange(0, 4))]
            size = rng.choice([0, 4, 12, 13, 2**31, -1, 2**63])
            cases.append(("random shape and size", HALF, *_x(shape, size, rng.randbytes(rng.randrange(0, 40)))))
        elif roll < 0.85:
            count = rng.choice([1, 2, 3, 2**20, 2**33])
            data = b"".join(struct.pack("<I", rng.choice([0, 1, 5, 2**31, 2**32 - 1])) + rng.randbytes(rng.randrange(4))
                            for _ in range(rng.randrange(1, 5)))
            cases.append(("random BYTES prefixes", TEXT, *_text([count], data)))
        else:
            body, _ = _x([3, 1], 12, VALID_X)
            length = rng.choice([str(rng.randrange(-5, len(body) + 5)), str(2**rng.randrange(64)),
                                 rng.randbytes(3).hex()])
            cases.append(("random header length", HALF, body, {"Inference-Header-Content-Length": length}))
    return cases


@pytest.fixture
def gateway(tfserving_dir, tmp_path):
    config = hostile_models_config(tmp_path, tfserving_dir)
    rest_port = free_port()
    argv = [sys.executable, "-m", "serving", "--port=0", f"--rest_api_port={rest_port}",
            f"--model_config_file={config}", "--max_rows_per_request=1000", "--max_request_bytes=1048576"]
    with Server("gateway", argv, tmp_path / "gateway.log", rest_port, ready_timeout=120) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield server, client


def _infer_ok(client: httpx.Client) -> None:
    body, headers = _x([3, 1], 12, VALID_X)
    answer = client.post(HALF, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2.5, 3.0, 3.5]


@pytest.mark.slow
def test_hostile_binary_requests_get_4xx_errors_and_memory_stays_flat(gateway):
    server, client = gateway
    corpus = _fuzz_corpus()
    known = {name for name, *_ in _known_hostile()}
    for _ in range(20):  # warm the allocator and caches on both paths before the first reading
        _infer_ok(client)
    for _, path, body, headers in corpus[:40]:
        client.post(path, content=body, headers=headers)
    before = rss_kb(server.proc.pid)
    statuses: dict[int, int] = {}
    bad: list[str] = []
    started = time.monotonic()
    for name, path, body, headers in corpus:
        assert time.monotonic() - started < FUZZ_SECONDS, f"fuzzing took over {FUZZ_SECONDS} s"
        answer = client.post(path, content=body, headers=headers)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
        if answer.status_code == 200 and name not in known:  # a random case that happens to be valid
            continue
        try:
            error = answer.json()
        except ValueError:
            error = None
        if answer.status_code not in DELIBERATE or type(error) is not dict or set(error) != {"error"}:
            bad.append(f"{name}: {answer.status_code} {answer.text[:200]}")
    server.check_alive("after the fuzz requests")
    after = rss_kb(server.proc.pid)
    print(f"v2 REST fuzz: {len(corpus)} requests, statuses {statuses}, VmRSS {before} kB -> {after} kB")
    assert not bad, "\n".join(bad[:20])
    assert statuses.get(400, 0) > len(corpus) // 2
    assert after - before < RSS_SLACK_KB, f"VmRSS grew from {before} to {after} kB"
    _infer_ok(client)
