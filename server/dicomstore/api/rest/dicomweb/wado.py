"""WADO-RS (PS3.18 10.4): studies, series and instances, their metadata and bulk data.

Resources, under `.../dicomWeb/studies/{study}[/series/{series}[/instances/{instance}]]`:
- the study, series or instance itself: `multipart/related; type="application/dicom"`, one part
  per instance (Content-Type `application/dicom; transfer-syntax=<its syntax>`, Content-Location
  its URL), and for an instance also the single part `application/dicom`
  (docs/google-behaviour.md#retrieve-media-types). Without a `transfer-syntax` parameter the
  answer is Explicit VR Little Endian (docs/google-behaviour.md#retrieve-default-syntax), in
  both modes: it is Google's default, and PS3.18 8.7.3.5.2 makes it the default of
  `application/dicom` too; so compressed, implicit and big-endian uploads are transcoded.
  `transfer-syntax=*` answers the stored bytes. Any syntax of `pixel_encode.PRODUCIBLE` may be
  asked for; an instance already in it is sent as stored;
- `/metadata`: `application/dicom+json`, an array of the instances' DICOM JSON whose
  BulkDataURIs point at the `bulkdata` resources below
  (docs/google-behaviour.md#metadata-bulkdata-rules); the same body is
  `application/json` to a client that prefers that (at equal quality, the type named more
  closely wins), as Google's discovery-based clients do by default and as QIDO-RS and STOW-RS
  answer;
- `/bulkdata/{tag path}` of an instance, `TTTTTTTT` or `SSSSSSSS/i/TTTTTTTT` nested: the value as
  `multipart/related; type="application/octet-stream"` (default) or `application/octet-stream`,
  little endian and uncompressed (docs/google-behaviour.md#bulkdata-retrieve): compressed Pixel
  Data is decoded, frame after frame; only paths the metadata lists as bulk data.
Frames and rendered images are in `wado_pixels`.

BulkDataURIs and Content-Locations are absolute URLs on `DicomWebContext.base_url`: the
`--public-url`, else the origin the request reached.

Transcoding runs in the pixel workers (`pixel_workers`), a frame or a few at a time. Whether
each instance can be transcoded is checked before the answer starts, so an impossible one is a
400 INVALID_ARGUMENT in Google's words ("image cannot be transcoded from ... to ...",
docs/google-behaviour.md#transcode-errors) rather than a broken body; a syntax this server never
produces is 406 listing those it does (docs/google-behaviour.md#retrieve-transcode-targets,
#accept-negotiation). An error after the answer has started (a blob that fails to decode past its
first frame) can only cut the body short: the client sees an incomplete multipart body, never a
wrong one. Metadata as `multipart/related; type=application/dicom+xml` is not available: 406.

Errors: a study, series or instance that does not exist (or an unknown store) is 404 NOT_FOUND.
Google's conformance statement documents 403 for "no access or resource doesn't exist", but its own
mock and every DICOMweb client expect 404, and nothing here controls access yet
(docs/google-behaviour.md#retrieve-missing-resource). A malformed bulk data path is 400
INVALID_ARGUMENT.

Bodies stream: stored bytes go from `BlobStore.read` chunks to the socket, transcoded ones
piece by piece with one job ahead (`core.instance_pixels`), bulk data is read range by range off
the event loop (`BlobStore.open_file`: on Cloud Storage, ranged requests), metadata is encoded
in batches, so memory stays bounded whatever the size of the study.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, BinaryIO, Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.api.rest.dicomweb.negotiation import (
    ANY_TRANSFER_SYNTAX,
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    JSON,
    MULTIPART,
    OCTET_STREAM,
    Offer,
    accept_ranges,
    any_syntax,
    explicit_le,
    negotiate,
    not_acceptable,
)
from dicomstore.api.rest.dicomweb.parts import (
    CRLF,
    close_delimiter,
    multipart_media_type,
    one_part,
    part_head,
)
from dicomstore.core.errors import NotFound, invalid
from dicomstore.core.model import StoredInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom.bulkdata import EncapsulatedPixelData, iter_tag_paths
from dicomstore.dicom.multipart import new_boundary
from dicomstore.dicom.pixel_encode import NATIVE_FRAME, NATIVE_OUTPUTS, PRODUCIBLE
from dicomstore.dicom.values import InstanceFile, StoredValue

#: Instances whose metadata is read and encoded at a time.
METADATA_BATCH: Final = 100
#: Bytes of a bulk data value read at a time.
VALUE_CHUNK: Final = 1 << 20

_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[0-9]+/[0-9A-Fa-f]{8})*")


def _rewrite_bulkdata_uris(metadata: Any, base: str) -> None:
    """Make the catalog's relative `bulkdata/<tag path>` URIs absolute, in place."""
    for attribute in metadata.values():
        uri = attribute.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("bulkdata/"):
            attribute["BulkDataURI"] = f"{base}/{uri}"
        if attribute.get("vr") == "SQ":
            for item in attribute.get("Value", ()):
                _rewrite_bulkdata_uris(item, base)


