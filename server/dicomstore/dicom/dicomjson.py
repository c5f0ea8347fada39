"""DICOM JSON (PS3.18 Annex F) with Google's bulk data rules
(docs/google-behaviour.md#metadata-bulkdata-rules).

`to_dicom_json` renders a pydicom data set as the DICOM JSON Model (F.2): one object per data
set, keyed by the tag as eight upper-case hex digits, each attribute holding its `vr` and either
`Value`, `BulkDataURI` or `InlineBinary`; an attribute without a value keeps only its `vr`
(F.2.5), an empty value inside a multi-valued attribute is `null`.

An attribute is bulk data (`bulkdata.is_bulkdata`), and gets a `BulkDataURI` instead of its
value, under Google's rules; any other binary value is `InlineBinary`: base64 of its
little-endian encoding.

Why not pydicom's `Dataset.to_json_dict(bulk_data_threshold, bulk_data_element_handler)`: its
handler receives the element but not the path of sequence items above it, so nested URIs such as
`00081115/0/7FE00010` cannot be built; one byte threshold for every binary VR cannot say "OB
always, OD above 2 KiB"; it never turns numeric VRs into bulk data by VM; and it reads every
deferred value to measure it, which defeats `defer_size` for multi-gigabyte Pixel Data. The
walker below decides from the element header (tag, VR, length) and never loads a deferred value
that becomes a `BulkDataURI`.

Values (F.2.3): PN as {Alphabetic, Ideographic, Phonetic}; AT as "GGGGEEEE"; IS and DS as JSON
numbers (a DS written as an integer stays an int, others become the float pydicom parsed, so the
number is exact to double precision; a value that is not a finite number stays the string it
was); FL/FD NaN and infinities as the strings "NaN", "Infinity", "-Infinity".
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from dicomstore.dicom import raw_values
from dicomstore.dicom.bulkdata import (
    ALWAYS_BULK_VRS,
    LARGE_BULK_VRS,
    NUMERIC_BULK_SIZES,
    is_bulkdata,
)
from dicomstore.dicom.elements import (
    PIXEL_DATA_TAGS,
    PN_GROUPS,
    UNDEFINED_LENGTH,
    element_values,
    little_endian_bytes,
    raw_vr,
    resolved_vr,
)
from dicomstore.dicom.raw_values import Decoded, ascii_compatible, decode_raw

#: Google omits sequences above about 1 MiB from metadata
#: (docs/google-behaviour.md#metadata-large-sequences); opt in with
#: `to_dicom_json(..., max_sequence_bytes=GOOGLE_MAX_SEQUENCE_BYTES)`.
GOOGLE_MAX_SEQUENCE_BYTES: Final = 1 << 20


_INT_TEXT = re.compile(r"[+-]?[0-9]+")


# Not part of the data set proper: item delimiters and Data Set Trailing Padding (PS3.10 7.2).
_SKIPPED_TAGS: Final = frozenset({0xFFFCFFFC, 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD})


BulkdataUri = Callable[[str], str]


def to_dicom_json(
    dataset: Dataset,
    bulkdata_uri: BulkdataUri,
    *,
    max_sequence_bytes: int | None = None,
    decoded: Mapping[int, Decoded | None] | None = None,
) -> dict[str, Any]:
    """Render `dataset` as a DICOM JSON object (PS3.18 F.2) with Google's bulk data rules.

    `bulkdata_uri` receives the tag path of each bulk data attribute (`7FE00010`, or
    `00081115/0/7FE00010` inside item 0 of a sequence,
    docs/google-behaviour.md#bulkdata-retrieve) and returns its URI. File Meta
    Information (group 0002) and group length attributes are not part of the data set and are
    left out. With `max_sequence_bytes`, a sequence whose encoded size is estimated above it is
    omitted, as Google does for sequences above about 1 MiB. Deferred values (see
    `dicomstore.dicom.header`) are read only when they are rendered inline. `decoded` holds
    what `decode_values` already returned for top-level attributes, so they are not decoded
    twice.
    """
    return _dataset_json(
        dataset,
        "",
        bulkdata_uri,
        max_sequence_bytes,
        decoded or {},
        raw_values.converts_as_assumed(),
    )


def _dataset_json(
    dataset: Dataset,
    prefix: str,
    bulkdata_uri: BulkdataUri,
    max_sequence_bytes: int | None,
    decoded: Mapping[int, Decoded | None],
    decode: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    ascii_text = decode and ascii_compatible(dataset)
    for tag, raw in sorted(dataset.items(), key=_tag_order):
        if tag >> 16 == 0x0002 or tag & 0xFFFF == 0 or tag in _SKIPPED_TAGS:
            continue
        key = f"{tag:08X}"
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            uri_vr = _deferred_bulk_vr(dataset, raw)
            if uri_vr is not None:
                result[key] = {"vr": uri_vr, "BulkDataURI": bulkdata_uri(prefix + key)}
                continue
            if _omitted_sequence(raw, max_sequence_bytes):
                continue
        elif decode and isinstance(raw, RawDataElement):
            found = decoded[tag] if tag in decoded else decode_raw(raw, ascii_text)
            if found is not None:
                result[key] = _decoded_json(tag, found, prefix + key, bulkdata_uri)
                continue
        elem = dataset[tag]
        if elem.VR != "SQ":
            result[key] = _element_json(elem, dataset, prefix + key, bulkdata_uri)
        elif (
            sequence := _sequence_json(elem, prefix + key, bulkdata_uri, max_sequence_bytes, decode)
        ) is not None:
            result[key] = sequence
    return result


def _omitted_sequence(raw: RawDataElement, max_sequence_bytes: int | None) -> bool:
    return (
        max_sequence_bytes is not None and raw_vr(raw) == "SQ" and raw.length > max_sequence_bytes
    )


def _decoded_json(tag: int, found: Decoded, path: str, bulkdata_uri: BulkdataUri) -> dict[str, Any]:
    vr, values = found
    return _values_json(tag, vr, values, path, bulkdata_uri) if values else {"vr": vr}


def _sequence_json(
    elem: DataElement,
    path: str,
    bulkdata_uri: BulkdataUri,
    max_sequence_bytes: int | None,
    decode: bool,
) -> dict[str, Any] | None:
    """A sequence's JSON, or None when it is omitted for its size."""
    if max_sequence_bytes is not None and _approx_size(elem) > max_sequence_bytes:
        return None
    items = [
        _dataset_json(item, f"{path}/{i}/", bulkdata_uri, max_sequence_bytes, {}, decode)
        for i, item in enumerate(elem.value)
    ]
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def _tag_order(item: tuple[int, object]) -> int:
    return int(item[0])


def _element_json(
    elem: DataElement, parent: Dataset, path: str, bulkdata_uri: BulkdataUri
) -> dict[str, Any]:
    vr = resolved_vr(elem)
    if elem.is_empty:
        return {"vr": vr}
    if vr in ALWAYS_BULK_VRS | LARGE_BULK_VRS:
        value = elem.value
        if isinstance(value, MultiValue | list):  # pydicom keeps a list of fragments at times
            value = b"".join(value)
        if is_bulkdata(elem.tag, vr, len(value)):
            return {"vr": vr, "BulkDataURI": bulkdata_uri(path)}
        data = little_endian_bytes(elem, parent)
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    return _values_json(elem.tag, vr, element_values(elem), path, bulkdata_uri)


def _values_json(
    tag: int, vr: str, values: list[Any], path: str, bulkdata_uri: BulkdataUri
) -> dict[str, Any]:
    if is_bulkdata(tag, vr, len(values) * NUMERIC_BULK_SIZES.get(vr, 1), len(values)):
        return {"vr": vr, "BulkDataURI": bulkdata_uri(path)}
    convert: Callable[[Any], Any] = _CONVERTERS.get(vr, _text)
    return {"vr": vr, "Value": [convert(v) for v in values]}


def _deferred_bulk_vr(dataset: Dataset, raw: RawDataElement) -> str | None:
    """The VR to report when a deferred (not yet read) value is bulk data, else None.

    Decided from the element header alone, so Pixel Data is never loaded.
    """
    vr = raw_vr(raw)
    if raw.tag in PIXEL_DATA_TAGS:
        if vr in ("OB", "OW", "OF", "OD"):
            return vr
        if raw.length == UNDEFINED_LENGTH:
            return "OB"
        # PS3.5 A.1 / A.2: native Pixel Data is OW in Implicit VR, OB or OW by Bits Allocated.
        bits = dataset.get("BitsAllocated")
        return "OW" if raw.is_implicit_VR or (isinstance(bits, int) and bits > 8) else "OB"
    length = 0 if raw.length == UNDEFINED_LENGTH else raw.length
    if raw.length == UNDEFINED_LENGTH and vr in ALWAYS_BULK_VRS:
        return vr
    if " or " in vr:
        # Only Implicit VR leaves the VR ambiguous; when every choice is bulk data the value
        # need not be read (PS3.5 A.1: OB-or-OW values are OW in Implicit VR).
        choices = vr.split(" or ")
        if all(is_bulkdata(raw.tag, choice, length) for choice in choices):
            return "OW" if "OW" in choices else choices[0]
        return None
    return vr if is_bulkdata(raw.tag, vr, length) else None


def _approx_size(elem: DataElement) -> int:
    """An estimate of a sequence's encoded size in bytes, from lengths read from the file."""
    total = 8
    for item in elem.value:
        total += 8
        for tag in list(item.keys()):
            child = item.get_item(tag, keep_deferred=True)
            if isinstance(child, RawDataElement):
                total += 12 + (0 if child.length == UNDEFINED_LENGTH else child.length)
            elif child.VR == "SQ":
                total += _approx_size(child)
            else:
                total += 12 + len(str(child.value))
    return total


def _person_name(value: Any) -> dict[str, str] | None:
    groups = value.components if isinstance(value, PersonName) else str(value).split("=")
    named = {key: text for key, text in zip(PN_GROUPS, groups, strict=False) if text}
    return named or None


def _integer_string(value: Any) -> int | str | None:
    text = str(value).strip()
    if not text:
        return None
    return int(text) if _INT_TEXT.fullmatch(text) else text


def _decimal_string(value: Any) -> int | float | str | None:
    text = str(value).strip()
    if not text:
        return None
    if _INT_TEXT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _float(value: Any) -> float | str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _attribute_tag(value: Any) -> str:
    return f"{int(value):08X}"


def _text(value: Any) -> str | None:
    text = str(value)
    return text if text else None


_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "PN": _person_name,
    "AT": _attribute_tag,
    "IS": _integer_string,
    "DS": _decimal_string,
    "FL": _float,
    "FD": _float,
    **{vr: int for vr in ("US", "SS", "UL", "SL", "UV", "SV")},
}
