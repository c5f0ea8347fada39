"""WADO-RS frames and rendered images of an instance (PS3.18 10.4.1.1.3, 8.3.5, 9.5.1.2).

- `/frames/{list}` (1-based, comma separated, in the order asked, repeats kept): one part per
  frame in `multipart/related`, or the bare frame for a single frame asked as a single part.
  Part types (docs/google-behaviour.md#frame-media-types; PS3.18 Table 8.7.4-1):
  `application/octet-stream`, native little endian by default (compressed instances decoded) or as
  stored with `transfer-syntax=*`; `image/jpeg` (JPEG Baseline, 8-bit), `image/jls` (.4.80 default,
  .4.81), `image/jp2` (.4.90 default, .4.91), `image/dicom-rle` and `image/png` (lossless, 8 or
  16-bit grey, 8-bit colour). A frame already stored in the asked syntax is sent as stored.
- `/rendered` and `/frames/{n}/rendered`: the frame (the first for an instance, as Google does)
  through the display pipeline of `dicom.render`, as `image/jpeg` (default) or `image/png`
  (docs/google-behaviour.md#rendered-media-types). Query parameters
  (docs/google-behaviour.md#rendered-parameters): `viewport` in both modes; `quality` and `window`
  (PS3.18 8.3.5.1) in standard mode only, since Google supports viewport alone; there they are
  ignored, as Google ignores them. Several frames cannot make one image: 400.

A frame number outside 1..Number of Frames is 400 INVALID_ARGUMENT naming the valid range
(docs/google-behaviour.md#retrieve-bad-request), checked before any pixel work; an instance without
Pixel Data is 400 too. The first frame is produced before the answer starts, so an impossible
encoding (JPEG of 16-bit data) is a 400 in Google's words, and a media type this server never
produces is 406 listing those it does. Frames are read from their byte range of the blob when
stored native, or produced by the pixel workers, one job ahead (`core.instance_pixels`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.api.rest.dicomweb.negotiation import (
    ANY_TRANSFER_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    Offer,
    accept_ranges,
    negotiate,
    not_acceptable,
)
from dicomstore.api.rest.dicomweb.parts import (
    CRLF,
    close_delimiter,
    multipart_media_type,
    part_head,
)
from dicomstore.core.errors import invalid
from dicomstore.core.model import StoredInstance
from dicomstore.dicom.multipart import new_boundary
from dicomstore.dicom.pixel_encode import (
    FRAME_MEDIA_TYPES,
    NATIVE_FRAME,
    PNG,
    PNG_FRAME,
    STORED_FRAME,
)
from dicomstore.dicom.render import (
    RenderOptions,
    parse_quality,
    parse_viewport,
    parse_window,
)

JPEG: Final = "image/jpeg"
_FRAME_NUMBER = re.compile(r"[0-9]{1,9}")
_RENDERED_PARSERS: Final = {
    "viewport": parse_viewport,
    "quality": parse_quality,
    "window": parse_window,
}


def frame_numbers(text: str) -> list[int]:
    """PS3.18 10.4.1.1.3 frame list: comma-separated frame numbers from 1."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not _FRAME_NUMBER.fullmatch(part) or int(part) == 0:
            raise invalid(
                "frames", f"{text!r} is not a comma-separated list of frame numbers from 1"
            )
        numbers.append(int(part))
    return numbers


def check_frame_numbers(instance: StoredInstance, numbers: Sequence[int]) -> None:
    if instance.number_of_frames == 0:
        raise invalid("frames", f"instance {instance.sop_uid} has no Pixel Data")
    for number in numbers:
        if number > instance.number_of_frames:
            raise invalid(
                "frames",
                f"frame {number} does not exist: instance {instance.sop_uid} has"
                f" {instance.number_of_frames} frame(s), numbered 1 to"
                f" {instance.number_of_frames}",
            )


def _frame_offers(single: bool) -> list[Offer]:
    kinds: list[tuple[str, str]] = [
        (OCTET_STREAM, ANY_TRANSFER_SYNTAX),
        (OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN),
    ]
    kinds += [
        (media, syntax) for media, syntaxes in FRAME_MEDIA_TYPES.items() for syntax in syntaxes
    ]
    offers = [Offer(media, syntax) for media, syntax in kinds]
    if single:
        offers += [Offer(media, syntax, multipart=False) for media, syntax in kinds]
    return offers


def _default_frame_syntax(part_type: str) -> str:
    syntaxes = FRAME_MEDIA_TYPES.get(part_type)
    return syntaxes[0] if syntaxes else EXPLICIT_VR_LITTLE_ENDIAN


