"""STOW-RS (PS3.18 10.5) at `.../dicomWeb/studies` and `.../dicomWeb/studies/{study}`.

Request (GOOGLE-BEHAVIOUR items 37 and 40):
- `application/dicom`: the body is one Part 10 instance;
- `multipart/related; type="application/dicom"` (the `type` quoted or not): any number of parts,
  each a Part 10 instance; a part whose own Content-Type is another media type fails as an item;
- `multipart/related; type="application/dicom+json"`: parts of `application/dicom+json` are
  JSON arrays of DICOM JSON instances (PS3.18 F.2); the other parts are bulk data, matched to the
  instances' BulkDataURIs by their Content-Location. Each instance becomes a Part 10 file (see
  "JSON metadata" below) and takes the same ingest path as an uploaded file.
Any other Content-Type is 415 listing these three. The Accept header picks the response's
representation: the Native DICOM Model (`application/dicom+xml`, the default, also for `*/*`)
or DICOM JSON (`application/dicom+json`, or `application/json`); q-values are honoured, a tie
goes to the more specific range, then to XML; nothing acceptable is 406 listing the three. Both
are checked before the store (404) and before the body is read.

Streaming: the body is read as it arrives and parsed by `MultipartReader`, whose parts spool to
disk past `SPOOL_THRESHOLD`; each instance is ingested (`Instances.ingest`, the one ingest path)
as soon as its part is complete, so memory is bounded by configuration, not by the body. A part
larger than `--max-instance-bytes` is 413, a malformed body 400, an empty body or one without
any instance 400: request-level errors with Google's JSON error body, and nothing of the part
at fault is stored. Instances of the same request completed before such an error stay stored
(each is committed on its own as soon as it is complete; a retry reports them as duplicates),
and the error message says how many there were.

Response (items 38 and 39; PS3.18 10.5.3): a Referenced SOP Sequence item per stored instance
with its RetrieveURL, a Failed SOP Sequence item per instance not stored, with its Failure Reason
and a detail text. Status: 200 when every instance was stored, 409 when none was, and the mode's
`stow_partial_failure_status` otherwise (google 409, standard 202). The top-level RetrieveURL is
the study of the path when one was given, else the study of the stored instances when they all
belong to one study; it is left out when nothing was stored or when the stored instances span
several studies (no single study URL names them). Per-item failures, a truncated or garbage
DICOM part included, are Failed SOP Sequence items, never request errors.

JSON metadata (item 40): every instance needs the Study, Series and SOP Instance UIDs and the SOP
Class UID; Specific Character Set is ISO_IR 192 (JSON is Unicode; it is added when missing and
any other value fails the instance). The transfer syntax comes from the instance's Transfer
Syntax UID (0002,0010), else from the `transfer-syntax` parameter of its Pixel Data part (or the
default of that part's media type, e.g. JPEG Baseline for `image/jpeg`), else from the metadata
part's `transfer-syntax` parameter, else Explicit VR Little Endian; values that disagree fail
the instance, as do big-endian and deflated syntaxes. Compressed bulk data (`image/jpeg`,
`image/dicom-rle`, `image/jls`, `image/jp2`, `image/jpx`) is only for Pixel Data and must match
the transfer syntax. With an encapsulated transfer syntax each Pixel Data part is one frame,
encapsulated as one fragment (PS3.5 A.4; PS3.18 8.7.3.3.2: compressed bulk data holds no
fragment delimiters), in the order sent: the instance is complete once Number of Frames parts
arrived. Pixel Data as InlineBinary fails (Google does not take it), and so does a BulkDataURI
used twice. Top-level binary values (OB, OW, OD, OF, OL, OV) are streamed from their part into
the file; nested bulk data and other VRs are read into memory. No attribute is derived.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Final, cast

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate_buffer
from pydicom.uid import UID, ExplicitVRLittleEndian
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.core.errors import InvalidArgument
from dicomstore.core.instances import Ingested
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom import stow as response_module
from dicomstore.dicom.multipart import (
    ContentType,
    InvalidContentType,
    MalformedMultipart,
    MultipartError,
    MultipartReader,
    Part,
    PartTooLarge,
    is_valid_boundary,
    parse_content_type,
)
from dicomstore.dicom.reasons import FailureReason
from dicomstore.dicom.uids import is_valid_uid

#: A part body (and a single-part body) stays in memory up to this size, then spools to disk.
SPOOL_THRESHOLD: Final = 1 << 20
#: The body is parsed in batches of about this size, off the event loop.
FEED_BYTES: Final = 1 << 20
#: A JSON metadata part is parsed in memory: larger ones are 413.
MAX_METADATA_BYTES: Final = 64 << 20

DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
DICOM_XML: Final = "application/dicom+xml"
JSON: Final = "application/json"
MULTIPART_RELATED: Final = "multipart/related"
OCTET_STREAM: Final = "application/octet-stream"

ACCEPTED_CONTENT_TYPES: Final = (
    DICOM,
    f'{MULTIPART_RELATED}; type="{DICOM}"',
    f'{MULTIPART_RELATED}; type="{DICOM_JSON}"',
)
#: Response media types, in the server's order of preference (item 38: XML by default).
RESPONSE_TYPES: Final = (DICOM_XML, DICOM_JSON, JSON)

#: Compressed bulk data media types (PS3.18 Table 8.7.3-5, as item 40 lists them) and the
#: transfer syntaxes each may carry, its default first.
COMPRESSED_MEDIA_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    ),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
}
PIXEL_DATA: Final = 0x7FE00010
_PIXEL_DATA_TAGS: Final = frozenset({PIXEL_DATA, 0x7FE00008, 0x7FE00009})
#: VRs whose value pydicom can stream from a file object when writing (pydicom 3).
_STREAMED_VRS: Final = frozenset({"OB", "OW", "OD", "OF", "OL", "OV"})
_UTF8: Final = "ISO_IR 192"
_REQUIRED_UIDS: Final = (
    ("0020000D", "Study Instance UID (0020,000D)"),
    ("0020000E", "Series Instance UID (0020,000E)"),
    ("00080018", "SOP Instance UID (0008,0018)"),
    ("00080016", "SOP Class UID (0008,0016)"),
)


def routes(context: DicomWebContext) -> list[BaseRoute]:
    stow = _Stow(context)
    return [
        Route(f"{STORE_PATH}/studies", stow.handle, methods=["POST"]),
        Route(f"{STORE_PATH}/studies/{{study}}", stow.handle, methods=["POST"]),
    ]


# --- content negotiation -----------------------------------------------------------------------


def request_form(header: str | None) -> ContentType:
    """The request's parsed Content-Type, if STOW-RS takes it; else 415 (400 for a bad boundary)."""
    accepted = ", ".join(ACCEPTED_CONTENT_TYPES)
    if header is None or not header.strip():
        raise HTTPException(415, f"the request has no Content-Type; STOW-RS accepts {accepted}")
    try:
        form = parse_content_type(header)
    except InvalidContentType as exc:
        raise HTTPException(
            415, f"invalid Content-Type {header!r} ({exc}); STOW-RS accepts {accepted}"
        ) from exc
    if form.media_type == DICOM:
        return form
    if form.media_type == MULTIPART_RELATED and form.type in (DICOM, DICOM_JSON):
        if not form.boundary:
            raise HTTPException(400, "multipart/related needs a boundary parameter (RFC 2046)")
        if not is_valid_boundary(form.boundary):
            raise HTTPException(400, f"invalid multipart boundary {form.boundary!r} (RFC 2046)")
        return form
    raise HTTPException(
        415, f"Content-Type {header.strip()!r} is not supported; STOW-RS accepts {accepted}"
    )


