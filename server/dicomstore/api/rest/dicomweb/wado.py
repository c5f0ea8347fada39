"""WADO-RS (PS3.18 10.4): instances, metadata, bulk data and frames, streamed from the blobs.

Resources, under `.../dicomWeb/studies/{study}[/series/{series}[/instances/{instance}]]`:
- the study, series or instance itself: `multipart/related; type="application/dicom"`, one part
  per instance (Content-Type `application/dicom; transfer-syntax=<stored>`, Content-Location its
  URL), and for an instance also the single part `application/dicom` (item 41);
- `/metadata`: `application/dicom+json`, an array of the instances' DICOM JSON whose
  BulkDataURIs point at the `bulkdata` resources below (item 44); the same body is
  `application/json` to a client that prefers that (at equal quality, the type named more
  closely wins), as Google's discovery-based clients do by default and as QIDO-RS and STOW-RS
  answer;
- `/bulkdata/{tag path}` of an instance, `TTTTTTTT` or `SSSSSSSS/i/TTTTTTTT` nested: the value as
  `multipart/related; type="application/octet-stream"` (default) or `application/octet-stream`,
  little endian and uncompressed (item 45); only paths the metadata lists as bulk data;
- `/frames/{list}` of an instance (1-based, comma separated; in the order asked, repeats kept):
  native frames as `multipart/related; type="application/octet-stream"`, one part per frame, or
  `application/octet-stream` for a single frame (item 42);
- `/rendered` and `/frames/{list}/rendered` of an instance (item 43): not implemented yet, 501
  UNIMPLEMENTED naming Google's method, once the instance and the frame numbers are found.

BulkDataURIs and Content-Locations are absolute URLs on `DicomWebContext.base_url`: the
`--public-url`, else the origin the request reached.

Accept negotiation (item 47): the header's media ranges, wildcards and `q` values are weighed
against what this resource can be rendered as right now; the most specific range that covers a
representation gives its quality, the best quality wins and ties go to the first in the
server's order (multipart before single part, `transfer-syntax=*` first). No `transfer-syntax`
parameter means Explicit VR Little Endian for `application/dicom` (item 41) and for frames
(item 42), and `*` for bulk data (item 45). When nothing is acceptable the answer is 406 with a
message in Google's words listing what is (healthcare-api-dicomweb-cli #22).

Not available yet, hence 406 with that message: transcoding (a transfer syntax other than `*`
or the stored one, which includes the default Explicit VR Little Endian for compressed or
implicit/big-endian uploads), frames and bulk Pixel Data of compressed instances (Google
decodes them), and metadata as `multipart/related; type=application/dicom+xml`.

Errors: a study, series or instance that does not exist (or an unknown store) is 404 NOT_FOUND.
Google's conformance statement documents 403 for "no access or resource doesn't exist" (item
48), but its own mock and every DICOMweb client expect 404, and nothing here controls access
yet. A malformed frame list or bulk data path, a frame number outside 1..Number of Frames (item
48: "bad params"), and frames of an instance without Pixel Data are 400 INVALID_ARGUMENT; Pixel
Data shorter than its image attributes promise is 400 FAILED_PRECONDITION.

Bodies stream: instance bytes go from `BlobStore.read` chunks to the socket, frames and bulk data
are read range by range off the event loop, metadata is encoded in batches, so memory stays
bounded whatever the size of the study.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.core.errors import FailedPrecondition, NotFound, Unimplemented, invalid
from dicomstore.core.model import StoredInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom.accept import MediaRange, best_offer, matches, parse_accept
from dicomstore.dicom.dicomjson import EncapsulatedPixelData, iter_tag_paths
from dicomstore.dicom.frames import (
    NATIVE_TRANSFER_SYNTAXES,
    FrameError,
    FrameReader,
    InconsistentPixelData,
)
from dicomstore.dicom.multipart import InvalidContentType, new_boundary
from dicomstore.dicom.values import InstanceFile, StoredValue

EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
ANY_TRANSFER_SYNTAX: Final = "*"
DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
DICOM_XML: Final = "application/dicom+xml"
JSON: Final = "application/json"
OCTET_STREAM: Final = "application/octet-stream"
MULTIPART: Final = "multipart/related"

#: Instances whose metadata is read and encoded at a time.
METADATA_BATCH: Final = 100
#: Bytes of a bulk data value read at a time.
VALUE_CHUNK: Final = 1 << 20

_CRLF: Final = b"\r\n"
_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*")
_FRAME_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Offer:
    """One representation a resource can be returned as."""

    part_type: str
    transfer_syntax: str = ""
    """`*`, a UID, or "" where the media type takes none (DICOM JSON)."""
    multipart: bool = True

    def __str__(self) -> str:
        syntax = f"; transfer-syntax={self.transfer_syntax}" if self.transfer_syntax else ""
        if self.multipart:
            return f'{MULTIPART}; type="{self.part_type}"{syntax}'
        return f"{self.part_type}{syntax}"


DefaultSyntax = Callable[[str], str]


def _specificity(media_range: MediaRange, offer: Offer, default_syntax: DefaultSyntax) -> int:
    """How specifically `media_range` names `offer` (higher is more specific), -1 if not."""
    score = 0
    if offer.multipart:
        if media_range.media_type not in ("*/*", "multipart/*", MULTIPART):
            return -1
        score += media_range.media_type == MULTIPART
        part_range = media_range.type or "*/*"
        if not matches(part_range, offer.part_type):
            return -1
        score += "*" not in part_range
    else:
        if not matches(media_range.media_type, offer.part_type):
            return -1
        score += 2 * ("*" not in media_range.media_type)
    if offer.transfer_syntax:
        wanted = media_range.transfer_syntax
        if wanted is None:
            wanted = default_syntax(offer.part_type)
        else:
            score += 1
        if wanted != offer.transfer_syntax:
            return -1
    return score


def negotiate(
    ranges: Sequence[MediaRange],
    offers: Sequence[Offer],
    default_syntax: DefaultSyntax,
    *,
    specific_first: bool = False,
) -> Offer | None:
    """The offer the Accept ranges prefer (RFC 9110 12.5.1), None when none is acceptable.

    A tie in quality goes to the offer named more closely when `specific_first`, then to the
    first offer.
    """
    return best_offer(
        ranges,
        offers,
        lambda media_range, offer: _specificity(media_range, offer, default_syntax),
        specific_first=specific_first,
    )


def _accept_ranges(request: Request) -> list[MediaRange]:
    try:
        return parse_accept(request.headers.get("accept"))
    except InvalidContentType as exc:
        raise invalid("Accept", str(exc)) from exc


def not_acceptable(request: Request, offers: Sequence[Offer], reason: str = "") -> HTTPException:
    """406 in Google's words: what was asked for, then what would have been acceptable."""
    asked = request.headers.get("accept", "*/*")
    message = f"no supported media type found in [{asked}]"
    if reason:
        message += f"; {reason}"
    if offers:
        message += ", accept-header must include one of " + ",".join(str(o) for o in offers)
    return HTTPException(406, message)


