"""The origin a client used to reach the server, as the Host header of each HTTP request.

The absolute URLs the server writes (STOW RetrieveURLs, metadata BulkDataURIs, Content-Location)
are built from the request's scheme and Host header, unless `--public-url` names their base.
This ASGI middleware makes that Host header say where the client really connected:

- A request from a trusted reverse proxy (`--forwarded-allow-ips`: its peer address is listed)
  that carries X-Forwarded-Proto, X-Forwarded-Host or X-Forwarded-For is taken as proxied:
  uvicorn's `ProxyHeadersMiddleware` sets the scheme from X-Forwarded-Proto and the client from
  X-Forwarded-For, and the first X-Forwarded-Host value (when it is a valid `host[:port]`)
  replaces the Host header. A Host without a port then means the scheme's default port, as the
  client-facing side of a proxy is usually on 80 or 443.
- Any other request, including one whose forwarding headers come from an untrusted peer (they are
  ignored), is direct: a Host header without a port gets the port of the connection the request
  arrived on (ASGI `scope["server"]`) unless that is the scheme's default. Some clients send the
  host name alone (dicomweb-client sends `Host: 127.0.0.1`, RFC 9110 7.2 notwithstanding), and
  URLs built on it would point at port 80.
"""

from __future__ import annotations

import re
from typing import Final, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_FORWARDED: Final = (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for")
# RFC 9110 7.2 Host: uri-host [ ":" port ], the host a reg-name, IPv4 address or [IP literal].
_HOST: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{1,5})?")


class ForwardedOrigin:
    """ASGI middleware: the Host header of an HTTP request names the origin the client used."""

    def __init__(self, app: ASGIApp, trusted: str) -> None:
        """`trusted` is `--forwarded-allow-ips`: "", "*", or comma-separated IPs and networks."""
        proxy = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]
        # uvicorn's own trust check, so that one list decides for all three headers.
        self._trusted_hosts = proxy.trusted_hosts
        # uvicorn types ASGI callables more narrowly than Starlette; the protocol is the same.
        self._proxy = cast(ASGIApp, proxy)
        self._app = app
        self._trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        client = scope.get("client")
        proxied = (
            bool(self._trusted)
            and (client[0] if client else None) in self._trusted_hosts
            and any(name in _FORWARDED for name, _ in scope["headers"])
        )
        scope = dict(scope)
        if proxied:
            scope["headers"] = _with_forwarded_host(scope["headers"])
            await self._proxy(scope, receive, send)  # scheme and client, from uvicorn
        else:
            scope["headers"] = _with_connection_port(scope)
            await self._app(scope, receive, send)


def has_port(host: str) -> bool:
    """Whether a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`) names a port."""
    return host.rpartition("]")[2].count(":") == 1 if host.startswith("[") else ":" in host


def _with_forwarded_host(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    forwarded = next((value for name, value in headers if name == b"x-forwarded-host"), None)
    if forwarded is None:
        return headers
    host = forwarded.decode("latin-1").split(",")[0].strip()
    if not _HOST.fullmatch(host):
        return headers  # a garbled value says nothing about the origin: keep the Host header
    return [(name, value) for name, value in headers if name != b"host"] + [
        (b"host", host.encode("latin-1"))
    ]


def _with_connection_port(scope: Scope) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    server = scope.get("server")
    if not server or server[1] is None:
        return headers
    port = int(server[1])
    if port == DEFAULT_PORTS.get(scope.get("scheme", "http")):
        return headers
    result = []
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1").strip()
            if host and not has_port(host):
                value = f"{host}:{port}".encode("latin-1")
        result.append((name, value))
    return result