def negotiate(accept: str | None) -> str:
    """The response media type for an Accept header (RFC 9110 12.5.1); 406 if none fits.

    Each offered type takes the q-value of the most specific range that matches it; the highest
    q wins, then the more specific match, then the server's order (`RESPONSE_TYPES`).
    """
    if accept is None or not accept.strip():
        return RESPONSE_TYPES[0]
    ranges = _media_ranges(accept)
    best: tuple[float, int, int] | None = None
    chosen = ""
    for order, offer in enumerate(RESPONSE_TYPES):
        match = _match(offer, ranges)
        if match is None or match[0] <= 0:
            continue
        rank = (match[0], match[1], -order)
        if best is None or rank > best:
            best, chosen = rank, offer
    if best is None:
        raise HTTPException(
            406,
            f"cannot answer with any type of Accept {accept.strip()!r}; "
            f"STOW-RS answers {', '.join(RESPONSE_TYPES)}",
        )
    return chosen


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """(media range, q) of each well-formed element of an Accept header; others are ignored."""
    ranges: list[tuple[str, float]] = []
    for item in accept.split(","):
        text = item.strip()
        if not text:
            continue
        if text.split(";", 1)[0].strip() == "*":  # a bare "*" is a common "*/*"
            text = "*/*" + text[1:]
        try:
            media_range = parse_content_type(text)
        except InvalidContentType:
            continue
        quality = _quality(media_range.params.get("q", "1"))
        if quality is not None:
            ranges.append((media_range.media_type, quality))
    return ranges


