"""The HTTP application: `GET /healthz` and Google's REST surface for the management RPCs.

The REST routes come from the transcoder (`google.api.http` rules over the same handler objects
the gRPC server calls); DICOMweb's own routes (`extra_routes`) come before them, and before all
of them `verbs.UnknownVerbRoute`, which answers the custom methods (`:verb`) this server does not
have. Errors are rendered in one place, `error_response`, as Google's JSON error body
`{"error": {"code", "message", "status"}}` whose `status` always agrees with its HTTP code
(`dicomstore.api.status.code_of_http`):

- a domain error: the HTTP status and status name of `dicomstore.api.status` (a method this
  server does not have is 501 UNIMPLEMENTED naming it);
- a path no route serves: 404 NOT_FOUND;
- a served path with another HTTP method: 404 NOT_FOUND too, "Method not found", with an `Allow`
  header naming the methods that path takes. Google's front end routes on the HTTP method and
  the path together, so to it this is a method that does not exist; 405 has no canonical code;
- DICOMweb's HTTP-only statuses (406, 413, 415): INVALID_ARGUMENT;
- anything unexpected: 500 INTERNAL with a fixed message naming the request id; the traceback
  goes to the log only.

Every request writes one access-log line, like a gRPC call. Its `method` is the HTTP method and
the matched route's path template (`GET /v1/{name=projects/*/locations/*/datasets/*}`: one value
per binding however many resources there are; the RPC follows from it), or the raw path when no
route matched; its `code` is the status name of the answer (`OK`, `NOT_FOUND`, ...). The request
id comes from an `x-request-id` header or is generated, and is echoed in the response's
`x-request-id` header.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomstore.api.rest import ui
from dicomstore.api.rest.cors import cors_middleware
from dicomstore.api.rest.transcoder import JSON_MEDIA_TYPE, Service, Transcoder, http_rules
from dicomstore.api.rest.verbs import UnknownVerbRoute
from dicomstore.api.status import client_message, code_of_http, status_of
from dicomstore.core.errors import Code, DicomStoreError
from dicomstore.logs import AccessLog, request_ids

log = logging.getLogger("dicomstore.access")

# The service config's `http` rules (as in Google's healthcare_v1.yaml): the Operations mixin is
# served under its datasets; DeleteOperation and WaitOperation are not offered over REST.
SERVICE_CONFIG_HTTP = """
rules {
  selector: "google.longrunning.Operations.GetOperation"
  get: "/v1/{name=projects/*/locations/*/datasets/*/operations/*}"
}
rules {
  selector: "google.longrunning.Operations.ListOperations"
  get: "/v1/{name=projects/*/locations/*/datasets/*}/operations"
}
rules {
  selector: "google.longrunning.Operations.CancelOperation"
  post: "/v1/{name=projects/*/locations/*/datasets/*/operations/*}:cancel"
  body: "*"
}
rules { selector: "google.longrunning.Operations.DeleteOperation" }
rules { selector: "google.longrunning.Operations.WaitOperation" }
"""

_REQUEST_ID = "request_id"
_STATUS_NAME = "status_name"
_MAX_LOGGED_PATH = 256


def _state(scope: Scope) -> dict[str, object]:
    state: dict[str, object] = scope.setdefault("state", {})
    return state


def error_response(scope: Scope, exc: Exception) -> Response:
    """THE mapping of an exception to Google's JSON error body and HTTP status."""
    state = _state(scope)
    request_id = str(state.get(_REQUEST_ID, ""))
    headers: dict[str, str] | None = None
    if isinstance(exc, DicomStoreError):
        status = status_of(exc.code)
        http, name = status.http, status.name
        message = client_message(exc.message, status, request_id)
        if status.fault:
            log.error(exc.message, exc_info=exc, extra=_where(scope, request_id))
    elif isinstance(exc, HTTPException) and exc.status_code == 405:
        status = status_of(Code.NOT_FOUND)
        http, name = status.http, status.name
        allowed = ", ".join(allowed_methods(scope))
        headers = {"Allow": allowed}
        message = (
            f"Method not found: no method is served at {scope['method']} {scope['path']}; "
            f"it takes {allowed}"
        )
    elif isinstance(exc, HTTPException) and exc.status_code == 404:
        status = status_of(Code.NOT_FOUND)
        message = f"no method is served at {scope['method']} {scope['path']}"
        http, name = status.http, status.name
    elif isinstance(exc, HTTPException):
        http, name, message = exc.status_code, _name_of(exc.status_code), exc.detail
    else:
        log.error("unhandled error", exc_info=exc, extra=_where(scope, request_id))
        status = status_of(Code.INTERNAL)
        http, name = status.http, status.name
        message = f"internal error (request id {request_id})"
    state[_STATUS_NAME] = name
    body = {"error": {"code": http, "message": message, "status": name}}
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        status_code=http,
        headers=headers,
        media_type=JSON_MEDIA_TYPE,
    )


