"""Read what the index needs from a DICOM Part 10 instance, in bounded memory.

`read_header` accepts only the DICOM File Format (PS3.10 section 7.1): a 128-byte preamble, the
"DICM" prefix and File Meta Information with a Transfer Syntax UID (0002,0010). That is what
STOW-RS `application/dicom` carries (PS3.18 8.7.3.1) and what import reads from Cloud Storage; a
bare data set has no transfer syntax to trust, so pydicom is called with `force=False` and a
file without the prefix is refused rather than guessed at.

Memory stays bounded by the non-bulk part of the data set, not by the file size:
- the data set is read with `defer_size` (64 KiB): a top-level value above it, Pixel Data above
  all, is skipped with a seek (encapsulated Pixel Data by walking its item headers) and never
  held in memory; it is read later only if it must be rendered inline;
- deflated data sets (1.2.840.10008.1.2.1.99) are inflated in memory by pydicom, so the inflated
  size is measured first, in a streaming pass, and refused above `max_inflated_bytes`;
- sequences of undefined length are parsed eagerly by pydicom, so they count in full.
The whole file is read (not `stop_before_pixels`) so that Pixel Data's BulkDataURI and any
attributes after Pixel Data reach the metadata, and so truncation shows.

Truncation detected (reason CANNOT_UNDERSTAND):
- a defined-length value, at any depth, shorter than its length (pydicom reads short silently);
- a deferred top-level value, e.g. native Pixel Data, that extends past the end of the file
  (pydicom seeks past it silently): the reader ends past end of file;
- encapsulated Pixel Data or any undefined-length value without its Sequence Delimitation Item
  (pydicom only warns and drops the element): the reader stops before the end of the file;
- a file cut inside an element header (pydicom stops quietly): bytes left after the last
  defined-length element.
Not detected: a file cut exactly between two top-level elements (it is a shorter, valid data
set; if the cut removed Pixel Data, the instance simply has none) and native Pixel Data shorter
than Rows x Columns x Samples x Bits Allocated x Frames (a value that is complete but
inconsistent; frame retrieval reports it later).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, BinaryIO, Final

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset as read_data_set
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, PrivateTransferSyntaxes

from dicomstore.dicom.dicomjson import to_dicom_json
from dicomstore.dicom.elements import PIXEL_DATA_TAGS, UNDEFINED_LENGTH
from dicomstore.dicom.raw_values import Decoded, decode_values
from dicomstore.dicom.reasons import FailureReason
from dicomstore.dicom.uids import is_valid_uid

#: Values above this size are not loaded while the header is read (pydicom `defer_size`).
DEFER_SIZE: Final = 64 * 1024
#: Default cap on the inflated size of a deflated data set (pydicom inflates it in memory).
MAX_INFLATED_BYTES: Final = 256 * 1024 * 1024
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1.99"

#: Index attributes, by keyword: Google's searchable keys
#: (docs/google-behaviour.md#qido-searchable-keys), its default QIDO attributes at study, series and
#: instance level (docs/google-behaviour.md#qido-default-attributes) plus those `includefield=all`
#: adds, and PS3.18 Table 10.6.1-5's required matching keys for standard mode. Values the core
#: derives (InstanceAvailability, ModalitiesInStudy from Modality, NumberOfStudyRelated*,
#: RetrieveURL) and sequences (RequestAttributesSequence) are not here: sequences come from
#: `metadata`.
INDEX_KEYWORDS: Final = (
    # study
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyID",
    "StudyDescription",
    "InstitutionName",
    # series
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "Laterality",
    "BodyPartExamined",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    # instance
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

_INDEX_TAGS: Final = tuple((keyword, int(Tag(keyword))) for keyword in INDEX_KEYWORDS)
_REQUIRED_UIDS: Final = (
    ("StudyInstanceUID", 0x0020000D, "Study Instance UID (0020,000D)"),
    ("SeriesInstanceUID", 0x0020000E, "Series Instance UID (0020,000E)"),
    ("SOPInstanceUID", 0x00080018, "SOP Instance UID (0008,0018)"),
    ("SOPClassUID", 0x00080016, "SOP Class UID (0008,0016)"),
)
_NUMBER_OF_FRAMES: Final = 0x00280008
_FOUND_TAGS: Final = frozenset({tag for _, tag in _INDEX_TAGS} | set(PIXEL_DATA_TAGS))
# PS3.10 7.1: File Meta elements are Explicit VR Little Endian; these VRs have 4-byte lengths.
_LONG_LENGTH_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_MAX_META_BYTES: Final = 64 * 1024


class InvalidInstance(Exception):
    """The object is not a usable DICOM Part 10 instance.

    `reason` is a Failure Reason (0008,1197) code from `dicomstore.dicom.reasons`; the core
    turns it into a STOW-RS failed item (PS3.18 10.5.3) or an import failure.
    """

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class InstanceHeader:
    """What the catalog indexes of one instance (PS3.18 10.6 QIDO keys;
    docs/google-behaviour.md#qido-default-attributes)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    #: INDEX_KEYWORDS present with a non-empty value, each as one string: surrounding spaces
    #: removed, multiple values joined by a backslash as in DICOM, numbers in plain decimal,
    #: PN in its DICOM form (e.g. "Yamada^Tarou=山田^太郎=やまだ^たろう").
    attributes: Mapping[str, str]
    #: DICOM JSON (PS3.18 F.2) of the data set, bulk data as `bulkdata/<tag path>` URIs.
    metadata: dict[str, Any] = field(compare=False, hash=False)
    #: Number of Frames (0028,0008) if valid, 1 for other instances with Pixel Data, else 0.
    number_of_frames: int = 0


def read_header(
    source: Path | BinaryIO | IO[bytes], *, max_inflated_bytes: int = MAX_INFLATED_BYTES
) -> InstanceHeader:
    """Parse a DICOM Part 10 instance from a path or a seekable binary file object.

    A file object is read from its start and left open. Raises `InvalidInstance` for anything
    that is not a usable instance: no preamble and "DICM" prefix, no Transfer Syntax UID, a
    truncated data set, a data set pydicom cannot parse, or a missing or malformed (PS3.5 9.1)
    Study, Series or SOP Instance UID or SOP Class UID. OSError from the source propagates.
    """
    if isinstance(source, Path):
        with source.open("rb") as handle:
            return _read(handle, max_inflated_bytes)
    return _read(source, max_inflated_bytes)


def read_dataset(source: BinaryIO | IO[bytes]) -> FileDataset:
    """Read a stored instance (already accepted by `read_header`) for WADO and bulk data.

    Same reading as `read_header`: Part 10 only, values above DEFER_SIZE left in the file until
    used, so `source` must stay open while the data set is used.
    """
    source.seek(0)
    return dcmread(source, defer_size=DEFER_SIZE, force=False)


def _read(fp: BinaryIO | IO[bytes], max_inflated_bytes: int) -> InstanceHeader:
    fp.seek(0)
    transfer_syntax, data_set_offset = _read_file_meta(fp)
    deflated = transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    if deflated:
        fp.seek(data_set_offset)
        _check_inflated_size(fp, max_inflated_bytes)
    try:
        stream = fp
        if deflated or transfer_syntax in PrivateTransferSyntaxes:
            fp.seek(0)
            dataset: Dataset = dcmread(fp, defer_size=DEFER_SIZE, force=False)
            # A deflated data set is parsed from pydicom's inflated copy, kept as its buffer.
            if deflated and dataset.buffer is not None:
                stream = dataset.buffer
        else:
            # The data set alone, after the File Meta Information read above: dcmread would
            # read that again, which costs as much as the data set of a small instance.
            fp.seek(data_set_offset)
            implicit = transfer_syntax == ImplicitVRLittleEndian
            little = transfer_syntax != ExplicitVRBigEndian
            read = read_data_set(fp, implicit, little, defer_size=DEFER_SIZE)  # type: ignore[arg-type]
            # A FileDataset (with no File Meta) reads its deferred values from `fp`.
            dataset = FileDataset(fp, read, is_implicit_VR=implicit, is_little_endian=little)
            dataset.set_original_encoding(implicit, little, read.original_character_set)
        position = stream.tell()
        _check_complete(dataset, position=position, size=stream.seek(0, os.SEEK_END))
        return _header(dataset, transfer_syntax)
    except (InvalidInstance, MemoryError):
        raise
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error; pydicom's parse errors carry no errno
            raise
        raise _unparsable(exc) from exc
    except Exception as exc:  # pydicom raises many types on malformed input
        raise _unparsable(exc) from exc


def _unparsable(exc: Exception) -> InvalidInstance:
    return InvalidInstance(
        FailureReason.CANNOT_UNDERSTAND,
        f"cannot parse the DICOM data set: {type(exc).__name__}: {exc}",
    )


def _read_file_meta(fp: BinaryIO | IO[bytes]) -> tuple[str, int]:
    """The Transfer Syntax UID (PS3.10 7.1) and the offset where the data set starts.

    Read by hand before pydicom so that a deflated data set can be measured before pydicom
    inflates it, and so that a missing transfer syntax is refused rather than guessed.
    """
    preamble = fp.read(132)
    if len(preamble) < 132 or preamble[128:] != b"DICM":
        raise InvalidInstance(
            FailureReason.CANNOT_UNDERSTAND,
            "not a DICOM Part 10 file: no 128-byte preamble followed by 'DICM' (PS3.10 7.1)",
        )
    transfer_syntax = ""
    offset = 132
    for element, value in _meta_elements(fp):
        offset = fp.tell()
        if element == 0x0010:
            transfer_syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
    if not transfer_syntax:
        raise InvalidInstance(
            FailureReason.CANNOT_UNDERSTAND,
            "the File Meta Information has no Transfer Syntax UID (0002,0010)",
        )
    if not is_valid_uid(transfer_syntax):
        raise InvalidInstance(
            FailureReason.CANNOT_UNDERSTAND,
            f"invalid Transfer Syntax UID (0002,0010): {transfer_syntax!r}",
        )
    return transfer_syntax, offset


def _meta_elements(fp: BinaryIO | IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """(element number, value) of the group 0002 elements, Explicit VR Little Endian."""
    start = fp.tell()
    while fp.tell() - start < _MAX_META_BYTES:
        header = fp.read(8)
        if len(header) < 8:
            return
        group, element, vr, length = struct.unpack("<HH2sH", header)
        if group != 0x0002:
            return
        if vr in _LONG_LENGTH_VRS:
            extra = fp.read(4)
            length = struct.unpack("<L", extra)[0] if len(extra) == 4 else UNDEFINED_LENGTH
        if length == UNDEFINED_LENGTH or length > _MAX_META_BYTES:
            return
        value = fp.read(length)
        if len(value) < length:
            return
        yield element, value


def _check_inflated_size(fp: BinaryIO | IO[bytes], limit: int) -> None:
    """Inflate the data set in chunks without keeping it; refuse it above `limit` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := fp.read(1 << 20):
            while chunk and total <= limit:
                total += len(inflater.decompress(chunk, limit + 1 - total))
                chunk = inflater.unconsumed_tail
            if total > limit:
                raise InvalidInstance(
                    FailureReason.OUT_OF_RESOURCES,
                    f"the deflated data set inflates to more than {limit} bytes",
                )
        if not inflater.eof:
            raise InvalidInstance(
                FailureReason.CANNOT_UNDERSTAND, "truncated: the deflated data set is cut short"
            )
    except zlib.error as exc:
        raise InvalidInstance(
            FailureReason.CANNOT_UNDERSTAND, f"the deflated data set is corrupt: {exc}"
        ) from exc


def _check_complete(dataset: Dataset, *, position: int, size: int) -> None:
    """Refuse a truncated data set (see the module docstring for what is detected)."""
    if position < size:
        raise InvalidInstance(
            FailureReason.CANNOT_UNDERSTAND,
            f"truncated: parsing stopped at byte {position} of {size}"
            " (an undefined-length value has no delimiter before the end of the file)",
        )
    if position > size:
        raise InvalidInstance(
            FailureReason.CANNOT_UNDERSTAND,
            f"truncated: a value extends to byte {position}, past the end of the file"
            f" ({size} bytes)",
        )
    tags = list(dataset.keys())
    last = dataset.get_item(tags[-1], keep_deferred=True) if tags else None
    # pydicom ends quietly on an element header cut short; a defined-length last element
    # shows it: its value ends before the end of the file.
    if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH:
        end = last.value_tell + last.length
        if end < size:
            raise InvalidInstance(
                FailureReason.CANNOT_UNDERSTAND,
                f"truncated: the {size - end} bytes after the last data element"
                f" {_tag_text(last.tag)} do not form a data element",
            )
    _check_lengths(dataset)


def _check_lengths(dataset: Dataset) -> None:
    """Every value read at any depth is as long as its header says (pydicom reads short)."""
    for tag in list(dataset.keys()):
        elem = dataset.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            if (
                elem.value is not None
                and elem.length != UNDEFINED_LENGTH
                and len(elem.value) < elem.length
            ):
                raise InvalidInstance(
                    FailureReason.CANNOT_UNDERSTAND,
                    f"truncated: {_tag_text(elem.tag)} has {len(elem.value)} of its"
                    f" {elem.length} bytes",
                )
            if elem.value is None or not _may_be_sequence(elem):
                continue
            elem = dataset[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _check_lengths(item)


def _may_be_sequence(elem: RawDataElement) -> bool:
    if elem.VR == "SQ":
        return True
    if elem.VR not in (None, "UN"):
        return False
    try:
        return bool(dictionary_VR(elem.tag) == "SQ")
    except KeyError:  # a private tag: pydicom may find it holds items
        return True


def _header(dataset: Dataset, transfer_syntax: str) -> InstanceHeader:
    # pydicom's conversion runs only for what `decode_values` leaves (None), in the order it
    # always ran (UIDs, index attributes, the rest), so a failure is reported as before.
    found = decode_values(dataset, _FOUND_TAGS)
    uids: dict[str, str] = {}
    for keyword, tag, label in _REQUIRED_UIDS:
        text = _uid_text(dataset, keyword, found.get(tag))
        if text is None:
            raise InvalidInstance(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"no {label}")
        if not is_valid_uid(text):
            raise InvalidInstance(
                FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"invalid {label}: {text!r} is not a UID (PS3.5 9.1)",
            )
        uids[keyword] = text
    attributes: dict[str, str] = {}
    for keyword, tag in _INDEX_TAGS:
        if tag not in found:
            continue
        decoded = found[tag]
        text = (
            _attribute_text(dataset[tag])
            if decoded is None
            else _values_text(decoded.vr, decoded.values)
        )
        if text:
            attributes[keyword] = text
    return InstanceHeader(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=transfer_syntax,
        attributes=MappingProxyType(attributes),
        metadata=to_dicom_json(dataset, lambda path: f"bulkdata/{path}", decoded=found),
        number_of_frames=_number_of_frames(dataset, found),
    )


def _uid_text(dataset: Dataset, keyword: str, decoded: Decoded | None) -> str | None:
    if decoded is not None and decoded.vr == "UI":
        return "\\".join(decoded.values) if decoded.values else None
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() if not isinstance(value, MultiValue) else "\\".join(value)


def _attribute_text(elem: DataElement) -> str:
    if elem.VR == "SQ" or elem.is_empty:
        return ""
    value = elem.value
    return _values_text(
        str(elem.VR), list(value) if isinstance(value, MultiValue | list) else [value]
    )


def _values_text(vr: str, values: list[Any]) -> str:
    return "\\".join(_one_text(v, vr) for v in values).strip()


def _one_text(value: Any, vr: str) -> str:
    text = str(value).strip()
    if vr in ("IS", "US", "UL", "SS", "SL") and text.lstrip("+-").isdigit():
        return str(int(text))
    return text


def _number_of_frames(dataset: Dataset, found: Mapping[int, Decoded | None]) -> int:
    if not any(tag in found for tag in PIXEL_DATA_TAGS):
        return 0
    decoded = found.get(_NUMBER_OF_FRAMES)
    if decoded is not None and decoded.vr == "IS":
        text = decoded.values[0] if len(decoded.values) == 1 else ""
    else:
        frames = dataset.get("NumberOfFrames")
        text = str(frames).strip() if frames not in (None, "") else "1"
    try:
        count = int(text)
    except ValueError:
        return 1
    return count if count > 0 else 1


def _tag_text(tag: BaseTag | int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
