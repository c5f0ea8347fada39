"""The gRPC server: our services from their descriptors, health, reflection, one interceptor.

Services are registered generically: for each method of a service descriptor, the handler object's
method of the same name is called with the request alone (no context), so the REST transcoder can
call the very same handlers. A method the handler object lacks answers UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor, message, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dicomstore.api.grpc import reflection
from dicomstore.api.grpc.access import AccessInterceptor
from dicomstore.core.errors import InvalidArgument, Unimplemented
from dicomstore.logs import AccessLog

Service = tuple[descriptor.ServiceDescriptor, object]


def _missing(method: str) -> Callable[[Any], Awaitable[Any]]:
    async def unimplemented(request: Any) -> Any:
        raise Unimplemented(f"method {method} is not implemented by this server")

    return unimplemented


class _Undecodable:
    """Request bytes that do not parse as the method's message. grpc.aio would answer a
    deserializer's exception with UNKNOWN; the handler answers this with INVALID_ARGUMENT."""

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def _deserializer(message_type: descriptor.Descriptor) -> Callable[[bytes], Any]:
    parse = message_factory.GetMessageClass(message_type).FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except message.DecodeError as exc:
            reason = str(exc).split(": ", 1)[-1]  # without the message type, named below
            return _Undecodable(
                InvalidArgument(f"the request is not a valid {message_type.name}: {reason}")
            )

    return deserialize


def generic_handler(
    service: descriptor.ServiceDescriptor, handlers: object
) -> grpc.GenericRpcHandler:
    table = {}
    for method in service.methods:
        call = getattr(handlers, method.name, None) or _missing(method.full_name)

        async def behaviour(request: Any, context: Any, call: Any = call) -> Any:
            if isinstance(request, _Undecodable):
                raise request.error
            return await call(request)

        table[method.name] = grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=_deserializer(method.input_type),
            response_serializer=message_factory.GetMessageClass(
                method.output_type
            ).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, table)


class GrpcServer:
    """A grpc.aio server bound to one address, with health and graceful shutdown."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        address: str,
        access_log: AccessLog,
        credentials: grpc.ServerCredentials | None = None,
        max_message_bytes: int = 32 * 1024 * 1024,
        reuse_port: bool = False,
    ) -> None:
        """`reuse_port`: share the port with the other processes of `--workers`
        (SO_REUSEPORT); without it a port in use is an error, as it should be for one server."""
        self._access = AccessInterceptor(access_log)
        self._server = grpc.aio.server(
            interceptors=[self._access],
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", int(reuse_port)),
            ],
        )
        for service, handlers in services:
            self._server.add_generic_rpc_handlers((generic_handler(service, handlers),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.full_name for s, _ in services]
        reflection.enable(self._server, [*names, health.SERVICE_NAME])
        self._names = names
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot bind gRPC to {address}: {exc}") from None
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {address}")

    async def start(self) -> None:
        await self._server.start()
        for name in ["", *self._names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Health turns NOT_SERVING, new calls are refused, in-flight calls get `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._access.drain(within=grace)
        await self._server.stop(max(0.0, grace - (loop.time() - started)))

    async def wait(self) -> None:
        await self._server.wait_for_termination()
