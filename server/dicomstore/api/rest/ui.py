"""`/ui/`: a read-only page for browsing datasets, stores, studies, series and instances.

The page is static (`ui/index.html`, `ui/app.js`, `ui/style.css`: no build step) and calls only
this server's public REST and DICOMweb URLs, by URLs relative to itself, so that it works behind
a reverse proxy that serves the server under a path prefix (as `--public-url` describes); for the
same reason `/ui` redirects to `/ui/` with a relative `Location`. `/ui/dictionary.json` gives it
the keywords of tags (DICOM JSON names attributes by tag only) and the names of UIDs (SOP
classes), from pydicom's dictionaries.

These routes come before the unknown-verb route and are not resources of Google's surface
(`/ui:verb` is 404). Every answer is revalidated before use (`no-cache` and an ETag), so a page
never outlives the server that served it. Each asset is made at its first request, not with the
application.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

# pydicom's dictionaries themselves: its public API looks entries up one at a time.
from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
from pydicom._uid_dict import UID_dictionary
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

# The page fetches from its own origin only, and shows rendered frames as blob: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_REPEATING_GROUP = re.compile(r"[0-9A-F]{2}xx[0-9A-F]{4}")

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str


def dictionary() -> dict[str, dict[str, str]]:
    """`tags`: each tag as DICOM JSON writes it (`00100010`; `60XX3000` for a repeating group)
    and its keyword; `uids`: each well-known UID and its name."""
    tags = {f"{tag:08X}": entry[4] for tag, entry in DicomDictionary.items() if entry[4]}
    for mask, entry in RepeatersDictionary.items():
        if _REPEATING_GROUP.fullmatch(mask) and entry[4]:
            tags[mask.upper()] = entry[4]
    return {"tags": tags, "uids": {uid: entry[0] for uid, entry in UID_dictionary.items()}}


def packaged(name: str) -> Asset:
    """A file of the page, from the package's `ui` folder."""
    body = (resources.files(__package__) / "ui" / name).read_bytes()
    return Asset(body, _FILES[name])


def dictionary_asset() -> Asset:
    return Asset(json.dumps(dictionary(), separators=(",", ":")).encode(), "application/json")


def routes() -> list[BaseRoute]:
    async def to_page(request: Request) -> Response:
        return Response(status_code=308, headers={"Location": "ui/"})

    return [
        Route("/ui", to_page, methods=["GET"]),
        Route("/ui/", _serve(lambda: packaged("index.html"), page=True), methods=["GET"]),
        Route("/ui/app.js", _serve(lambda: packaged("app.js")), methods=["GET"]),
        Route("/ui/style.css", _serve(lambda: packaged("style.css")), methods=["GET"]),
        Route("/ui/dictionary.json", _serve(dictionary_asset), methods=["GET"]),
    ]


def _serve(
    load: Callable[[], Asset], *, page: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    made: tuple[Asset, dict[str, str]] | None = None

    def make() -> tuple[Asset, dict[str, str]]:
        asset = load()
        headers = {
            "Cache-Control": "no-cache",
            "ETag": f'"{hashlib.sha256(asset.body).hexdigest()[:32]}"',
            "X-Content-Type-Options": "nosniff",
        }
        if page:
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return asset, headers

    async def serve(request: Request) -> Response:
        nonlocal made
        made = made or make()
        asset, headers = made
        if headers["ETag"] in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    return serve
