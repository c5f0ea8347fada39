"""DICOM JSON instances and their bulk data parts, made Part 10 files (PS3.18 10.5;
docs/google-behaviour.md#stow-json-bulkdata).

A STOW-RS request of `multipart/related; type="application/dicom+json"` carries arrays of DICOM
JSON instances (PS3.18 F.2) and bulk data parts that their BulkDataURIs name by Content-Location.
`parse_instance` checks one instance of such an array and lists its bulk data references,
`resolve_transfer_syntax` settles its transfer syntax and `build_part10` writes it.

Rules (Google's): every instance needs the Study, Series and SOP Instance UIDs and the SOP
Class UID; Specific Character Set is ISO_IR 192 (JSON is Unicode; it is added when
missing and any other value fails the instance). The transfer syntax comes from the instance's
Transfer Syntax UID (0002,0010), else from the `transfer-syntax` parameter of its Pixel Data part
(or the default of that part's media type, e.g. JPEG Baseline for `image/jpeg`), else from the
metadata part's `transfer-syntax` parameter, else Explicit VR Little Endian; values that
disagree fail the instance, as do big-endian and deflated syntaxes. Compressed bulk data
(`image/jpeg`, `image/dicom-rle`, `image/jls`, `image/jp2`, `image/jpx`) is only for Pixel Data
and must match the transfer syntax. With an encapsulated transfer syntax each Pixel Data part is
one frame, encapsulated as one fragment (PS3.5 A.4; PS3.18 8.7.3.3.2: compressed bulk data holds
no fragment delimiters), in the order sent. Pixel Data as InlineBinary fails (Google does not
take it). Top-level binary values (OB, OW, OD, OF, OL, OV) are streamed from their part into the
file; nested bulk data and other VRs are read into memory. No attribute is derived.

An instance that breaks a rule raises `InvalidInstance` with its Failure Reason (0008,1197).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate_buffer
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomstore.dicom.elements import PIXEL_DATA, PIXEL_DATA_TAGS
from dicomstore.dicom.header import InvalidInstance
from dicomstore.dicom.multipart import ContentType, Part
from dicomstore.dicom.reasons import FailureReason
from dicomstore.dicom.uids import is_valid_uid

OCTET_STREAM: Final = "application/octet-stream"
#: Compressed bulk data media types (PS3.18 Table 8.7.3-5, as Google lists them) and the
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
#: VRs whose value pydicom can stream from a file object when writing (pydicom 3).
_STREAMED_VRS: Final = frozenset({"OB", "OW", "OD", "OF", "OL", "OV"})
_UTF8: Final = "ISO_IR 192"
_REQUIRED_UIDS: Final = (
    ("0020000D", "Study Instance UID (0020,000D)"),
    ("0020000E", "Series Instance UID (0020,000E)"),
    ("00080018", "SOP Instance UID (0008,0018)"),
    ("00080016", "SOP Class UID (0008,0016)"),
)
_CANNOT_UNDERSTAND: Final = FailureReason.CANNOT_UNDERSTAND
_UNSUPPORTED_SYNTAX: Final = FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED


@dataclass(frozen=True)
class BulkRef:
    """A BulkDataURI of a JSON instance: its tag, VR, URI, and whether it is top-level."""

    tag: int
    vr: str
    uri: str
    top: bool


@dataclass
class BulkPart:
    """A bulk data part, kept until the instance that references it is complete."""

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
class JsonInstance:
    """A DICOM JSON instance (keys upper-cased) and what it needs from the bulk data parts."""

    metadata: dict[str, Any]
    refs: list[BulkRef]
    #: The metadata part's `transfer-syntax` parameter.
    fallback_transfer_syntax: str | None
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    #: Settled once its first Pixel Data part is there (`resolve_transfer_syntax`).
    transfer_syntax: UID | None = field(default=None)

    @property
    def pixel_ref(self) -> BulkRef | None:
        return next((ref for ref in self.refs if ref.top and ref.tag == PIXEL_DATA), None)

    @property
    def number_of_frames(self) -> int:
        """Number of Frames (0028,0008), 1 when absent or not a positive number."""
        text = json_text(self.metadata, "00280008")
        try:
            frames = int(text) if text else 1
        except ValueError:
            return 1
        return max(frames, 1)


def json_text(dataset: Mapping[str, Any], key: str) -> str | None:
    """The first value of attribute `key` in DICOM JSON, as stripped text; None if absent."""
    attribute = dataset.get(key)
    if not isinstance(attribute, dict):
        return None
    values = attribute.get("Value")
    if not isinstance(values, list) or not values or values[0] is None:
        return None
    return str(values[0]).strip()


def json_uids(instance: object) -> tuple[str, str, str, str]:
    """Study, series, SOP instance and SOP class UIDs of a JSON instance, "" when unusable."""
    if not isinstance(instance, dict):
        return "", "", "", ""
    texts = [json_text(instance, key) or "" for key, _label in _REQUIRED_UIDS]
    study, series, sop, sop_class = (text if is_valid_uid(text) else "" for text in texts)
    return study, series, sop, sop_class


def parse_instance(instance: object, fallback_transfer_syntax: str | None) -> JsonInstance:
    """One element of a metadata array, checked; raises `InvalidInstance` when it breaks a rule.

    `fallback_transfer_syntax` is the metadata part's `transfer-syntax` parameter.
    """
    if not isinstance(instance, dict):
        raise InvalidInstance(
            _CANNOT_UNDERSTAND, "a metadata array element is not a DICOM JSON object (PS3.18 F.2)"
        )
    metadata = {str(key).upper(): value for key, value in instance.items()}
    study_uid, series_uid, sop_uid, sop_class_uid = _required_uids(metadata)
    refs = list(_bulk_refs(metadata, top=True))
    pixel = metadata.get(f"{PIXEL_DATA:08X}")
    if isinstance(pixel, dict) and "InlineBinary" in pixel:
        raise InvalidInstance(
            _CANNOT_UNDERSTAND,
            "Pixel Data (7FE0,0010) must come as bulk data (a BulkDataURI), not InlineBinary",
        )
    return JsonInstance(
        metadata, refs, fallback_transfer_syntax, sop_class_uid, sop_uid, study_uid, series_uid
    )


def _required_uids(metadata: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """The four UIDs every instance needs (Google's rule), checked as `read_header` checks them."""
    found: list[str] = []
    for key, label in _REQUIRED_UIDS:
        text = json_text(metadata, key)
        reason = FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        if not text:
            raise InvalidInstance(reason, f"no {label}")
        if not is_valid_uid(text):
            raise InvalidInstance(reason, f"invalid {label}: {text!r} is not a UID (PS3.5 9.1)")
        found.append(text)
    return found[0], found[1], found[2], found[3]


def _bulk_refs(dataset: Mapping[str, Any], *, top: bool) -> Iterator[BulkRef]:
    for key, attribute in dataset.items():
        if not isinstance(attribute, dict):
            continue
        vr = str(attribute.get("vr", ""))
        uri = attribute.get("BulkDataURI")
        if uri is not None:
            try:
                tag = int(key, 16)
            except ValueError:
                raise InvalidInstance(
                    _CANNOT_UNDERSTAND, f"invalid DICOM JSON tag {key!r}"
                ) from None
            yield BulkRef(tag, vr, str(uri), top)
        if vr == "SQ":
            for item in attribute.get("Value") or ():
                if isinstance(item, dict):
                    yield from _bulk_refs(item, top=False)


def tag_text(tag: int) -> str:
    """`(GGGG,EEEE)`, as PS3 writes a tag."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def resolve_transfer_syntax(
    declared: str | None,
    pixel_media_type: str | None,
    pixel_transfer_syntax: str | None,
    fallback: str | None,
) -> UID:
    """The transfer syntax of an instance built from JSON metadata
    (docs/google-behaviour.md#stow-json-bulkdata).

    `declared` is the metadata's Transfer Syntax UID (0002,0010); `pixel_media_type` and
    `pixel_transfer_syntax` describe its first Pixel Data part; `fallback` is the metadata
    part's `transfer-syntax` parameter. Raises `InvalidInstance` when they disagree or the
    syntax is unknown, big-endian or deflated.
    """
    choices = COMPRESSED_MEDIA_TYPES.get(pixel_media_type or "")
    if pixel_media_type not in (None, OCTET_STREAM) and choices is None:
        raise InvalidInstance(
            _CANNOT_UNDERSTAND,
            f"Pixel Data part of media type {pixel_media_type} is not supported; bulk data is"
            f" {OCTET_STREAM} or one of {', '.join(COMPRESSED_MEDIA_TYPES)}",
        )
    if choices is not None:
        if pixel_transfer_syntax is not None and pixel_transfer_syntax not in choices:
            raise InvalidInstance(
                _UNSUPPORTED_SYNTAX,
                f"{pixel_media_type} cannot carry transfer syntax {pixel_transfer_syntax};"
                f" it carries {', '.join(choices)}",
            )
        allowed = (pixel_transfer_syntax,) if pixel_transfer_syntax else choices
        if declared is not None and declared not in allowed:
            raise InvalidInstance(
                _UNSUPPORTED_SYNTAX,
                f"Transfer Syntax UID (0002,0010) {declared} does not match the Pixel Data part"
                f" ({pixel_media_type}; transfer-syntax={allowed[0]})",
            )
        chosen = declared or allowed[0]
    else:
        given = sorted({value for value in (declared, pixel_transfer_syntax, fallback) if value})
        if len(given) > 1:
            raise InvalidInstance(
                _UNSUPPORTED_SYNTAX, f"conflicting transfer syntaxes: {', '.join(given)}"
            )
        chosen = given[0] if given else ExplicitVRLittleEndian
    uid = UID(chosen)
    if not is_valid_uid(chosen) or not uid.is_transfer_syntax:
        raise InvalidInstance(_UNSUPPORTED_SYNTAX, f"unknown transfer syntax {chosen!r}")
    if not uid.is_little_endian or uid.is_deflated:
        raise InvalidInstance(
            _UNSUPPORTED_SYNTAX,
            f"transfer syntax {chosen} (big-endian or deflated) cannot be built from JSON",
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
    instance: JsonInstance,
    parts: Mapping[str, Sequence[BulkPart]],
    transfer_syntax: UID,
    *,
    spool_threshold: int,
) -> tempfile.SpooledTemporaryFile[bytes]:
    """A Part 10 file (PS3.10 7.1) from a JSON instance and its bulk data parts, by URI.

    Blocking: call it off the event loop. Group 0002 of the metadata is replaced by File Meta
    Information built here (Transfer Syntax UID `transfer_syntax`, Media Storage UIDs from the
    data set). The file stays in memory up to `spool_threshold` bytes; the caller closes it.
    Raises `InvalidInstance` for metadata pydicom cannot read or bulk data that does not fit.
    """
    metadata = instance.metadata
    top = [ref for ref in instance.refs if ref.top]
    streamed = {
        ref.uri: ref for ref in top if ref.vr in _STREAMED_VRS or ref.tag in PIXEL_DATA_TAGS
    }
    streamed_keys = {f"{ref.tag:08X}" for ref in streamed.values()}
    charset = json_text(metadata, "00080005")
    if charset and charset != _UTF8:
        raise InvalidInstance(
            _CANNOT_UNDERSTAND,
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
            raise InvalidInstance(
                _CANNOT_UNDERSTAND,
                f"the bulk data of ({tag[:4]},{tag[4:]}) must be one {OCTET_STREAM} part"
                " (compressed bulk data is only for Pixel Data)",
            )
        body = held[0].part.body
        body.seek(0)
        return body.read()

    try:
        dataset = Dataset.from_json(rest, bulk_value)
    except InvalidInstance:
        raise
    except Exception as exc:  # pydicom raises many types on malformed DICOM JSON
        raise InvalidInstance(
            _CANNOT_UNDERSTAND,
            f"cannot read the DICOM JSON metadata: {type(exc).__name__}: {exc}",
        ) from exc
    if not charset:
        # A new element: an empty one the JSON gave may have any VR.
        dataset.add_new(0x00080005, "CS", _UTF8)
    for ref in streamed.values():
        dataset[ref.tag] = _streamed_element(ref, parts.get(ref.uri, ()), transfer_syntax)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    dataset.file_meta.MediaStorageSOPClassUID = UID(instance.sop_class_uid)
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(instance.sop_uid)
    # Handed to the caller, who closes it.
    out = tempfile.SpooledTemporaryFile(max_size=spool_threshold)  # noqa: SIM115
    try:
        dataset.save_as(out, enforce_file_format=True)
    except Exception as exc:
        out.close()
        raise InvalidInstance(
            _CANNOT_UNDERSTAND, f"cannot write the instance: {type(exc).__name__}: {exc}"
        ) from exc
    out.seek(0)
    return out


def _streamed_element(ref: BulkRef, held: Sequence[BulkPart], transfer_syntax: UID) -> DataElement:
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
        raise InvalidInstance(
            _CANNOT_UNDERSTAND,
            f"{tag_text(ref.tag)} came as {compressed[0]}: compressed bulk data is only for"
            f" Pixel Data with an encapsulated transfer syntax, not {transfer_syntax}",
        )
    if len(held) != 1:
        raise InvalidInstance(
            _CANNOT_UNDERSTAND,
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
