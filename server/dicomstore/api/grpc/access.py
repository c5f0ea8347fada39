"""The interceptor every call goes through: request id, error mapping, one access-log line.

Domain errors become their gRPC status (`dicomstore.api.status`); anything else becomes INTERNAL
with a fixed message naming the request id, and its traceback goes to the log only.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from dicomstore.api.status import status_of
from dicomstore.core.errors import DicomStoreError

log = logging.getLogger("dicomstore.access")


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str):
            return value[:64]
    return uuid.uuid4().hex[:16]


class _Call:
    """Bookkeeping of one call: maps an exception to a status, then logs one line."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.method = method
        self.context = context
        self.request_id = _request_id(context)
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

    def finish(self) -> None:
        code = self.context.code() if self.code is grpc.StatusCode.OK else self.code
        if isinstance(code, int):
            code = next(c for c in grpc.StatusCode if c.value[0] == code)
        log.info(
            "rpc",
            extra={
                "method": self.method,
                "code": (code or grpc.StatusCode.OK).name,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
                "request_id": self.request_id,
                "peer": self.context.peer(),
            },
        )


def _unary(method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(method, context)
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(exc)
        finally:
            call.finish()

    return behaviour


def _streaming(method: str, inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(method, context)
        try:
            async for response in inner(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await call.fail(exc)
        finally:
            call.finish()

    return behaviour


class AccessInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._wrapped: dict[str, Any] = {}

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
            wrapped = handler._replace(unary_unary=_unary(method, handler.unary_unary))
        elif handler.stream_stream is not None:
            wrapped = handler._replace(stream_stream=_streaming(method, handler.stream_stream))
        elif handler.unary_stream is not None:
            wrapped = handler._replace(unary_stream=_streaming(method, handler.unary_stream))
        else:
            wrapped = handler
        self._wrapped[method] = wrapped
        return wrapped