def _quality(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None


def _match(offer: str, ranges: Sequence[tuple[str, float]]) -> tuple[float, int] | None:
    """(q, specificity) of the most specific range matching `offer`: 3 exact, 2 type/*, 1 */*."""
    kind = offer.split("/", 1)[0]
    found: tuple[float, int] | None = None
    for media_type, quality in ranges:
        if media_type == offer:
            specificity = 3
        elif media_type == f"{kind}/*":
            specificity = 2
        elif media_type == "*/*":
            specificity = 1
        else:
            continue
        if found is None or specificity > found[1]:
            found = (quality, specificity)
    return found


# --- the route ----------------------------------------------------------------------------------


class _Stow:
    def __init__(self, context: DicomWebContext) -> None:
        self._context = context

    async def handle(self, request: Request) -> Response:
        form = request_form(request.headers.get("content-type"))
        media_type = negotiate(request.headers.get("accept"))
        context = self._context
        store = context.store_name(request)
        await context.stores.get(str(store))
        study: str | None = request.path_params.get("study")
        if study is not None and not is_valid_uid(study):
            raise InvalidArgument(
                f"invalid study UID {study!r} in the path: a UID is digits and dots,"
                " at most 64 characters (PS3.5 9.1)",
                field="study",
            )
        if form.media_type == DICOM:
            _check_content_length(request, context.max_instance_bytes)
        batch = _Batch(context, store, study, form)
        try:
            if form.media_type == DICOM:
                await batch.read_single(request.stream())
            else:
                await batch.read_multipart(request.stream())
        except ClientDisconnect as exc:
            raise HTTPException(499, "the client closed the connection during the upload") from exc
        except HTTPException as exc:
            stored = sum(result.stored for result in batch.results)
            if stored:
                detail = (
                    f"{exc.detail}; {stored} instance(s) of this request were stored before"
                    " the error and stay stored"
                )
                raise HTTPException(exc.status_code, detail) from exc
            raise
        finally:
            batch.close()
        if not batch.results:
            raise HTTPException(400, "the request holds no DICOM instance")
        return self._response(request, store, study, batch.results, media_type)

    def _response(
        self,
        request: Request,
        store: DicomStoreName,
        study: str | None,
        results: Sequence[Ingested],
        media_type: str,
    ) -> Response:
        context = self._context
        stored = [result for result in results if result.stored]
        failed = [result for result in results if not result.stored]
        studies = {result.study_uid for result in stored}
        retrieve_study = study if study is not None and stored else None
        if study is None and len(studies) == 1:
            retrieve_study = next(iter(studies))
        body = response_module.StoreResponse(
            retrieve_url=(
                context.study_url(request, store, retrieve_study) if retrieve_study else None
            ),
            referenced=[
                response_module.StoredInstance(
                    sop_class_uid=result.sop_class_uid,
                    sop_instance_uid=result.sop_uid,
                    retrieve_url=(
                        f"{context.study_url(request, store, result.study_uid)}"
                        f"/series/{result.series_uid}/instances/{result.sop_uid}"
                    ),
                )
                for result in stored
            ],
            failed=[
                response_module.FailedInstance(
                    sop_class_uid=result.sop_class_uid,
                    sop_instance_uid=result.sop_uid,
                    reason=result.failure or FailureReason.PROCESSING_FAILURE,
                    detail=result.detail,
                )
                for result in failed
            ],
        )
        if not failed:
            status = 200
        elif not stored:
            status = 409
        else:
            status = context.policy.stow_partial_failure_status
        if media_type == DICOM_XML:
            xml = response_module.to_xml(body, xmlns=context.policy.name == "standard")
            return Response(xml.encode("utf-8"), status_code=status, media_type=media_type)
        text = json.dumps(response_module.to_json(body), ensure_ascii=False, separators=(",", ":"))
        return Response(text.encode("utf-8"), status_code=status, media_type=media_type)


def _check_content_length(request: Request, limit: int) -> None:
    """A single-part body announced larger than the limit is 413 before a byte is read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        413,
        f"an instance is larger than {limit} bytes, the server's --max-instance-bytes;"
        " nothing of it was stored",
    )


async def _batches(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The body in batches of at least FEED_BYTES (the last may be shorter), so that parsing
    and spooling hop to a worker thread once per megabyte, not once per network read."""
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        if len(pending) >= FEED_BYTES:
            yield bytes(pending)
            pending.clear()
    if pending:
        yield bytes(pending)


# --- one request ---------------------------------------------------------------------------------


class _Refused(Exception):
    """An instance fails before ingest: it becomes a Failed SOP Sequence item."""

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _BulkRef:
    """A BulkDataURI of a JSON instance: its tag, VR, URI, and whether it is top-level."""

    tag: int
    vr: str
    uri: str
    top: bool


@dataclass
class _Held:
    """A bulk data part kept until the instance that references it is complete."""

    part: Part
    content_type: ContentType | None

    @property
    def media_type(self) -> str:
        return self.content_type.media_type if self.content_type else OCTET_STREAM

    @property
    def transfer_syntax(self) -> str | None:
        value = self.content_type.transfer_syntax if self.content_type else None
        return None if value in (None, "", "*") else value


@dataclass
class _Pending:
    """A JSON instance waiting for its bulk data parts."""

    metadata: dict[str, Any]
    refs: list[_BulkRef]
    fallback_transfer_syntax: str | None
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: UID | None = field(default=None)


class _Batch:
    """The instances of one STOW-RS request, read part by part and ingested as they complete."""

    def __init__(
        self,
        context: DicomWebContext,
        store: DicomStoreName,
        study: str | None,
        form: ContentType,
    ) -> None:
        self._context = context
        self._store = store
        self._study = study
        self._form = form
        self.results: list[Ingested] = []
        self._part_number = 0
        self._seen_metadata = False
        self._pending: list[_Pending] = []
        self._wanted: dict[str, _Pending] = {}
        self._used: set[str] = set()
        self._held: dict[str, list[_Held]] = {}
        self._held_in_memory = 0

    def close(self) -> None:
        for held in self._held.values():
            for item in held:
                item.part.close()
        self._held.clear()

    # single part

    async def read_single(self, chunks: AsyncIterator[bytes]) -> None:
        limit = self._context.max_instance_bytes
        # Closed in the finally clause below.
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_THRESHOLD)  # noqa: SIM115
        try:
            size = 0
            async with contextlib.aclosing(_batches(chunks)) as batches:
                async for batch in batches:
                    size += len(batch)
                    if size > limit:
                        raise _too_large(limit)
                    await asyncio.to_thread(body.write, batch)
            if size == 0:
                raise HTTPException(400, "the request body is empty")
            body.seek(0)
            await self._ingest(cast(BinaryIO, body))
        finally:
            body.close()

    # multipart

    async def read_multipart(self, chunks: AsyncIterator[bytes]) -> None:
        limit = self._context.max_instance_bytes
        assert self._form.boundary is not None  # checked by request_form
        reader = MultipartReader(self._form.boundary, limit, SPOOL_THRESHOLD)
        received = 0
        try:
            async with contextlib.aclosing(_batches(chunks)) as batches:
                async for batch in batches:
                    received += len(batch)
                    parts = await asyncio.to_thread(reader.feed, batch)
                    await self._take(parts)
            if received == 0:
                raise HTTPException(400, "the request body is empty")
            reader.close()
            if self._part_number == 0:
                raise HTTPException(400, "the multipart body has no parts")
            self._finish_metadata()
        except PartTooLarge as exc:
            raise _too_large(exc.limit) from exc
        except MalformedMultipart as exc:
            raise HTTPException(400, f"malformed multipart/related body: {exc}") from exc
        finally:
            with contextlib.suppress(MultipartError):
                reader.close()  # discards an unfinished part after an error

    async def _take(self, parts: Sequence[Part]) -> None:
        """Handle completed parts in order; each handler owns (and closes) its part."""
        for index, part in enumerate(parts):
            try:
                await self._part(part)
            except BaseException:
                for rest in parts[index + 1 :]:
                    rest.close()
                raise

    async def _part(self, part: Part) -> None:
        self._part_number += 1
        number = self._part_number
        try:
            content_type = parse_content_type(part.content_type) if part.content_type else None
        except InvalidContentType as exc:
            part.close()
            self._fail(FailureReason.CANNOT_UNDERSTAND, f"part {number}: {exc}")
            return
        media_type = content_type.media_type if content_type else None
        if self._form.type == DICOM:
            if media_type not in (None, DICOM):
                part.close()
                self._fail(
                    FailureReason.CANNOT_UNDERSTAND,
                    f"part {number} has Content-Type {media_type}; a multipart/related request"
                    f' of type="{DICOM}" takes {DICOM} parts',
                )
                return
            with part:
                await self._ingest(cast(BinaryIO, part.body))
            return
        if media_type == DICOM:
            with part:
                await self._ingest(cast(BinaryIO, part.body))
        elif media_type in (DICOM_JSON, JSON) or (media_type is None and not self._seen_metadata):
            with part:
                await self._metadata(part, content_type, number)
        else:
            await self._bulk(part, content_type)

    async def _ingest(self, source: BinaryIO) -> None:
        result = await self._context.instances.ingest(self._store, source, study_uid=self._study)
        self.results.append(result)

    def _fail(
        self, reason: int, detail: str, *, sop_class_uid: str = "", sop_uid: str = ""
    ) -> None:
        self.results.append(
            Ingested(sop_uid=sop_uid, sop_class_uid=sop_class_uid, failure=reason, detail=detail)
        )

    # JSON metadata and bulk data

    async def _metadata(self, part: Part, content_type: ContentType | None, number: int) -> None:
        self._seen_metadata = True
        if part.size > MAX_METADATA_BYTES:
            raise HTTPException(
                413, f"part {number}: a metadata part is limited to {MAX_METADATA_BYTES} bytes"
            )
        try:
            instances = await asyncio.to_thread(_load_json, part.body)
        except ValueError as exc:
            raise HTTPException(
                400, f"part {number}: the metadata is not valid JSON: {exc}"
            ) from exc
        if not isinstance(instances, list):
            raise HTTPException(
                400,
                f"part {number}: the metadata must be a JSON array of DICOM JSON objects"
                " (PS3.18 F.2)",
            )
        fallback = content_type.transfer_syntax if content_type else None
        for instance in instances:
            try:
                pending = self._register(instance, fallback)
            except _Refused as exc:
                uids = _json_uids(instance)
                self._fail(exc.reason, exc.detail, sop_class_uid=uids[3], sop_uid=uids[2])
                continue
            await self._try_complete(pending)

    def _register(self, instance: object, fallback: str | None) -> _Pending:
        if not isinstance(instance, dict):
            raise _Refused(
                FailureReason.CANNOT_UNDERSTAND,
                "a metadata array element is not a DICOM JSON object (PS3.18 F.2)",
            )
        instance = {str(key).upper(): value for key, value in instance.items()}
        study_uid, series_uid, sop_uid, sop_class_uid = _required_uids(instance)
        refs = list(_bulk_refs(instance, top=True))
        pixel = instance.get(f"{PIXEL_DATA:08X}")
        if isinstance(pixel, dict) and "InlineBinary" in pixel:
            raise _Refused(
                FailureReason.CANNOT_UNDERSTAND,
                "Pixel Data (7FE0,0010) must come as bulk data (a BulkDataURI), not InlineBinary",
            )
        uris = [ref.uri for ref in refs]
        for uri in uris:
            if uris.count(uri) > 1 or uri in self._wanted or uri in self._used:
                raise _Refused(
                    FailureReason.CANNOT_UNDERSTAND,
                    f"BulkDataURI {uri!r} is used more than once in the request",
                )
        pending = _Pending(instance, refs, fallback, sop_class_uid, sop_uid, study_uid, series_uid)
        for uri in uris:
            self._wanted[uri] = pending
            self._used.add(uri)
        self._pending.append(pending)
        return pending

    async def _bulk(self, part: Part, content_type: ContentType | None) -> None:
        location = part.content_location
        if not location:
            part.close()  # nothing can reference it
            return
        self._held.setdefault(location, []).append(_Held(part, content_type))  # closed by close()
        if part.size <= SPOOL_THRESHOLD:
            # Parts held for later must not add up in memory: past the threshold, to disk.
            if self._held_in_memory + part.size > SPOOL_THRESHOLD:
                await asyncio.to_thread(part.body.rollover)
            else:
                self._held_in_memory += part.size
        pending = self._wanted.get(location)
        if pending is not None:
            await self._try_complete(pending)

    async def _try_complete(self, pending: _Pending) -> None:
        try:
            for ref in pending.refs:
                held = self._held.get(ref.uri, [])
                if not held or len(held) < self._expected_parts(pending, ref, held):
                    return
        except _Refused as exc:
            self._release(pending)
            self._fail(
                exc.reason, exc.detail, sop_class_uid=pending.sop_class_uid, sop_uid=pending.sop_uid
            )
            return
        await self._build_and_ingest(pending)

    def _expected_parts(self, pending: _Pending, ref: _BulkRef, held: Sequence[_Held]) -> int:
        """How many parts `ref` takes: Number of Frames for encapsulated Pixel Data, else 1."""
        if not (ref.top and ref.tag == PIXEL_DATA):
            return 1
        if pending.transfer_syntax is None:
            pending.transfer_syntax = resolve_transfer_syntax(
                _json_text(pending.metadata, "00020010"),
                held[0].media_type,
                held[0].transfer_syntax,
                pending.fallback_transfer_syntax,
            )
        if not pending.transfer_syntax.is_encapsulated:
            return 1
        return _number_of_frames(pending.metadata)

    async def _build_and_ingest(self, pending: _Pending) -> None:
        parts = {ref.uri: self._held.get(ref.uri, []) for ref in pending.refs}
        transfer_syntax = pending.transfer_syntax
        try:
            if transfer_syntax is None:
                transfer_syntax = resolve_transfer_syntax(
                    _json_text(pending.metadata, "00020010"),
                    None,
                    None,
                    pending.fallback_transfer_syntax,
                )
            built = await asyncio.to_thread(build_part10, pending, parts, transfer_syntax)
        except _Refused as exc:
            self._release(pending)
            self._fail(
                exc.reason, exc.detail, sop_class_uid=pending.sop_class_uid, sop_uid=pending.sop_uid
            )
            return
        try:
            await self._ingest(cast(BinaryIO, built))
        finally:
            built.close()
            self._release(pending)

    def _release(self, pending: _Pending) -> None:
        """Forget a pending instance and close the parts it used."""
        with contextlib.suppress(ValueError):
            self._pending.remove(pending)
        for ref in pending.refs:
            if self._wanted.get(ref.uri) is pending:
                del self._wanted[ref.uri]
            for held in self._held.pop(ref.uri, []):
                if held.part.size <= SPOOL_THRESHOLD:
                    self._held_in_memory = max(0, self._held_in_memory - held.part.size)
                held.part.close()

    def _finish_metadata(self) -> None:
        """At the end of the body: instances still waiting for bulk data fail."""
        for pending in list(self._pending):
            missing = [ref for ref in pending.refs if not self._held.get(ref.uri)]
            if missing:
                ref = missing[0]
                detail = (
                    f"no part has Content-Location {ref.uri!r}, the BulkDataURI of"
                    f" {_tag_text(ref.tag)}"
                )
            else:
                frames = _number_of_frames(pending.metadata)
                sent = len(self._held.get(_pixel_ref(pending).uri, []))
                detail = (
                    f"Number of Frames (0028,0008) is {frames} but {sent} Pixel Data part(s)"
                    " were sent; with an encapsulated transfer syntax each part is one frame"
                )
            self._release(pending)
            self._fail(
                FailureReason.CANNOT_UNDERSTAND,
                detail,
                sop_class_uid=pending.sop_class_uid,
                sop_uid=pending.sop_uid,
            )


