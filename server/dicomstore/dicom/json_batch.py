"""The JSON instances of one STOW-RS request and the bulk data parts they wait for
(docs/google-behaviour.md#stow-json-bulkdata).

Metadata and bulk data parts may come in any order. `JsonBatch` keeps the instances that still
miss bulk data and the parts that no instance has claimed yet, and hands back each instance as
soon as it is complete: every BulkDataURI has its part, and with an encapsulated transfer
syntax the Pixel Data has Number of Frames parts (one frame each, in the order sent). A
BulkDataURI used twice in the request fails the instance that reuses it; at the end of the body
the instances still waiting fail. Failures are `FailedInstance` values, in the order they occur.
`read_metadata` reads a metadata part: a JSON array of DICOM JSON instances (PS3.18 F.2).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from dicomstore.dicom.elements import PIXEL_DATA
from dicomstore.dicom.header import InvalidInstance
from dicomstore.dicom.json_instances import (
    BulkPart,
    BulkRef,
    JsonInstance,
    build_part10,
    json_text,
    json_uids,
    parse_instance,
    resolve_transfer_syntax,
    tag_text,
)
from dicomstore.dicom.multipart import ContentType, Part
from dicomstore.dicom.reasons import FailureReason
from dicomstore.dicom.stow import FailedInstance


class MalformedMetadata(ValueError):
    """A metadata part that is not a JSON array (PS3.18 F.2): the whole request is at fault."""


def read_metadata(body: IO[bytes]) -> list[Any]:
    """The JSON array of a metadata part; raises `MalformedMetadata` when it is not one."""
    body.seek(0)
    try:
        instances = json.loads(body.read())
    except ValueError as exc:
        raise MalformedMetadata(f"the metadata is not valid JSON: {exc}") from exc
    if not isinstance(instances, list):
        raise MalformedMetadata(
            "the metadata must be a JSON array of DICOM JSON objects (PS3.18 F.2)"
        )
    return instances


#: What adding a part yields: instances now complete (to `build`) and instances that failed.
Outcome = JsonInstance | FailedInstance


class JsonBatch:
    """Instances waiting for bulk data, and bulk data waiting for instances, of one request.

    Bulk data parts held in memory add up to at most `spool_threshold` bytes: past it, a held
    part spools to disk. The batch owns the parts given to it; `close` closes those it holds.
    """

    def __init__(self, spool_threshold: int) -> None:
        self._spool_threshold = spool_threshold
        self._pending: list[JsonInstance] = []
        self._wanted: dict[str, JsonInstance] = {}
        self._used: set[str] = set()
        self._held: dict[str, list[BulkPart]] = {}
        self._held_in_memory = 0

    def add_metadata(
        self, instances: Sequence[object], transfer_syntax: str | None
    ) -> list[Outcome]:
        """Register the instances of a metadata array (`read_metadata`); `transfer_syntax` is
        the metadata part's parameter of that name."""
        outcomes: list[Outcome] = []
        for instance in instances:
            try:
                pending = self._register(instance, transfer_syntax)
            except InvalidInstance as exc:
                _study, _series, sop_uid, sop_class_uid = json_uids(instance)
                outcomes.append(FailedInstance(sop_class_uid, sop_uid, exc.reason, exc.message))
                continue
            outcomes += self._try_complete(pending)
        return outcomes

    def add_bulk(self, part: Part, content_type: ContentType | None) -> list[Outcome]:
        """Hold a bulk data part for the instance whose BulkDataURI is its Content-Location.

        Blocking (it may spool the part to disk): call it off the event loop.
        """
        location = part.content_location
        if not location:
            part.close()  # nothing can reference it
            return []
        self._held.setdefault(location, []).append(BulkPart(part, content_type))
        if part.size <= self._spool_threshold:
            # Parts held for later must not add up in memory: past the threshold, to disk.
            if self._held_in_memory + part.size > self._spool_threshold:
                part.body.rollover()
            else:
                self._held_in_memory += part.size
        pending = self._wanted.get(location)
        return [] if pending is None else self._try_complete(pending)

    def build(
        self, instance: JsonInstance
    ) -> tempfile.SpooledTemporaryFile[bytes] | FailedInstance:
        """The Part 10 file of a complete instance (`build_part10`), which the caller closes.

        Blocking: call it off the event loop. The instance's parts are closed either way.
        """
        parts = {ref.uri: self._held.get(ref.uri, []) for ref in instance.refs}
        try:
            transfer_syntax = instance.transfer_syntax or resolve_transfer_syntax(
                json_text(instance.metadata, "00020010"),
                None,
                None,
                instance.fallback_transfer_syntax,
            )
            return build_part10(
                instance, parts, transfer_syntax, spool_threshold=self._spool_threshold
            )
        except InvalidInstance as exc:
            return _failed(instance, exc.reason, exc.message)
        finally:
            self._release(instance)

    def finish(self) -> list[FailedInstance]:
        """At the end of the body: the instances still waiting for bulk data fail."""
        failed: list[FailedInstance] = []
        for pending in list(self._pending):
            missing = [ref for ref in pending.refs if not self._held.get(ref.uri)]
            if missing:
                ref = missing[0]
                detail = (
                    f"no part has Content-Location {ref.uri!r}, the BulkDataURI of"
                    f" {tag_text(ref.tag)}"
                )
            else:  # only Pixel Data can be short of parts
                pixel = pending.pixel_ref
                sent = len(self._held.get(pixel.uri, [])) if pixel else 0
                detail = (
                    f"Number of Frames (0028,0008) is {pending.number_of_frames} but {sent} Pixel"
                    " Data part(s) were sent; with an encapsulated transfer syntax each part is"
                    " one frame"
                )
            self._release(pending)
            failed.append(_failed(pending, FailureReason.CANNOT_UNDERSTAND, detail))
        return failed

    def close(self) -> None:
        """Close the parts still held."""
        for held in self._held.values():
            for item in held:
                item.part.close()
        self._held.clear()

    def _register(self, instance: object, transfer_syntax: str | None) -> JsonInstance:
        pending = parse_instance(instance, transfer_syntax)
        uris = [ref.uri for ref in pending.refs]
        for uri in uris:
            if uris.count(uri) > 1 or uri in self._wanted or uri in self._used:
                raise InvalidInstance(
                    FailureReason.CANNOT_UNDERSTAND,
                    f"BulkDataURI {uri!r} is used more than once in the request",
                )
        for uri in uris:
            self._wanted[uri] = pending
            self._used.add(uri)
        self._pending.append(pending)
        return pending

    def _try_complete(self, pending: JsonInstance) -> list[Outcome]:
        try:
            for ref in pending.refs:
                held = self._held.get(ref.uri, [])
                if not held or len(held) < self._expected_parts(pending, ref, held):
                    return []
        except InvalidInstance as exc:
            self._release(pending)
            return [_failed(pending, exc.reason, exc.message)]
        return [pending]

    def _expected_parts(self, pending: JsonInstance, ref: BulkRef, held: Sequence[BulkPart]) -> int:
        """How many parts `ref` takes: Number of Frames for encapsulated Pixel Data, else 1."""
        if not (ref.top and ref.tag == PIXEL_DATA):
            return 1
        if pending.transfer_syntax is None:
            pending.transfer_syntax = resolve_transfer_syntax(
                json_text(pending.metadata, "00020010"),
                held[0].media_type,
                held[0].transfer_syntax,
                pending.fallback_transfer_syntax,
            )
        if not pending.transfer_syntax.is_encapsulated:
            return 1
        return pending.number_of_frames

    def _release(self, pending: JsonInstance) -> None:
        """Forget a pending instance and close the parts it used."""
        with contextlib.suppress(ValueError):
            self._pending.remove(pending)
        for ref in pending.refs:
            if self._wanted.get(ref.uri) is pending:
                del self._wanted[ref.uri]
            for held in self._held.pop(ref.uri, []):
                if held.part.size <= self._spool_threshold:
                    self._held_in_memory = max(0, self._held_in_memory - held.part.size)
                held.part.close()


def _failed(instance: JsonInstance, reason: int, detail: str) -> FailedInstance:
    return FailedInstance(instance.sop_class_uid, instance.sop_uid, reason, detail)