class _Wado:
    def __init__(self, context: DicomWebContext) -> None:
        self._context = context
        self._blobs = context.instances
        self._pixels = context.pixels

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
        syntaxes = [ANY_TRANSFER_SYNTAX, *PRODUCIBLE]
        syntaxes += [s for s in stored if len(stored) == 1 and s not in PRODUCIBLE]
        offers = [Offer(DICOM, syntax) for syntax in syntaxes]
        if "instance" in request.path_params:
            offers += [Offer(DICOM, syntax, multipart=False) for syntax in syntaxes]
        chosen = negotiate(accept_ranges(request), offers, explicit_le)
        if chosen is None:
            raise not_acceptable(request, offers)
        target = chosen.transfer_syntax
        await self._check_transcodable(found, target)
        first = await self._body(found[0], target)
        if first is None:
            raise NotFound(f"instance {found[0].sop_uid} was just deleted")
        if not chosen.multipart:
            headers = {}
            if not _transcoded(found[0], target):
                headers["content-length"] = str(found[0].blob_size)
            return StreamingResponse(
                first,
                media_type=f"{DICOM}; transfer-syntax={_syntax_of(found[0], target)}",
                headers=headers,
            )
        boundary = new_boundary()
        return StreamingResponse(
            self._instance_parts(request, store, found, target, first, boundary),
            media_type=multipart_media_type(DICOM, boundary),
        )

    async def _check_transcodable(self, found: Sequence[StoredInstance], target: str) -> None:
        """400 before the answer starts if an instance cannot be produced in `target`."""
        if target in NATIVE_OUTPUTS:
            return  # every decodable image goes to a native syntax
        # Instances deleted since the lookup are left out here and in the body below.
        await self._pixels.check_transcode([i for i in found if _transcoded(i, target)], target)

    async def _body(self, instance: StoredInstance, target: str) -> AsyncIterator[bytes] | None:
        """The instance's bytes in `target`; None if it was deleted since the lookup.

        The first piece is ready when this returns, so its errors are still the answer's.
        """
        if not _transcoded(instance, target):
            return await self._blobs.open(instance)
        try:
            return await self._pixels.transcoded(instance, target)
        except NotFound:
            return None

    async def _instance_parts(
        self,
        request: Request,
        store: DicomStoreName,
        found: Sequence[StoredInstance],
        target: str,
        first: AsyncIterator[bytes],
        boundary: str,
    ) -> AsyncIterator[bytes]:
        for index, instance in enumerate(found):
            chunks = first if index == 0 else await self._body(instance, target)
            if chunks is None:
                continue  # deleted since the lookup: leave it out rather than break the body
            yield part_head(
                boundary,
                {
                    "Content-Type": f"{DICOM}; transfer-syntax={_syntax_of(instance, target)}",
                    "Content-Location": self._instance_url(request, store, instance),
                },
            )
            async for chunk in chunks:
                yield chunk
            yield CRLF
        yield close_delimiter(boundary)

    # --- metadata -------------------------------------------------------------------------------

    async def metadata(self, request: Request) -> Response:
        store, found = await self._find(request)
        offers = [Offer(DICOM_JSON, multipart=False), Offer(JSON, multipart=False)]
        ranges = accept_ranges(request)
        # `application/json, */*` wants plain JSON, though DICOM JSON comes first for `*/*`.
        chosen = negotiate(ranges, offers, any_syntax, specific_first=True)
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
            Offer(OCTET_STREAM, EXPLICIT_LE),
            Offer(OCTET_STREAM, ANY_TRANSFER_SYNTAX, multipart=False),
            Offer(OCTET_STREAM, EXPLICIT_LE, multipart=False),
        ]
        chosen = negotiate(accept_ranges(request), offers, any_syntax)
        if chosen is None:
            raise not_acceptable(request, offers)
        blob = await self._blobs.open_file(instance)
        opened = await asyncio.to_thread(self._open_value, instance, blob, path)
        headers = {}
        if opened is None:
            body = self._decoded_pixel_data(instance)
        else:
            file, value = opened
            body = self._value_chunks(file, value)
            headers["content-length"] = str(value.length)
        if not chosen.multipart:
            return StreamingResponse(body, media_type=OCTET_STREAM, headers=headers)
        boundary = new_boundary()
        url = f"{self._instance_url(request, store, instance)}/bulkdata/{path}"
        head = part_head(boundary, {"Content-Type": OCTET_STREAM, "Content-Location": url})
        return StreamingResponse(
            one_part(head, body, boundary),
            media_type=multipart_media_type(OCTET_STREAM, boundary),
        )

    @staticmethod
    def _open_value(
        instance: StoredInstance, blob: BinaryIO, path: str
    ) -> tuple[InstanceFile, StoredValue] | None:
        """Parse the blob and find the value (in a worker thread); None for compressed Pixel
        Data, which the pixel workers decode. The blob is closed unless the value is found."""
        try:
            file = InstanceFile(blob)
        except BaseException:
            blob.close()
            raise
        try:
            value = file.value(path)
        except EncapsulatedPixelData:
            file.close()
            return None
        except BaseException:
            file.close()
            raise
        if value is None:
            file.close()
            raise NotFound(f"instance {instance.sop_uid} has no bulk data at {path}")
        return file, value

    async def _decoded_pixel_data(self, instance: StoredInstance) -> AsyncIterator[bytes]:
        """Compressed Pixel Data decoded: every frame native, little endian, one after another."""
        frames = range(1, instance.number_of_frames + 1)
        length = 0
        async for frame in self._pixels.frames(instance, frames, NATIVE_FRAME):
            length += len(frame)
            yield frame
        if length % 2:
            yield b"\x00"

    @staticmethod
    async def _value_chunks(file: InstanceFile, value: StoredValue) -> AsyncIterator[bytes]:
        try:
            for start in range(0, value.length, VALUE_CHUNK):
                yield await asyncio.to_thread(value.read, start, start + VALUE_CHUNK)
        finally:
            await asyncio.to_thread(file.close)


EXPLICIT_LE: Final = NATIVE_OUTPUTS[0]


def _transcoded(instance: StoredInstance, target: str) -> bool:
    return target not in (ANY_TRANSFER_SYNTAX, instance.transfer_syntax_uid)


def _syntax_of(instance: StoredInstance, target: str) -> str:
    return instance.transfer_syntax_uid if target == ANY_TRANSFER_SYNTAX else target


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
        Route(instance + "/bulkdata/{path:path}", wado.bulkdata, methods=get),
    ]
