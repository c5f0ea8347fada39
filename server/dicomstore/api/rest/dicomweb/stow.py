"""STOW-RS (PS3.18 10.5) at `.../dicomWeb/studies` and `.../dicomWeb/studies/{study}`.

Request (docs/google-behaviour.md#stow-request-types and #stow-json-bulkdata):
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
disk past `SPOOL_THRESHOLD`, as a single-part body does; each instance is offered to the
request's `IngestBatch` (`dicomstore.core.ingest`, the lifecycle import shares) as soon as its
part is complete, so memory is bounded by configuration, not by the body. A body of at most
`SPOOL_THRESHOLD` is parsed on the event loop, where a thread hop would cost more than the work.
A part larger than `--max-instance-bytes` is 413, a malformed body 400, an empty body or one
without any instance 400: request-level errors with Google's JSON error body. The batch writes
each instance durably, invisible until the request's instances become visible together, in one
catalog transaction, just before the response is sent; a request that fails (or a crash, or a
client that goes away) leaves none of its instances behind. A single-part body is ingested once
it has been read whole, and becomes visible in the transaction that records it.

Response (PS3.18 10.5.3; docs/google-behaviour.md#stow-response-format, #stow-response-shape,
#stow-failure-detail and #stow-status): a Referenced SOP Sequence item per stored instance with
its RetrieveURL, a Failed SOP Sequence item per instance not stored, with its Failure Reason and
a detail text. Status: 200 when every instance was stored, 409 when none was, and the mode's
`stow_partial_failure_status` otherwise (google 409, standard 202). The top-level RetrieveURL is
the study of the path when one was given, else the study of the stored instances when they all
belong to one study; it is left out when nothing was stored or when the stored instances span
several studies (no single study URL names them). Per-item failures, a truncated or garbage
DICOM part included, are Failed SOP Sequence items, never request errors.

JSON metadata (docs/google-behaviour.md#stow-json-bulkdata): `dicom.json_batch` pairs the
instances with their bulk data parts, which may come in any order, and `dicom.json_instances`
builds each complete instance into a Part 10 file by the rules it lists; an instance that breaks
one is a Failed SOP Sequence item.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import BinaryIO, Final, cast

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomstore.api.rest.dicomweb.context import STORE_PATH, DicomWebContext
from dicomstore.core.errors import InvalidArgument
from dicomstore.core.ingest import IngestBatch
from dicomstore.core.instances import Ingested
from dicomstore.core.names import DicomStoreName
from dicomstore.dicom import stow as response_module
from dicomstore.dicom.accept import best_offer, parse_accept, specificity
from dicomstore.dicom.json_batch import JsonBatch, MalformedMetadata, Outcome, read_metadata
from dicomstore.dicom.multipart import (
    BOUNDARY_RULE,
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
from dicomstore.dicom.stow import FailedInstance
from dicomstore.dicom.uids import is_valid_uid

#: A part body (and a single-part body) stays in memory up to this size, then spools to disk.
SPOOL_THRESHOLD: Final = 1 << 20
#: The body is parsed in batches of about this size, off the event loop past SPOOL_THRESHOLD.
FEED_BYTES: Final = 1 << 20
#: A JSON metadata part is parsed in memory: larger ones are 413.
MAX_METADATA_BYTES: Final = 64 << 20

DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
DICOM_XML: Final = "application/dicom+xml"
JSON: Final = "application/json"
MULTIPART_RELATED: Final = "multipart/related"

ACCEPTED_CONTENT_TYPES: Final = (
    DICOM,
    f'{MULTIPART_RELATED}; type="{DICOM}"',
    f'{MULTIPART_RELATED}; type="{DICOM_JSON}"',
)
#: Response media types, in the server's order of preference (XML by default:
#: docs/google-behaviour.md#stow-response-format).
RESPONSE_TYPES: Final = (DICOM_XML, DICOM_JSON, JSON)


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
            raise HTTPException(
                400, f"invalid multipart boundary {form.boundary!r}: {BOUNDARY_RULE}"
            )
        return form
    raise HTTPException(
        415, f"Content-Type {header.strip()!r} is not supported; STOW-RS accepts {accepted}"
    )


def negotiate(accept: str | None) -> str:
    """The response media type for an Accept header (RFC 9110 12.5.1); 406 if none fits.

    Malformed elements of the header are skipped. Each offered type takes the q-value of the
    most specific range that matches it; the highest q wins, then the more specific match, then
    the server's order (`RESPONSE_TYPES`).
    """
    ranges = parse_accept(accept, lenient=True)
    chosen = best_offer(ranges, RESPONSE_TYPES, specificity, specific_first=True)
    if chosen is None:
        raise HTTPException(
            406,
            f"cannot answer with any type of Accept {(accept or '').strip()!r}; "
            f"STOW-RS answers {', '.join(RESPONSE_TYPES)}",
        )
    return chosen


# --- the route ----------------------------------------------------------------------------------


class _Stow:
    def __init__(self, context: DicomWebContext) -> None:
        self._context = context

    async def handle(self, request: Request) -> Response:
        form = request_form(request.headers.get("content-type"))
        media_type = negotiate(request.headers.get("accept"))
        context = self._context
        store = context.store_name(request)
        store_key = await context.instances.store_key(store)
        study: str | None = request.path_params.get("study")
        if study is not None and not is_valid_uid(study):
            raise InvalidArgument(
                f"invalid study UID {study!r} in the path: a UID is digits and dots,"
                " at most 64 characters (PS3.5 9.1)",
                field="study",
            )
        if form.media_type == DICOM:
            _check_content_length(request, context.max_instance_bytes)
        batch = IngestBatch(context.instances, store, store_key, study_uid=study)
        upload = _Upload(context, batch, form)
        try:
            if form.media_type == DICOM:
                await upload.read_single(request.stream())
            else:
                await upload.read_multipart(request.stream())
            results = await batch.commit()
        except BaseException as exc:
            await asyncio.shield(batch.abandon())
            if isinstance(exc, ClientDisconnect):
                raise HTTPException(
                    499, "the client closed the connection during the upload"
                ) from exc
            raise
        finally:
            upload.close()
        if not results:
            raise HTTPException(400, "the request holds no DICOM instance")
        return self._response(request, store, study, results, media_type)

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
        study_urls = {uid: context.study_url(request, store, uid) for uid in studies}
        body = response_module.StoreResponse(
            retrieve_url=(
                context.study_url(request, store, retrieve_study) if retrieve_study else None
            ),
            referenced=[
                response_module.StoredInstance(
                    sop_class_uid=result.sop_class_uid,
                    sop_instance_uid=result.sop_uid,
                    retrieve_url=(
                        f"{study_urls[result.study_uid]}"
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
            xml = response_module.to_xml(body, xmlns=context.policy.stow_xml_namespace)
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


class _Upload:
    """Reads one STOW-RS request body part by part and offers its instances to the batch."""

    def __init__(self, context: DicomWebContext, batch: IngestBatch, form: ContentType) -> None:
        self._context = context
        self._batch = batch
        self._form = form
        self._part_number = 0
        self._seen_metadata = False
        self._json = JsonBatch(SPOOL_THRESHOLD)

    def close(self) -> None:
        self._json.close()

    # single part

    async def read_single(self, chunks: AsyncIterator[bytes]) -> None:
        """Ingest a body of at most SPOOL_THRESHOLD bytes from memory, as a BytesIO (which the
        core parses inline when small); spool a larger one to disk off the event loop."""
        limit = self._context.max_instance_bytes
        head = io.BytesIO()
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            head.write(chunk)
            if size > SPOOL_THRESHOLD:
                await self._read_spooled(head, chunks)
                return
        if not size:
            raise HTTPException(400, "the request body is empty")
        head.seek(0)
        await self._batch.add(head, alone=True)

    async def _read_spooled(self, head: io.BytesIO, chunks: AsyncIterator[bytes]) -> None:
        """Ingest a body that outgrew memory: `head` holds its start, `chunks` the rest."""
        limit = self._context.max_instance_bytes
        size = head.tell()
        # Closed in the finally clause below; the first write, past max_size, moves it to disk.
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_THRESHOLD)  # noqa: SIM115
        try:
            await asyncio.to_thread(body.write, head.getvalue())
            head.close()
            async with contextlib.aclosing(_batches(chunks)) as batches:
                async for batch in batches:
                    size += len(batch)
                    if size > limit:
                        raise _too_large(limit)
                    await asyncio.to_thread(body.write, batch)
            body.seek(0)
            await self._batch.add(cast(BinaryIO, body), alone=True)
        finally:
            body.close()

    # multipart

    async def read_multipart(self, chunks: AsyncIterator[bytes]) -> None:
        limit = self._context.max_instance_bytes
        assert self._form.boundary is not None  # checked by request_form
        reader = MultipartReader(self._form.boundary, limit, SPOOL_THRESHOLD)
        fed = 0
        try:
            async with contextlib.aclosing(_batches(chunks)) as batches:
                async for batch in batches:
                    fed += len(batch)
                    if fed <= SPOOL_THRESHOLD:
                        # Every part is still in memory: parsing inline costs less than a hop.
                        parts = reader.feed(batch)
                    else:
                        parts = await asyncio.to_thread(reader.feed, batch)
                    await self._take(parts)
            if not fed:
                raise HTTPException(400, "the request body is empty")
            reader.close()
            if self._part_number == 0:
                raise HTTPException(400, "the multipart body has no parts")
            await self._complete(self._json.finish())
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
            await self._fail(
                FailedInstance("", "", FailureReason.CANNOT_UNDERSTAND, f"part {number}: {exc}")
            )
            return
        media_type = content_type.media_type if content_type else None
        if media_type == DICOM or (media_type is None and self._form.type == DICOM):
            with part:
                # A part of at most the spool threshold is in memory: ingested while the next
                # parts are read.
                if part.size <= SPOOL_THRESHOLD:
                    await self._batch.add_in_memory(part.body.read())
                else:
                    await self._batch.add(cast(BinaryIO, part.body))
        elif self._form.type == DICOM:
            part.close()
            detail = (
                f"part {number} has Content-Type {media_type}; a multipart/related request"
                f' of type="{DICOM}" takes {DICOM} parts'
            )
            await self._fail(FailedInstance("", "", FailureReason.CANNOT_UNDERSTAND, detail))
        elif media_type in (DICOM_JSON, JSON) or (media_type is None and not self._seen_metadata):
            with part:
                await self._metadata(part, content_type, number)
        else:
            await self._complete(await asyncio.to_thread(self._json.add_bulk, part, content_type))

    async def _fail(self, failed: FailedInstance) -> None:
        await self._batch.add_failure(
            Ingested(
                sop_uid=failed.sop_instance_uid,
                sop_class_uid=failed.sop_class_uid,
                failure=failed.reason,
                detail=failed.detail,
            )
        )

    # JSON metadata and bulk data

    async def _metadata(self, part: Part, content_type: ContentType | None, number: int) -> None:
        self._seen_metadata = True
        if part.size > MAX_METADATA_BYTES:
            raise HTTPException(
                413, f"part {number}: a metadata part is limited to {MAX_METADATA_BYTES} bytes"
            )
        try:
            instances = await asyncio.to_thread(read_metadata, part.body)
        except MalformedMetadata as exc:
            raise HTTPException(400, f"part {number}: {exc}") from exc
        fallback = content_type.transfer_syntax if content_type else None
        await self._complete(self._json.add_metadata(instances, fallback))

    async def _complete(self, outcomes: Sequence[Outcome]) -> None:
        """Build and ingest the JSON instances now complete; record those that failed."""
        for outcome in outcomes:
            built = (
                outcome
                if isinstance(outcome, FailedInstance)
                else await asyncio.to_thread(self._json.build, outcome)
            )
            if isinstance(built, FailedInstance):
                await self._fail(built)
                continue
            try:
                await self._batch.add(cast(BinaryIO, built))
            finally:
                built.close()
