"""An idle HTTP connection stays open longer than clients keep idle pooled connections (httpx:
5 s), so a request sent on a pooled connection never races the server closing it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.e2e.server import start_server

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _answer(sock: socket.socket) -> bytes:
    sock.sendall(REQUEST)
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def test_an_idle_connection_outlives_a_clients_pool_expiry(tmp_path: Path) -> None:
    with (
        start_server(tmp_path / "data") as server,
        socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock,
    ):
        assert _answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6.5)  # longer than httpx's keep-alive expiry (5 s), uvicorn's default (5 s)
        assert _answer(sock).startswith(b"HTTP/1.1 200")
