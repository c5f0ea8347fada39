"""`--event-loop`: both transports run on asyncio's own loop by default, on uvloop when asked;
the "serving" log line says which loop runs."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.e2e.server import start_server


@pytest.mark.parametrize(
    ("flags", "env", "loop"),
    [
        ((), {}, "asyncio"),
        (("--event-loop", "uvloop"), {}, "uvloop"),
        ((), {"DICOMSTORE_EVENT_LOOP": "uvloop"}, "uvloop"),
        (("--event-loop", "asyncio"), {"DICOMSTORE_EVENT_LOOP": "uvloop"}, "asyncio"),
    ],
)
def test_both_transports_serve_on_the_event_loop_asked_for(
    tmp_path: Path, flags: tuple[str, ...], env: dict[str, str], loop: str
) -> None:
    with start_server(tmp_path / "data", *flags, env=env) as server:
        [serving] = [r for r in server.records() if r.get("message") == "serving"]
        assert serving["event_loop"] == loop
        assert httpx.get(f"{server.http_url}/healthz", timeout=10).status_code == 200
        with grpc.insecure_channel(server.grpc_address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert server.terminate() == 0