def _explicit_le(part_type: str) -> str:
    return EXPLICIT_VR_LITTLE_ENDIAN


def _any_syntax(part_type: str) -> str:
    return ANY_TRANSFER_SYNTAX


def _part_head(boundary: str, headers: Mapping[str, str]) -> bytes:
    """The delimiter and headers of one body part (RFC 2046 5.1.1)."""
    lines = [f"--{boundary}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"invalid part header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _close_delimiter(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def _multipart_media_type(part_type: str, boundary: str) -> str:
    return f'{MULTIPART}; type="{part_type}"; boundary={boundary}'


def _rewrite_bulkdata_uris(metadata: Any, base: str) -> None:
    """Make the catalog's relative `bulkdata/<tag path>` URIs absolute, in place."""
    for attribute in metadata.values():
        uri = attribute.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("bulkdata/"):
            attribute["BulkDataURI"] = f"{base}/{uri}"
        if attribute.get("vr") == "SQ":
            for item in attribute.get("Value", ()):
                _rewrite_bulkdata_uris(item, base)


def _frame_numbers(text: str) -> list[int]:
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


class _Wado:
    def __init__(self, context: DicomWebContext) -> None:
        self._context = context
        self._blobs = context.instances

    # --- helpers ---------------------------------------------------------------------------

    async def _find(self, request: Request) -> tuple[DicomStoreName, Sequence[StoredInstance]]:
        params = request.path_params
        store = self._context.store_name(request)
        found = await self._context.instances.find(
            store, params["study"], params.get("series"), params.get("instance")
        )
        return store, found

    def _instance_url(self, request: Request, store: DicomStoreName, i: StoredInstance) -> str:
        study = self._context.study_url(request, store, i.study_uid)
        return f"{study}/series/{i.series_uid}/instances/{i.sop_uid}"

    # --- the study, series or instance --------------------------------------------------------

    async def retrieve(self, request: Request) -> Response:
        store, found = await self._find(request)
        stored = sorted({i.transfer_syntax_uid for i in found})
        syntaxes = [ANY_TRANSFER_SYNTAX, *stored] if len(stored) == 1 else [ANY_TRANSFER_SYNTAX]
        offers = [Offer(DICOM, syntax) for syntax in syntaxes]
        if "instance" in request.path_params:
            offers += [Offer(DICOM, syntax, multipart=False) for syntax in syntaxes]
        chosen = negotiate(_accept_ranges(request), offers, _explicit_le)
        if chosen is None:
            reason = ""
            if stored != [EXPLICIT_VR_LITTLE_ENDIAN]:
                reason = (
                    "transcoding is not available yet, and the requested instances are stored"
                    f" as {', '.join(stored)}"
                )
            raise not_acceptable(request, offers, reason)
        first = await self._blobs.open(found[0])
        if first is None:
            raise NotFound(f"instance {found[0].sop_uid} was just deleted")
        if not chosen.multipart:
            return StreamingResponse(
                first,
                media_type=f"{DICOM}; transfer-syntax={found[0].transfer_syntax_uid}",
                headers={"content-length": str(found[0].blob_size)},
            )
        boundary = new_boundary()
        return StreamingResponse(
            self._instance_parts(request, store, found, first, boundary),
            media_type=_multipart_media_type(DICOM, boundary),
        )

    async def _instance_parts(
        self,
        request: Request,
        store: DicomStoreName,
        found: Sequence[StoredInstance],
        first: AsyncIterator[bytes],
        boundary: str,
    ) -> AsyncIterator[bytes]:
        for index, instance in enumerate(found):
            chunks = first if index == 0 else await self._blobs.open(instance)
            if chunks is None:
                continue  # deleted since the lookup: leave it out rather than break the body
            yield _part_head(
                boundary,
                {
                    "Content-Type": f"{DICOM}; transfer-syntax={instance.transfer_syntax_uid}",
                    "Content-Location": self._instance_url(request, store, instance),
                },
            )
            async for chunk in chunks:
                yield chunk
            yield _CRLF
        yield _close_delimiter(boundary)

    # --- metadata -------------------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        store, found = await self._find(request)
        offers = [Offer(DICOM_JSON, multipart=False), Offer(JSON, multipart=False)]
        ranges = _accept_ranges(request)
        # `application/json, */*` wants plain JSON, though DICOM JSON comes first for `*/*`.
        chosen = negotiate(ranges, offers, _any_syntax, specific_first=True)
        if chosen is None:
            reason = ""
            if any(r.media_type == MULTIPART and r.type == DICOM_XML for r in ranges):
                reason = f'metadata as {MULTIPART}; type="{DICOM_XML}" is not available yet'
            raise not_acceptable(request, offers, reason)
        # The first batch is read before answering, so that an error is still an error body.
        first = await self._metadata_batch(request, store, found[:METADATA_BATCH])
        return StreamingResponse(
            self._metadata_body(request, store, found, first),
            media_type=f"{chosen.part_type}; charset=utf-8",
        )

    async def _metadata_batch(
        self, request: Request, store: DicomStoreName, batch: Sequence[StoredInstance]
    ) -> bytes:
        items = await self._blobs.metadata(batch)
        for instance, item in zip(batch, items, strict=True):
            _rewrite_bulkdata_uris(item, self._instance_url(request, store, instance))
        return b",".join(
            json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() for item in items
        )

    async def _metadata_body(
        self,
        request: Request,
        store: DicomStoreName,
        found: Sequence[StoredInstance],
        first: bytes,
    ) -> AsyncIterator[bytes]:
        yield b"[" + first
        for start in range(METADATA_BATCH, len(found), METADATA_BATCH):
            yield b"," + await self._metadata_batch(
                request, store, found[start : start + METADATA_BATCH]
            )
        yield b"]"

    # --- bulk data ------------------------------------------------------------------------------

    async def bulkdata(self, request: Request) -> Response:
        store, (instance,) = await self._find(request)
        path = str(request.path_params["path"]).strip("/")
        if not _TAG_PATH.fullmatch(path):
            raise invalid(
                "bulkdata",
                f"{path!r} is not a tag path such as 7FE00010 or 00081115/0/7FE00010",
            )
        path = path.upper()
        (metadata,) = await self._blobs.metadata([instance])
        if path not in set(iter_tag_paths(metadata)):
            raise NotFound(f"instance {instance.sop_uid} has no bulk data at {path}", resource=path)
        offers = [
            Offer(OCTET_STREAM, ANY_TRANSFER_SYNTAX),
            Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN),
            Offer(OCTET_STREAM, ANY_TRANSFER_SYNTAX, multipart=False),
            Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, multipart=False),
        ]
        chosen = negotiate(_accept_ranges(request), offers, _any_syntax)
        if chosen is None:
            raise not_acceptable(request, offers)
        opened = await asyncio.to_thread(self._open_value, instance, path)
        if opened is None:
            raise NotFound(f"instance {instance.sop_uid} has no bulk data at {path}")
        file, value = opened
        body = self._value_chunks(file, value)
        if not chosen.multipart:
            return StreamingResponse(
                body, media_type=OCTET_STREAM, headers={"content-length": str(value.length)}
            )
        boundary = new_boundary()
        url = f"{self._instance_url(request, store, instance)}/bulkdata/{path}"
        head = _part_head(boundary, {"Content-Type": OCTET_STREAM, "Content-Location": url})
        return StreamingResponse(
            self._one_part(head, body, boundary),
            media_type=_multipart_media_type(OCTET_STREAM, boundary),
        )

    def _open_value(
        self, instance: StoredInstance, path: str
    ) -> tuple[InstanceFile, StoredValue] | None:
        """Open the blob and find the value (in a worker thread)."""
        file = InstanceFile.open(self._blobs.local_path(instance))
        try:
            value = file.value(path)
        except EncapsulatedPixelData:
            file.close()
            raise HTTPException(
                406,
                f"{path} of instance {instance.sop_uid} is compressed pixel data (stored as"
                f" {instance.transfer_syntax_uid}) and decoding it is not available yet: no"
                " media type is acceptable for it; the stored instance itself is available as"
                f' {MULTIPART}; type="{DICOM}"; transfer-syntax=*',
            ) from None
        except BaseException:
            file.close()
            raise
        if value is None:
            file.close()
            return None
        return file, value

    @staticmethod
    async def _value_chunks(file: InstanceFile, value: StoredValue) -> AsyncIterator[bytes]:
        try:
            for start in range(0, value.length, VALUE_CHUNK):
                yield await asyncio.to_thread(value.read, start, start + VALUE_CHUNK)
        finally:
            await asyncio.to_thread(file.close)

    @staticmethod
    async def _one_part(
        head: bytes, body: AsyncIterator[bytes], boundary: str
    ) -> AsyncIterator[bytes]:
        yield head
        async for chunk in body:
            yield chunk
        yield _CRLF + _close_delimiter(boundary)

    # --- frames ---------------------------------------------------------------------------------

    async def frames(self, request: Request) -> Response:
        store, (instance,) = await self._find(request)
        numbers = _frame_numbers(str(request.path_params["frames"]))
        self._check_frame_numbers(instance, numbers)
        if instance.transfer_syntax_uid not in NATIVE_TRANSFER_SYNTAXES:
            raise not_acceptable(
                request,
                [],
                f"the instance is stored compressed as {instance.transfer_syntax_uid} and"
                " decoding its frames is not available yet: no media type is acceptable for"
                " them; the stored instance itself is available as"
                f' {MULTIPART}; type="{DICOM}"; transfer-syntax=*',
            )
        offers = [
            Offer(OCTET_STREAM, ANY_TRANSFER_SYNTAX),
            Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN),
        ]
        if len(numbers) == 1:
            offers += [
                Offer(OCTET_STREAM, ANY_TRANSFER_SYNTAX, multipart=False),
                Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, multipart=False),
            ]
        chosen = negotiate(_accept_ranges(request), offers, _explicit_le)
        if chosen is None:
            raise not_acceptable(request, offers)
        file, reader = await asyncio.to_thread(self._open_frames, instance, numbers)
        part_type = f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        if not chosen.multipart:
            try:
                frame = await asyncio.to_thread(reader.frame, numbers[0])
            finally:
                await asyncio.to_thread(file.close)
            return Response(frame, media_type=part_type)
        boundary = new_boundary()
        url = self._instance_url(request, store, instance)
        return StreamingResponse(
            self._frame_parts(file, reader, numbers, boundary, part_type, url),
            media_type=_multipart_media_type(OCTET_STREAM, boundary),
        )

    @staticmethod
    def _check_frame_numbers(instance: StoredInstance, numbers: Sequence[int]) -> None:
        if instance.number_of_frames == 0:
            raise invalid("frames", f"instance {instance.sop_uid} has no Pixel Data")
        for number in numbers:
            if number > instance.number_of_frames:
                raise invalid(
                    "frames",
                    f"frame {number} does not exist: instance {instance.sop_uid} has"
                    f" {instance.number_of_frames} frame(s)",
                )

    def _open_frames(
        self, instance: StoredInstance, numbers: Sequence[int]
    ) -> tuple[InstanceFile, FrameReader]:
        """Open the blob and check the frames exist (in a worker thread)."""
        file = InstanceFile.open(self._blobs.local_path(instance))
        try:
            reader = FrameReader(file)
            reader.check(numbers)
        except InconsistentPixelData as exc:
            file.close()
            raise FailedPrecondition(str(exc), resource=instance.sop_uid) from None
        except FrameError as exc:
            file.close()
            raise invalid("frames", str(exc)) from None
        except BaseException:
            file.close()
            raise
        return file, reader

    @staticmethod
    async def _frame_parts(
        file: InstanceFile,
        reader: FrameReader,
        numbers: Sequence[int],
        boundary: str,
        part_type: str,
        url: str,
    ) -> AsyncIterator[bytes]:
        try:
            for number in numbers:
                frame = await asyncio.to_thread(reader.frame, number)
                yield _part_head(
                    boundary,
                    {"Content-Type": part_type, "Content-Location": f"{url}/frames/{number}"},
                )
                yield frame
                yield _CRLF
            yield _close_delimiter(boundary)
        finally:
            await asyncio.to_thread(file.close)

    # --- rendered -------------------------------------------------------------------------------

    async def rendered(self, request: Request) -> Response:
        _, (instance,) = await self._find(request)
        method = _INSTANCE_METHODS + ".retrieveRendered"
        if "frames" in request.path_params:
            self._check_frame_numbers(instance, _frame_numbers(str(request.path_params["frames"])))
            method = _INSTANCE_METHODS + ".frames.retrieveRendered"
        raise Unimplemented(f"method {method} is not implemented by this server")


# Google's discovery name of the instance resource's methods.
_INSTANCE_METHODS = "healthcare.projects.locations.datasets.dicomStores.studies.series.instances"


def routes(context: DicomWebContext) -> list[BaseRoute]:
    wado = _Wado(context)
    study = STORE_PATH + "/studies/{study}"
    series = study + "/series/{series}"
    instance = series + "/instances/{instance}"
    get = ["GET"]
    return [
        Route(study, wado.retrieve, methods=get),
        Route(study + "/metadata", wado.metadata, methods=get),
        Route(series, wado.retrieve, methods=get),
        Route(series + "/metadata", wado.metadata, methods=get),
        Route(instance, wado.retrieve, methods=get),
        Route(instance + "/metadata", wado.metadata, methods=get),
        Route(instance + "/rendered", wado.rendered, methods=get),
        Route(instance + "/frames/{frames}", wado.frames, methods=get),
        Route(instance + "/frames/{frames}/rendered", wado.rendered, methods=get),
        Route(instance + "/bulkdata/{path:path}", wado.bulkdata, methods=get),
    ]
