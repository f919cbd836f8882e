"""What a gateway's lookup costs: one ``get_many`` of 64 keys (plus decoding the rows) on
each store, in one run, against the same 100K stored rows.

    .venv/bin/python -m tests.precomputed.bench_lookups [--rows 100000] [--value_bytes 40]

Starts its own redis-server (needs /usr/bin/redis-server) and a SQLite file in a temporary
directory; prints CPU and wall time per batch of 64 (CPU is what a busy machine cannot
distort; the redis figure's CPU is this process's only, the server's is printed apart).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from loadtests.support.processes import log
from serving.precomputed import open_store
from serving.precomputed.codec import decode_rows, encode_rows
from tests.conftest import RedisServer

BATCH = 64


def measure(store, keys: list[list[str]], decode: bool, repeats: int) -> tuple[float, float]:
    """Best (cpu, wall) microseconds per batch over ``repeats`` passes of ``keys``."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in keys:
            values = store.get_many("natality", 1, batch)
            if decode:
                decode_rows([v for v in values if v is not None])
        best_cpu = min(best_cpu, (time.process_time() - cpu) / len(keys) * 1e6)
        best_wall = min(best_wall, (time.perf_counter() - wall) / len(keys) * 1e6)
    return best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--value_floats", type=int, default=1, help="floats per stored row (1: natality, "
                        "1000: an image classifier's scores)")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    value = encode_rows({"predictions": np.arange(args.value_floats, dtype=np.float32)[np.newaxis]})[0]
    rng = random.Random(0)
    keys = [[str(rng.randrange(args.rows * 6 // 5)) for _ in range(BATCH)] for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp))
        try:
            for url in (f"sqlite://{tmp}/p.db", redis_server.url):
                store = open_store(url, timeout_s=5.0)
                start = time.perf_counter()
                for first in range(0, args.rows, 1000):
                    store.put_many("natality", 1, [(str(i), value) for i in range(first, min(first + 1000, args.rows))])
                log(f"{url.split(':')[0]}: wrote {args.rows} rows of {len(value)} bytes in "
                    f"{time.perf_counter() - start:.2f} s (batches of 1000)")
                server_cpu = redis_server.job.cpu_seconds()
                cpu, wall = measure(store, keys, False, args.repeats)
                dcpu, dwall = measure(store, keys, True, args.repeats)
                served = redis_server.job.cpu_seconds() - server_cpu if url.startswith("redis") else 0.0
                print(f"{url.split(':')[0]:6} get_many({BATCH}): {cpu:6.0f} us cpu {wall:6.0f} us wall | "
                      f"+ decode: {dcpu:6.0f} us cpu {dwall:6.0f} us wall"
                      + (f" | redis-server cpu {served / (2 * args.repeats * args.batches) * 1e6:.0f} us/batch"
                         if served else ""), flush=True)
                store.close()
        finally:
            redis_server.stop()


if __name__ == "__main__":
    sys.exit(main())
