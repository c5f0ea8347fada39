"""QIDO-RS routes (PS3.18 10.6): search for studies, series and instances.

`GET .../dicomWeb/studies`, `/series`, `/instances`, `/studies/{study}/series`,
`/studies/{study}/instances` and `/studies/{study}/series/{series}/instances`. The query is
read by `dicomstore.core.search` under the mode's policy (docs/google-behaviour.md, section
"QIDO-RS (search)").

The answer is a DICOM JSON array (`application/dicom+json`, or `application/json` when that is
what the client accepts); XML (`multipart/related; type="application/dicom+xml"`) is not
offered, so an Accept header that wants only XML is 406. No match is the policy's
`qido_no_match_status`: 204 with no body (google) or 200 with `[]` (standard). No `Warning`
header, whether or not more results exist (docs/google-behaviour.md#qido-limit-offset).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.api.rest.transcoder import SYSTEM_PARAMETERS
from dicomstore.core.errors import invalid
from dicomstore.core.search import parse_request
from dicomstore.dicom.accept import parse_accept
from dicomstore.dicom.multipart import InvalidContentType
from dicomstore.dicom.qido import Level

DICOM_JSON: Final = "application/dicom+json"
JSON: Final = "application/json"
_ENCODE_IN_THREAD_ABOVE: Final = 200


def response_media_type(accept: str | None) -> str | None:
    """The media type to answer with, None when the Accept header allows neither JSON type.

    The highest-quality range that covers a JSON type wins; `*/*` and `application/*` get
    DICOM JSON, as does a tie.
    """
    try:
        ranges = parse_accept(accept)
    except InvalidContentType as exc:
        raise invalid("Accept", str(exc)) from exc
    best: tuple[float, int, str] | None = None
    for media_range in ranges:
        kind = media_range.media_type
        if media_range.q <= 0:
            continue
        if kind in (DICOM_JSON, "*/*", "application/*"):
            candidate = (media_range.q, 1, DICOM_JSON)
        elif kind == JSON:
            candidate = (media_range.q, 0, JSON)
        else:
            continue
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[2]


def _encode(results: list[dict[str, Any]]) -> bytes:
    return json.dumps(results, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def routes(context: DicomWebContext) -> list[BaseRoute]:
    search = context.search

    def handler(level: Level) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            media_type = response_media_type(request.headers.get("accept"))
            if media_type is None:
                raise HTTPException(
                    406,
                    f"no supported media type found in [{request.headers.get('accept')}],"
                    f" accept-header must include one of {DICOM_JSON},{JSON}",
                )
            params = [
                (name, value)
                for name, value in request.query_params.multi_items()
                if name not in SYSTEM_PARAMETERS
            ]
            parsed = parse_request(
                level,
                params,
                context.policy,
                study_uid=request.path_params.get("study"),
                series_uid=request.path_params.get("series"),
            )
            results = await search.search(context.store_name(request), parsed)
            if not results and context.policy.qido_no_match_status == 204:
                return Response(status_code=204)
            if len(results) > _ENCODE_IN_THREAD_ABOVE:
                body = await asyncio.to_thread(_encode, results)
            else:
                body = _encode(results)
            return Response(body, media_type=f"{media_type}; charset=utf-8")

        return endpoint

    study = STORE_PATH + "/studies/{study}"
    get = ["GET"]
    return [
        Route(STORE_PATH + "/studies", handler(Level.STUDIES), methods=get),
        Route(STORE_PATH + "/series", handler(Level.SERIES), methods=get),
        Route(STORE_PATH + "/instances", handler(Level.INSTANCES), methods=get),
        Route(study + "/series", handler(Level.SERIES), methods=get),
        Route(study + "/instances", handler(Level.INSTANCES), methods=get),
        Route(study + "/series/{series}/instances", handler(Level.INSTANCES), methods=get),
    ]
