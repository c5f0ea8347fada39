"""Where the client connects and how it authenticates: a gRPC target, an HTTP base URL, a token.

The defaults are a local `dicomstore serve`; each value has an environment twin, and the same
client talks to Google's Cloud Healthcare API given its endpoints and a bearer token:

    DICOMSTORE_GRPC_ENDPOINT=healthcare.googleapis.com:443
    DICOMSTORE_HTTP_ENDPOINT=https://healthcare.googleapis.com
    DICOMSTORE_TOKEN="$(gcloud auth print-access-token)"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

GRPC_ENV = "DICOMSTORE_GRPC_ENDPOINT"
HTTP_ENV = "DICOMSTORE_HTTP_ENDPOINT"
TOKEN_ENV = "DICOMSTORE_TOKEN"
DEFAULT_GRPC = "localhost:50051"
DEFAULT_HTTP = "http://localhost:8080"


@dataclass(frozen=True)
class Connection:
    """`tls=None` chooses TLS for a gRPC target on port 443, plaintext otherwise;
    `root_certificates` (PEM) replaces the system's roots, for a server with its own CA."""

    grpc_target: str = DEFAULT_GRPC
    http_url: str = DEFAULT_HTTP
    token: str | None = None
    tls: bool | None = None
    root_certificates: bytes | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] = os.environ,
        *,
        grpc_target: str | None = None,
        http_url: str | None = None,
        token: str | None = None,
        tls: bool | None = None,
    ) -> Connection:
        """Arguments win over the environment, which wins over the defaults."""
        return cls(
            grpc_target=grpc_target or env.get(GRPC_ENV) or DEFAULT_GRPC,
            http_url=(http_url or env.get(HTTP_ENV) or DEFAULT_HTTP).rstrip("/"),
            token=token or env.get(TOKEN_ENV) or None,
            tls=tls,
        )

    @property
    def uses_tls(self) -> bool:
        if self.tls is not None:
            return self.tls
        return self.grpc_target.rsplit(":", 1)[-1] == "443"

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token on a plaintext channel (a TLS channel carries it
        in its call credentials instead)."""
        if self.token and not self.uses_tls:
            return (("authorization", f"Bearer {self.token}"),)
        return ()

    def _credentials(self) -> grpc.ChannelCredentials:
        credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
        if self.token:
            return grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.token)
            )
        return credentials

    def channel(self) -> grpc.Channel:
        if self.uses_tls:
            return grpc.secure_channel(self.grpc_target, self._credentials())
        return grpc.insecure_channel(self.grpc_target)

    def aio_channel(self) -> grpc.aio.Channel:
        if self.uses_tls:
            return grpc.aio.secure_channel(self.grpc_target, self._credentials())
        return grpc.aio.insecure_channel(self.grpc_target)

    def http_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}