def _load_json(body: IO[bytes]) -> Any:
    body.seek(0)
    return json.loads(body.read())


def _json_text(dataset: Mapping[str, Any], key: str) -> str | None:
    """The first value of attribute `key` in DICOM JSON, as stripped text; None if absent."""
    attribute = dataset.get(key)
    if not isinstance(attribute, dict):
        return None
    values = attribute.get("Value")
    if not isinstance(values, list) or not values or values[0] is None:
        return None
    return str(values[0]).strip()


def _json_uids(instance: object) -> tuple[str, str, str, str]:
    """Study, series, SOP instance and SOP class UIDs of a JSON instance, "" when unusable."""
    if not isinstance(instance, dict):
        return "", "", "", ""
    texts = [_json_text(instance, key) or "" for key, _label in _REQUIRED_UIDS]
    study, series, sop, sop_class = (text if is_valid_uid(text) else "" for text in texts)
    return study, series, sop, sop_class


def _required_uids(instance: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """The four UIDs every instance needs (item 40), checked as `read_header` checks them."""
    found: list[str] = []
    for key, label in _REQUIRED_UIDS:
        text = _json_text(instance, key)
        if not text:
            raise _Refused(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"no {label}")
        if not is_valid_uid(text):
            raise _Refused(
                FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"invalid {label}: {text!r} is not a UID (PS3.5 9.1)",
            )
        found.append(text)
    return found[0], found[1], found[2], found[3]


def _bulk_refs(dataset: Mapping[str, Any], *, top: bool) -> Iterator[_BulkRef]:
    for key, attribute in dataset.items():
        if not isinstance(attribute, dict):
            continue
        vr = str(attribute.get("vr", ""))
        uri = attribute.get("BulkDataURI")
        if uri is not None:
            try:
                tag = int(key, 16)
            except ValueError:
                raise _Refused(
                    FailureReason.CANNOT_UNDERSTAND, f"invalid DICOM JSON tag {key!r}"
                ) from None
            yield _BulkRef(tag, vr, str(uri), top)
        if vr == "SQ":
            for item in attribute.get("Value") or ():
                if isinstance(item, dict):
                    yield from _bulk_refs(item, top=False)


def _pixel_ref(pending: _Pending) -> _BulkRef:
    return next(ref for ref in pending.refs if ref.top and ref.tag == PIXEL_DATA)


def _number_of_frames(metadata: Mapping[str, Any]) -> int:
    text = _json_text(metadata, "00280008")
    try:
        frames = int(text) if text else 1
    except ValueError:
        return 1
    return max(frames, 1)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def resolve_transfer_syntax(
    declared: str | None,
    pixel_media_type: str | None,
    pixel_transfer_syntax: str | None,
    fallback: str | None,
) -> UID:
    """The transfer syntax of an instance built from JSON metadata (item 40).

    `declared` is the metadata's Transfer Syntax UID (0002,0010); `pixel_media_type` and
    `pixel_transfer_syntax` describe its first Pixel Data part; `fallback` is the metadata
    part's `transfer-syntax` parameter. Raises `_Refused` when they disagree or the syntax is
    unknown, big-endian or deflated.
    """
    reason = FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED
    choices = COMPRESSED_MEDIA_TYPES.get(pixel_media_type or "")
    if pixel_media_type not in (None, OCTET_STREAM) and choices is None:
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"Pixel Data part of media type {pixel_media_type} is not supported; bulk data is"
            f" {OCTET_STREAM} or one of {', '.join(COMPRESSED_MEDIA_TYPES)}",
        )
    if choices is not None:
        if pixel_transfer_syntax is not None and pixel_transfer_syntax not in choices:
            raise _Refused(
                reason,
                f"{pixel_media_type} cannot carry transfer syntax {pixel_transfer_syntax};"
                f" it carries {', '.join(choices)}",
            )
        allowed = (pixel_transfer_syntax,) if pixel_transfer_syntax else choices
        if declared is not None and declared not in allowed:
            raise _Refused(
                reason,
                f"Transfer Syntax UID (0002,0010) {declared} does not match the Pixel Data part"
                f" ({pixel_media_type}; transfer-syntax={allowed[0]})",
            )
        chosen = declared or allowed[0]
    else:
        given = [value for value in (declared, pixel_transfer_syntax, fallback) if value]
        if len(set(given)) > 1:
            raise _Refused(
                reason, f"conflicting transfer syntaxes: {', '.join(sorted(set(given)))}"
            )
        chosen = given[0] if given else ExplicitVRLittleEndian
    uid = UID(chosen)
    if not is_valid_uid(chosen) or not uid.is_transfer_syntax:
        raise _Refused(reason, f"unknown transfer syntax {chosen!r}")
    if not uid.is_little_endian or uid.is_deflated:
        raise _Refused(
            reason, f"transfer syntax {chosen} (big-endian or deflated) cannot be built from JSON"
        )
    return uid