def _job_media(offer: Offer) -> str:
    if offer.part_type == PNG:
        return PNG_FRAME
    if offer.part_type == OCTET_STREAM:
        return STORED_FRAME if offer.transfer_syntax == ANY_TRANSFER_SYNTAX else NATIVE_FRAME
    return offer.transfer_syntax


def _part_type(offer: Offer, instance: StoredInstance) -> str:
    if not offer.transfer_syntax:
        return offer.part_type
    syntax = offer.transfer_syntax
    if syntax == ANY_TRANSFER_SYNTAX:
        syntax = instance.transfer_syntax_uid
    return f"{offer.part_type}; transfer-syntax={syntax}"


class _PixelResources:
    def __init__(self, context: DicomWebContext) -> None:
        self._context = context
        self._pixels = context.pixels

    async def _instance(self, request: Request) -> StoredInstance:
        params = request.path_params
        (instance,) = await self._context.instances.find(
            self._context.store_name(request),
            params["study"],
            params["series"],
            params["instance"],
        )
        return instance

    def _instance_url(self, request: Request, instance: StoredInstance) -> str:
        store = self._context.store_name(request)
        study = self._context.study_url(request, store, instance.study_uid)
        return f"{study}/series/{instance.series_uid}/instances/{instance.sop_uid}"

    # --- frames ---------------------------------------------------------------------------------

    async def frames(self, request: Request) -> Response:
        instance = await self._instance(request)
        numbers = frame_numbers(str(request.path_params["frames"]))
        check_frame_numbers(instance, numbers)
        offers = _frame_offers(single=len(numbers) == 1)
        chosen = negotiate(accept_ranges(request), offers, _default_frame_syntax)
        if chosen is None:
            raise not_acceptable(request, offers)
        media = _job_media(chosen)
        first = await self._pixels.frame(instance, numbers[0], media)
        part_type = _part_type(chosen, instance)
        if not chosen.multipart:
            return Response(first, media_type=part_type)
        boundary = new_boundary()
        rest = self._pixels.frames(instance, numbers[1:], media)
        url = self._instance_url(request, instance)
        return StreamingResponse(
            _frame_parts(numbers, first, rest, boundary, part_type, url),
            media_type=multipart_media_type(chosen.part_type, boundary),
        )

    # --- rendered -------------------------------------------------------------------------------

    async def rendered(self, request: Request) -> Response:
        instance = await self._instance(request)
        number = 1
        if "frames" in request.path_params:
            numbers = frame_numbers(str(request.path_params["frames"]))
            if len(numbers) != 1:
                raise invalid("frames", "a rendered frame takes one frame number")
            number = numbers[0]
        check_frame_numbers(instance, [number])
        offers = [Offer(JPEG, multipart=False), Offer(PNG, multipart=False)]
        chosen = negotiate(accept_ranges(request), offers, _default_frame_syntax)
        if chosen is None:
            raise not_acceptable(request, offers)
        options = self._render_options(request, chosen.part_type)
        image = await self._pixels.render(instance, number, options)
        return Response(image, media_type=chosen.part_type)

    def _render_options(self, request: Request, media_type: str) -> RenderOptions:
        values: dict[str, object] = {}
        for name in self._context.policy.rendered_parameters:
            text = request.query_params.get(name)
            if text is None:
                continue
            try:
                values[name] = _RENDERED_PARSERS[name](text)
            except ValueError as exc:
                raise invalid(name, str(exc)) from None
        return RenderOptions(media_type=media_type, **values)  # type: ignore[arg-type]


async def _frame_parts(
    numbers: Sequence[int],
    first: bytes,
    rest: AsyncIterator[bytes],
    boundary: str,
    part_type: str,
    url: str,
) -> AsyncIterator[bytes]:
    """One part per frame: `first`, then `rest`, numbered by `numbers`."""
    number = iter(numbers)
    frame = first
    while True:
        headers = {"Content-Type": part_type, "Content-Location": f"{url}/frames/{next(number)}"}
        yield part_head(boundary, headers)
        yield frame
        yield CRLF
        try:
            frame = await anext(rest)
        except StopAsyncIteration:
            break
    yield close_delimiter(boundary)


def routes(context: DicomWebContext) -> list[BaseRoute]:
    resources = _PixelResources(context)
    instance = STORE_PATH + "/studies/{study}/series/{series}/instances/{instance}"
    get = ["GET"]
    return [
        Route(instance + "/rendered", resources.rendered, methods=get),
        Route(instance + "/frames/{frames}", resources.frames, methods=get),
        Route(instance + "/frames/{frames}/rendered", resources.rendered, methods=get),
    ]
