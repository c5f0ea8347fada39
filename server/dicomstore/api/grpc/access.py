"""The interceptor every call goes through: request id, error mapping, one access-log line.

Domain errors become their gRPC status (`dicomstore.api.status`); anything else becomes INTERNAL
with a fixed message naming the request id, and its traceback goes to the log only. A domain
error that is the server's fault (a full disk, a locked catalog) is logged with its cause too,
and its message names the request id; such answers carry it as `x-request-id` trailing metadata.

It also drains the server before it stops: grpc.aio takes calls from grpc core one at a time, and
core cancels the calls still queued when the server stops. While draining, every new call but a
health check is answered UNAVAILABLE (which clients retry) until no call is in flight and none
has arrived for a moment; only then does the server stop.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from dicomstore.api.status import client_message, status_of
from dicomstore.core.errors import DicomStoreError
from dicomstore.logs import AccessLog, request_ids

log = logging.getLogger("dicomstore.access")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class RequestIds:
    """The client's `x-request-id`, else a new id (`logs.request_ids`)."""

    def __init__(self) -> None:
        self._ids = request_ids()

    def next(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str):
                return value[:64]
        return next(self._ids)


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
        trailer = (("x-request-id", self.request_id),)
        if isinstance(exc, DicomStoreError):
            status = status_of(exc.code)
            self.code = status.grpc
            if not status.fault:
                await self.context.abort(self.code, exc.message)
            log.error(
                exc.message,
                exc_info=exc,
                extra={"method": self.method, "request_id": self.request_id},
            )
            message = client_message(exc.message, status, self.request_id)
            await self.context.abort(self.code, message, trailer)
        self.code = grpc.StatusCode.INTERNAL
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"method": self.method, "request_id": self.request_id},
        )
        await self.context.abort(
            self.code, f"internal error (request id {self.request_id})", trailer
        )

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


_HEALTH = "/grpc.health.v1.Health/"
_QUIET_SECONDS = 0.1
_GAPS = 16  # recent arrivals whose gaps set how long "quiet" is
_GAP_FACTOR = 3
_IDLE_SECONDS = 1.0  # a longer gap between calls is a lull, not a slow intake


class AccessInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, access: AccessLog) -> None:
        self._access = access
        self._ids = RequestIds()
        self._wrapped: dict[str, Any] = {}
        self._draining = False
        self._in_flight = 0
        self._arrivals: collections.deque[float] = collections.deque(maxlen=_GAPS)

    def _quiet(self) -> bool:
        """Whether no call arrived for longer than calls have lately taken to come through:
        a loaded server takes queued calls from grpc core slowly, and core cancels those still
        queued when the server stops."""
        arrivals = self._arrivals
        if not arrivals:
            return True
        gaps = [b - a for a, b in itertools.pairwise(arrivals) if b - a <= _IDLE_SECONDS]
        wait = max(_QUIET_SECONDS, _GAP_FACTOR * max(gaps, default=0.0))
        return time.perf_counter() - arrivals[-1] >= wait

    async def drain(self, within: float) -> None:
        """Refuse new calls until none is in flight and none arrived lately (or `within` s)."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if self._in_flight == 0 and self._quiet():
                return
            await asyncio.sleep(0.01)

    async def _begin(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> _Call:
        self._in_flight += 1
        self._arrivals.append(time.perf_counter())
        call = _Call(method, context, self._ids.next(context))
        if self._draining and not method.startswith(_HEALTH):
            call.code = grpc.StatusCode.UNAVAILABLE
            self._end(call)
            await context.abort(call.code, "the server is shutting down; retry")
        return call

    def _end(self, call: _Call) -> None:
        self._in_flight -= 1
        call.finish(self._access)

    def _unary(self, method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = await self._begin(method, context)
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await call.fail(exc)
            finally:
                self._end(call)

        return behaviour

    def _streaming(
        self, method: str, inner: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = await self._begin(method, context)
            try:
                async for response in inner(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await call.fail(exc)
            finally:
                self._end(call)

        return behaviour

    def _wrap(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        # A streaming handler is an async generator or a coroutine that calls context.write().
        if inspect.isasyncgenfunction(inner):
            return self._streaming(method, inner)
        return self._unary(method, inner)

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
        wrapped = handler
        for kind in ("unary_unary", "unary_stream", "stream_stream"):
            inner = getattr(handler, kind)
            if inner is not None:
                wrapped = handler._replace(**{kind: self._wrap(method, inner)})
        self._wrapped[method] = wrapped
        return wrapped
