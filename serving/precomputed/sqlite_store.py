"""The embedded store: one SQLite file, no server.

One table keyed (model, version, key). The file is in WAL mode, so a batch job writing
does not block a gateway reading (nor the reverse). Each thread gets its own connection,
created on first use, so reads from a thread pool do not queue behind one another (SQLite
releases the GIL while it works): 4 threads read 64-key batches 8-34% faster that way
than through one connection behind a lock (3 alternating runs here). Writes are one
``INSERT OR REPLACE`` ``executemany`` in one transaction; reads one
``SELECT ... key IN (...)`` per SQLite's variable limit (32766 keys here). ``timeout_s``
is SQLite's busy timeout: a store locked for longer raises ``StoreUnavailable``.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from serving.precomputed.api import StoreError, StoreUnavailable, check_entry

_SCHEMA = """CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, version INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (model, version, key))"""
"""A rowid table: WITHOUT ROWID looked a third cheaper with 40-byte rows but six times
dearer with 4 KB ones (an image model's 1000 scores), which it stores out of line."""
_MMAP_BYTES = 1 << 28
"""Reads through the OS page cache, shared by every thread's connection and every process,
instead of a private SQLite cache per connection that each write elsewhere invalidates:
a third less CPU per lookup here (0.43 vs 0.64 ms per 64 keys of 100K)."""
_PUT = "INSERT OR REPLACE INTO predictions (model, version, key, value) VALUES (?, ?, ?, ?)"
_GET = "SELECT key, value FROM predictions WHERE model = ? AND version = ? AND key IN ({})"


class SqliteStore:
    def __init__(self, path: str, timeout_s: float) -> None:
        self._path = path
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the list of connections, not their use
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    def get_many(self, model: str, version: int, keys: Sequence[str]) -> list[bytes | None]:
        check_entry(model, version)
        if not keys:
            return []
        wanted = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        with self._translated():
            connection = self._connection()
            step = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 2
            for start in range(0, len(wanted), step):
                chunk = wanted[start:start + step]
                found.update(connection.execute(_GET.format(",".join("?" * len(chunk))),
                                                (model, version, *chunk)))
        return [found.get(key) for key in keys]

    def put_many(self, model: str, version: int, items: Sequence[tuple[str, bytes]]) -> None:
        check_entry(model, version)
        if not items:
            return
        with self._translated():
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_PUT, ((model, version, key, value) for key, value in items))
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        with self._lock:
            if self._closed:
                raise StoreError("The prediction store is closed")
        # isolation_level=None: no implicit transactions; put_many opens its own.
        # check_same_thread=False: close() may run in another thread; each connection is
        # only ever used by the thread that made it.
        connection = sqlite3.connect(self._path, timeout=self._timeout_s, isolation_level=None,
                                     check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL; a job can rerun
            connection.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
            connection.execute(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        with self._lock:
            self._connections.append(connection)
        self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as err:  # locked, cannot open, disk I/O
            raise StoreUnavailable(f"SQLite prediction store {self._path}: {err}") from err
        except sqlite3.Error as err:  # not a database, corrupt
            raise StoreError(f"SQLite prediction store {self._path}: {err}") from err
