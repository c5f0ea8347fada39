"""The interceptor every call goes through: request id, error mapping, one access-log line.

Domain errors become their gRPC status (`dicomstore.api.status`); anything else becomes INTERNAL
with a fixed message naming the request id, and its traceback goes to the log only.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from dicomstore.api.status import status_of
from dicomstore.core.errors import DicomStoreError
from dicomstore.logs import AccessLog

log = logging.getLogger("dicomstore.access")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RequestIds:
    """Unique ids without a system call per request: a random prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter: Iterator[int] = itertools.count()

    def next(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str):
                return value[:64]
        return f"{self._prefix}{next(self._counter):08x}"


class _Call:
    """Bookkeeping of one call: maps an exception to a status, then logs one line."""

    def __init__(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], request_id: str
    ) -> None:
        self.method = method
        self.context = context
        self.request_id = request_id
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK

    async def fail(self, exc: BaseException) -> None:
        if isinstance(exc, DicomStoreError):
            self.code = status_of(exc.code).grpc
            await self.context.abort(self.code, exc.message)
        self.code = grpc.StatusCode.INTERNAL
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"method": self.method, "request_id": self.request_id},
        )
        await self.context.abort(self.code, f"internal error (request id {self.request_id})")

    def finish(self, access: AccessLog) -> None:
        code: Any = self.code
        if code is grpc.StatusCode.OK:
            code = self.context.code() or code  # a handler may have set or aborted with a status
            code = _CODES.get(code, code) if isinstance(code, int) else code
        access.write(
            self.method,
            code.name,
            round((time.perf_counter() - self.started) * 1000, 3),
            self.request_id,
            self.context.peer(),
        )


class AccessInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, access: AccessLog) -> None:
        self._access = access
        self._ids = RequestIds()
        self._wrapped: dict[str, Any] = {}

    def _unary(self, method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(method, context, self._ids.next(context))
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await call.fail(exc)
            finally:
                call.finish(self._access)

        return behaviour

    def _streaming(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(method, context, self._ids.next(context))
            try:
                async for response in inner(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await call.fail(exc)
            finally:
                call.finish(self._access)

        return behaviour

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            wrapped = handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        elif handler.stream_stream is not None:
            wrapped = handler._replace(stream_stream=self._streaming(method, handler.stream_stream))
        elif handler.unary_stream is not None:
            wrapped = handler._replace(unary_stream=self._streaming(method, handler.unary_stream))
        else:
            wrapped = handler
        self._wrapped[method] = wrapped
        return wrapped