def allowed_methods(scope: Scope) -> list[str]:
    """The HTTP methods some route of the application serves at the request's path."""
    router = getattr(scope.get("app"), "router", None)
    allowed: set[str] = set()
    for route in getattr(router, "routes", ()):
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] is not Match.NONE:
            allowed.update(methods)
    return sorted(allowed)


def _logged(exc: Exception) -> bool:
    """Whether `error_response` logs `exc`: a fault or an unexpected exception."""
    if isinstance(exc, DicomStoreError):
        return status_of(exc.code).fault
    return not isinstance(exc, HTTPException)


def _where(scope: Scope, request_id: str) -> dict[str, str]:
    return {"method": f"{scope['method']} {scope['path']}", "request_id": request_id}


def _name_of(http: int) -> str:
    """The status name an HTTP status stands for."""
    return status_of(code_of_http(http)).name


async def _handle_error(request: Request, exc: Exception) -> Response:
    return error_response(request.scope, exc)


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class AccessLogMiddleware:
    """Request id, one access-log line per request, and the 500 for anything unexpected."""

    def __init__(self, app: ASGIApp, access_log: AccessLog) -> None:
        self.app = app
        self._access = access_log
        self._ids = request_ids()

    def _request_id(self, scope: Scope) -> str:
        for key, value in scope.get("headers") or ():
            if key == b"x-request-id" and value:
                return str(value.decode("latin-1")[:64])
        return next(self._ids)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        state = _state(scope)
        state[_REQUEST_ID] = request_id
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                responded = True
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if responded:  # too late for an error body: the connection is closed unfinished
                # Starlette wraps an error its handlers answer, once a response has started.
                cause = exc.__cause__
                if isinstance(exc, RuntimeError) and isinstance(
                    cause, (DicomStoreError, HTTPException)
                ):
                    exc = cause
                error_response(scope, exc)  # logs a fault, and the status for the access log
                if not _logged(exc):
                    log.error("response broken off", exc_info=exc, extra=_where(scope, request_id))
                return
            await error_response(scope, exc)(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or _raw_target(scope)
            self._access.write(
                f"{scope['method']} {path}",
                str(state.get(_STATUS_NAME) or _name_of(status)),
                round((time.perf_counter() - started) * 1000, 3),
                request_id,
                _peer(scope),
            )


class InternalErrorMiddleware:
    """The 500 for anything unexpected, answered below CORSMiddleware so that it carries the
    CORS headers too (AccessLogMiddleware, above CORS, answers it when CORS is off)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        responded = False

        async def watched_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            if responded or scope["type"] != "http":
                raise  # AccessLogMiddleware logs it
            await error_response(scope, exc)(scope, receive, send)


def _raw_target(scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = bytes(raw).split(b"?", 1)[0].decode("latin-1") if raw else scope["path"]
    return str(path)[:_MAX_LOGGED_PATH]


def create_app(
    serving: Callable[[], bool],
    services: Sequence[Service],
    access_log: AccessLog,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    http_config: str = SERVICE_CONFIG_HTTP,
    cors_origins: str = "",
) -> Starlette:
    """`serving()` tells whether the server accepts work (false while shutting down);
    `services` are the (descriptor, handlers) pairs the gRPC server serves too; `http_config` is
    the text format of a `google.api.Http` whose rules override the methods' annotations;
    `cors_origins` is `--cors-origins` ("": no CORS)."""

    async def healthz(request: Request) -> JSONResponse:
        if serving():
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

    transcoder = Transcoder(services, http_rules(http_config))
    resources = [*extra_routes, *transcoder.routes]
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        *ui.routes(),
        UnknownVerbRoute(transcoder.verb_routes, resources),
        *resources,
    ]
    middleware = [Middleware(AccessLogMiddleware, access_log=access_log)]
    if cors_origins:
        # Below the access log, which then logs preflights too; above the 500 for anything
        # unexpected, which then carries the CORS headers like every other answer.
        middleware += [cors_middleware(cors_origins), Middleware(InternalErrorMiddleware)]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _handle_error, DicomStoreError: _handle_error},
    )