class _Buffer(io.BufferedIOBase):
    """A part body as the `io.BufferedIOBase` pydicom streams a value from while writing."""

    def __init__(self, body: IO[bytes]) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        return self._body.read(-1 if size is None else size)

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._body.seek(offset, whence)

    def tell(self) -> int:
        return self._body.tell()


def build_part10(
    pending: _Pending, parts: Mapping[str, Sequence[_Held]], transfer_syntax: UID
) -> tempfile.SpooledTemporaryFile[bytes]:
    """A Part 10 file (PS3.10 7.1) from a JSON instance and its bulk data parts.

    Runs in a worker thread. Group 0002 of the metadata is replaced by File Meta Information
    built here (Transfer Syntax UID `transfer_syntax`, Media Storage UIDs from the data set).
    Raises `_Refused` for metadata pydicom cannot read or bulk data that does not fit.
    """
    metadata = pending.metadata
    streamed = {ref.uri: ref for ref in pending.refs if ref.top and ref.vr in _STREAMED_VRS}
    streamed |= {ref.uri: ref for ref in pending.refs if ref.top and ref.tag in _PIXEL_DATA_TAGS}
    streamed_keys = {f"{ref.tag:08X}" for ref in streamed.values()}
    charset = _json_text(metadata, "00080005")
    if charset and charset != _UTF8:
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"Specific Character Set (0008,0005) must be {_UTF8!r} in JSON metadata",
        )
    rest = {
        key: value
        for key, value in metadata.items()
        if not key.startswith("0002") and key.upper() not in streamed_keys
    }

    def bulk_value(tag: str, vr: str, uri: str) -> bytes:
        held = parts.get(uri, ())
        if len(held) != 1 or held[0].media_type != OCTET_STREAM:
            raise _Refused(
                FailureReason.CANNOT_UNDERSTAND,
                f"the bulk data of ({tag[:4]},{tag[4:]}) must be one {OCTET_STREAM} part"
                " (compressed bulk data is only for Pixel Data)",
            )
        body = held[0].part.body
        body.seek(0)
        return body.read()

    try:
        dataset = Dataset.from_json(rest, bulk_value)
    except _Refused:
        raise
    except Exception as exc:  # pydicom raises many types on malformed DICOM JSON
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"cannot read the DICOM JSON metadata: {type(exc).__name__}: {exc}",
        ) from exc
    if not charset:
        dataset.SpecificCharacterSet = _UTF8
    for ref in streamed.values():
        dataset[ref.tag] = _streamed_element(ref, parts.get(ref.uri, ()), transfer_syntax)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    dataset.file_meta.MediaStorageSOPClassUID = UID(pending.sop_class_uid)
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(pending.sop_uid)
    # Handed to the caller, who closes it.
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_THRESHOLD)  # noqa: SIM115
    try:
        dataset.save_as(out, enforce_file_format=True)
    except Exception as exc:
        out.close()
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"cannot write the instance: {type(exc).__name__}: {exc}",
        ) from exc
    out.seek(0)
    return out


