"""Each REST answer in one send (``--rest_one_write``, on by default).

uvicorn writes a response's head and its body separately: two sends, two loopback packets,
two wake-ups of the client (~2.0 -> ~1.1 writes per request under strace). ``OneWriteHttp``
is uvicorn's httptools protocol with the connection's transport wrapped so that the writes
of one event-loop step leave as one. It subclasses a class of uvicorn's that is not its
public API: uvicorn is pinned to the tested minor, ``tests/test_server_writes.py`` fails
first when the class moves, and ``--rest_one_write=false`` serves with uvicorn's own protocol
without importing this module.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _TickWrites:
    """A connection's transport whose writes within one event-loop step go out as one.

    uvicorn writes a response's head and its body separately: two sends, two loopback
    packets, two wake-ups of the client. Held until the step ends, they leave in one
    write (ASGI lets a server hold the head until the body comes).
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport, as it is
        return getattr(self._transport, name)


class OneWriteHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response in one send (see ``_TickWrites``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_TickWrites(transport, self.loop))  # type: ignore[arg-type]
