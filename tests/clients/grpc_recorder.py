"""A gRPC server that stands where Google's endpoint would: it answers every method with a
canned response and records what reached it (the method path, the metadata, the request bytes),
so a test can check a request's shape as Google would receive it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import empty_pb2


@dataclass(frozen=True)
class Received:
    method: str
    metadata: dict[str, str]
    body: bytes

    def parsed(self, message_type: type[Any]) -> Any:
        return message_type.FromString(self.body)


Answer = Callable[[str], Any]  # method path -> a response message


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def service(self, call: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(call.method)
        metadata = {str(k): str(v) for k, v in call.invocation_metadata or ()}

        def unary(body: bytes, context: grpc.ServicerContext) -> bytes:
            self._recorder.record(Received(method, metadata, body))
            response = self._recorder.answer(method)
            return bytes(response.SerializeToString())

        return grpc.unary_unary_rpc_method_handler(unary)


class Recorder:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self._lock = threading.Lock()

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def last(self) -> Received:
        with self._lock:
            return self.received[-1]


@contextmanager
def recording_server(
    answer: Answer = lambda method: empty_pb2.Empty(),
    tls: tuple[bytes, bytes] | None = None,
) -> Iterator[tuple[Recorder, int]]:
    """A recording server on a free loopback port; `tls` is (certificate, key) in PEM."""
    recorder = Recorder(answer)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_Handler(recorder),))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials([(tls[1], tls[0])])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield recorder, port
    finally:
        server.stop(grace=None)
