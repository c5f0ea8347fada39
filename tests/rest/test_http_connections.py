"""Every HTTP connection the server accepts sends small writes at once (Nagle's algorithm off),
on asyncio's own loop as on uvloop: otherwise a response written in two parts waits for the
client's delayed ACK, ~40 ms per request. (These tests run on asyncio's loop.)"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.conftest import running


async def test_accepted_http_connections_have_nagles_algorithm_off(tmp_path: Path) -> None:
    async with running(tmp_path) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
            assert app._http is not None
            connections = list(app._http.server_state.connections)
            sockets = [c.transport.get_extra_info("socket") for c in connections]
        finally:
            writer.close()
            await writer.wait_closed()
        assert sockets
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