def _streamed_element(ref: _BulkRef, held: Sequence[_Held], transfer_syntax: UID) -> DataElement:
    """The data element of a top-level bulk data value, read from its parts while writing."""
    compressed = [item.media_type for item in held if item.media_type != OCTET_STREAM]
    if ref.tag == PIXEL_DATA and transfer_syntax.is_encapsulated:
        # PS3.5 A.4: one fragment per frame, undefined length, OB.
        frames: list[io.BufferedIOBase] = [_Buffer(item.part.body) for item in held]
        total = sum(item.part.size for item in held)
        value = encapsulate_buffer(frames, has_bot=total < 0xFFFF0000)
        element = DataElement(ref.tag, "OB", value)
        element.is_undefined_length = True
        return element
    if compressed:
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"{_tag_text(ref.tag)} came as {compressed[0]}: compressed bulk data is only for"
            f" Pixel Data with an encapsulated transfer syntax, not {transfer_syntax}",
        )
    if len(held) != 1:
        raise _Refused(
            FailureReason.CANNOT_UNDERSTAND,
            f"{len(held)} parts have Content-Location {ref.uri!r}; a native value takes one",
        )
    body = held[0].part.body
    if held[0].part.size % 2:
        # DICOM values have an even length (PS3.5 7.1.1); pydicom would write a length that
        # does not count the padding byte it adds to a streamed value.
        body.seek(0, io.SEEK_END)
        body.write(b"\x00")
    body.seek(0)
    vr = ref.vr if ref.vr in _STREAMED_VRS else "OB"
    return DataElement(ref.tag, vr, _Buffer(body))
