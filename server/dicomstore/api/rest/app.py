"""The HTTP application: `GET /healthz` now; Google's REST surface and DICOMweb mount here."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def create_app(serving: Callable[[], bool]) -> Starlette:
    """`serving()` tells whether the server accepts work (false while shutting down)."""

    async def healthz(request: Request) -> JSONResponse:
        if serving():
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"])])
