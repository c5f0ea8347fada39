"""DICOM JSON (PS3.18 Annex F) with Google's bulk data rules
(docs/google-behaviour.md#metadata-bulkdata-rules).

`to_dicom_json` renders a pydicom data set as the DICOM JSON Model (F.2): one object per data
set, keyed by the tag as eight upper-case hex digits, each attribute holding its `vr` and either
`Value`, `BulkDataURI` or `InlineBinary`; an attribute without a value keeps only its `vr`
(F.2.5), an empty value inside a multi-valued attribute is `null`.

An attribute is bulk data, and gets a `BulkDataURI` instead of its value, when:
- it is a Pixel Data tag: (7FE0,0010), (7FE0,0008) or (7FE0,0009), native or encapsulated;
- its VR is OB, OW or UN;
- its VR is OD, OF, OL or OV and its value is larger than 2 KiB;
- its VR is AT, FD, FL, UL, US, SV or UV and its VM is above 512 (Google's list names neither
  SS nor SL, so those stay inline).
Any other binary value is `InlineBinary`: base64 of its little-endian encoding.

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
import struct
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Final, NamedTuple, cast

from pydicom import config
from pydicom.charset import default_encoding, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

#: PS3.5 A.4: the three Pixel Data tags.
PIXEL_DATA_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_ALWAYS_BULK_VRS: Final = frozenset({"OB", "OW", "UN"})
_LARGE_BULK_VRS: Final = frozenset({"OD", "OF", "OL", "OV"})
#: OD/OF/OL/OV values larger than this many bytes are bulk data.
BULK_BYTES_THRESHOLD: Final = 2048
#: Numeric element sizes for the "VM above 512" rule.
_NUMERIC_BULK_SIZES: Final = {"AT": 4, "FD": 8, "FL": 4, "UL": 4, "US": 2, "SV": 8, "UV": 8}
#: AT/FD/FL/UL/US/SV/UV values with a VM above this are bulk data.
BULK_VM_THRESHOLD: Final = 512
#: Google omits sequences above about 1 MiB from metadata
#: (docs/google-behaviour.md#metadata-large-sequences); opt in with
#: `to_dicom_json(..., max_sequence_bytes=GOOGLE_MAX_SEQUENCE_BYTES)`.
GOOGLE_MAX_SEQUENCE_BYTES: Final = 1 << 20

_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
_SWAP_WIDTH: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_PACK: Final = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "UV": "Q",
    "SV": "q",
    "FL": "f",
    "FD": "d",
}
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
        dataset, "", bulkdata_uri, max_sequence_bytes, decoded or {}, _converts_as_assumed()
    )


def is_bulkdata(tag: int, vr: str, length: int, vm: int | None = None) -> bool:
    """Whether an attribute is bulk data under Google's rules (see the module docstring).

    `length` is the value's size in bytes; `vm` (when known) its value multiplicity, otherwise
    derived from `length` for the numeric VRs. An empty value is never bulk data.
    """
    if length == 0 or vm == 0:
        return False
    if tag in PIXEL_DATA_TAGS or vr in _ALWAYS_BULK_VRS:
        return True
    if vr in _LARGE_BULK_VRS:
        return length > BULK_BYTES_THRESHOLD
    size = _NUMERIC_BULK_SIZES.get(vr)
    if size is None:
        return False
    if vm is None:
        vm = length // size
    return vm > BULK_VM_THRESHOLD


def bulkdata_element(dataset: Dataset, tag_path: str) -> bytes | None:
    """The raw value of the binary or numeric attribute at `tag_path`, little endian.

    `tag_path` is `TTTTTTTT` or `SSSSSSSS/i/TTTTTTTT` nested to any depth (item index from 0).
    Returns None when the path resolves to nothing or to an attribute that is not binary or
    numeric (text, PN, SQ). Values of OW/OF/OL/OD/OV read from a big-endian data set are swapped
    to little endian; numeric VRs are packed little endian; OB and UN are returned as stored.

    Encapsulated (compressed) Pixel Data is not decoded here: it raises `EncapsulatedPixelData`,
    so that the caller decides between a transcoder and a 400 (Google returns uncompressed
    bytes, docs/google-behaviour.md#bulkdata-retrieve). The whole value is loaded into memory.
    """
    item: Dataset = dataset
    parts = tag_path.split("/")
    if len(parts) % 2 != 1:
        return None
    try:
        for index in range(0, len(parts) - 1, 2):
            sequence = item[_parse_tag(parts[index])]
            position = int(parts[index + 1])
            if sequence.VR != "SQ" or not 0 <= position < len(sequence.value):
                return None
            item = sequence.value[position]
        tag = _parse_tag(parts[-1])
        if tag not in item:
            return None
        elem = item[tag]
    except ValueError:
        return None
    if elem.VR in _ALWAYS_BULK_VRS | _LARGE_BULK_VRS | {"OB or OW"}:
        if elem.tag in PIXEL_DATA_TAGS and elem.is_undefined_length:
            raise EncapsulatedPixelData(tag_path)
        return _little_endian_bytes(elem, item)
    if elem.VR == "AT":
        return b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in _values(elem))
    code = _PACK.get(elem.VR)
    if code is None:
        return None
    values = _values(elem)
    return struct.pack(f"<{len(values)}{code}", *values)


class Decoded(NamedTuple):
    """An attribute's VR and values as pydicom would convert them, decoded from its bytes.

    Text as the `str` of pydicom's value (PN as "Alphabetic=Ideographic=Phonetic", IS and DS as
    their text without surrounding spaces), numbers as `int` or `float`, OB and OW as `bytes`;
    an empty list when the attribute has no value.
    """

    vr: str
    values: list[Any]


def decode_values(dataset: Dataset, tags: Collection[int]) -> dict[int, Decoded | None]:
    """Each of `tags` present at the top level of `dataset`, decoded if it is plain, else None.

    A plain attribute (see `_decode`) is decoded straight from the bytes pydicom read, to the
    same values pydicom's own conversion gives, but without it: that conversion costs more than
    everything else `read_header` does. The data set is left as it is; None means "present, ask
    pydicom".
    """
    decode = _converts_as_assumed()
    ascii_text = decode and _ascii_compatible(dataset)
    found: dict[int, Decoded | None] = {}
    for tag, raw in dataset.items():
        number = int(tag)
        if number in tags:
            raw_bytes = decode and isinstance(raw, RawDataElement)
            found[number] = _decode(cast(RawDataElement, raw), ascii_text) if raw_bytes else None
    return found


class EncapsulatedPixelData(ValueError):
    """Bulk data was asked of encapsulated Pixel Data, which only a transcoder can decode."""

    def __init__(self, tag_path: str) -> None:
        super().__init__(f"{tag_path} holds encapsulated (compressed) pixel data")
        self.tag_path = tag_path


def _dataset_json(
    dataset: Dataset,
    prefix: str,
    bulkdata_uri: BulkdataUri,
    max_sequence_bytes: int | None,
    decoded: Mapping[int, Decoded | None],
    decode: bool,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    ascii_text = decode and _ascii_compatible(dataset)
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
            found = decoded[tag] if tag in decoded else _decode(raw, ascii_text)
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
        max_sequence_bytes is not None and _raw_vr(raw) == "SQ" and raw.length > max_sequence_bytes
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
    vr = _resolved_vr(elem)
    if elem.is_empty:
        return {"vr": vr}
    if vr in _ALWAYS_BULK_VRS | _LARGE_BULK_VRS:
        value = elem.value
        if isinstance(value, MultiValue | list):  # pydicom keeps a list of fragments at times
            value = b"".join(value)
        if is_bulkdata(elem.tag, vr, len(value)):
            return {"vr": vr, "BulkDataURI": bulkdata_uri(path)}
        data = _little_endian_bytes(elem, parent)
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    return _values_json(elem.tag, vr, _values(elem), path, bulkdata_uri)


def _values_json(
    tag: int, vr: str, values: list[Any], path: str, bulkdata_uri: BulkdataUri
) -> dict[str, Any]:
    if is_bulkdata(tag, vr, len(values) * _NUMERIC_BULK_SIZES.get(vr, 1), len(values)):
        return {"vr": vr, "BulkDataURI": bulkdata_uri(path)}
    convert: Callable[[Any], Any] = _CONVERTERS.get(vr, _text)
    return {"vr": vr, "Value": [convert(v) for v in values]}


def _deferred_bulk_vr(dataset: Dataset, raw: RawDataElement) -> str | None:
    """The VR to report when a deferred (not yet read) value is bulk data, else None.

    Decided from the element header alone, so Pixel Data is never loaded.
    """
    vr = _raw_vr(raw)
    if raw.tag in PIXEL_DATA_TAGS:
        if vr in ("OB", "OW", "OF", "OD"):
            return vr
        if raw.length == _UNDEFINED_LENGTH:
            return "OB"
        # PS3.5 A.1 / A.2: native Pixel Data is OW in Implicit VR, OB or OW by Bits Allocated.
        bits = dataset.get("BitsAllocated")
        return "OW" if raw.is_implicit_VR or (isinstance(bits, int) and bits > 8) else "OB"
    length = 0 if raw.length == _UNDEFINED_LENGTH else raw.length
    if raw.length == _UNDEFINED_LENGTH and vr in _ALWAYS_BULK_VRS:
        return vr
    if " or " in vr:
        # Only Implicit VR leaves the VR ambiguous; when every choice is bulk data the value
        # need not be read (PS3.5 A.1: OB-or-OW values are OW in Implicit VR).
        choices = vr.split(" or ")
        if all(is_bulkdata(raw.tag, choice, length) for choice in choices):
            return "OW" if "OW" in choices else choices[0]
        return None
    return vr if is_bulkdata(raw.tag, vr, length) else None


def _raw_vr(raw: RawDataElement) -> str:
    """The VR of an unconverted element: explicit, else the dictionary's (as pydicom does)."""
    if raw.VR is None or raw.VR == "UN":
        return _dictionary_vr(raw.tag) or "UN"
    return str(raw.VR)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _resolved_vr(elem: DataElement) -> str:
    vr = str(elem.VR)
    if " or " in vr:
        # pydicom leaves an ambiguous VR only when it cannot decide; report the first choice.
        return vr.split(" or ", 1)[0]
    return vr


def _approx_size(elem: DataElement) -> int:
    """An estimate of a sequence's encoded size in bytes, from lengths read from the file."""
    total = 8
    for item in elem.value:
        total += 8
        for tag in list(item.keys()):
            child = item.get_item(tag, keep_deferred=True)
            if isinstance(child, RawDataElement):
                total += 12 + (0 if child.length == _UNDEFINED_LENGTH else child.length)
            elif child.VR == "SQ":
                total += _approx_size(child)
            else:
                total += 12 + len(str(child.value))
    return total


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _is_little_endian(dataset: Dataset) -> bool:
    little = dataset.original_encoding[1]
    return True if little is None else bool(little)


def _little_endian_bytes(elem: DataElement, parent: Dataset) -> bytes:
    """`elem`'s value as Explicit VR Little Endian holds it (see `swap_unit`)."""
    value = elem.value
    if isinstance(value, MultiValue | list):
        value = b"".join(value)
    data = bytes(value)
    vr = _resolved_vr(elem)
    width = _SWAP_WIDTH.get(vr)
    if _is_little_endian(parent) or width is None or elem.is_undefined_length:
        return data
    return byteswap(data, swap_unit(elem.tag, vr, width, parent))


def swap_unit(tag: int, vr: str, unit: int, dataset: Dataset) -> int:
    """The unit by which a big-endian value of `dataset` is swapped: its VR's `unit`, but for
    Pixel Data (other than OB) the wider of that and Bits Allocated."""
    if tag in PIXEL_DATA_TAGS and vr != "OB":
        bits = dataset.get("BitsAllocated")
        if isinstance(bits, int) and bits in (16, 32, 64):
            return max(unit, bits // 8)
    return unit


def byteswap(data: bytes, unit: int) -> bytes:
    """`data` with every whole `unit`-byte group reversed (a trailing partial group is kept)."""
    whole = len(data) - len(data) % unit
    out = bytearray(data)
    for offset in range(unit):
        out[offset:whole:unit] = data[unit - 1 - offset : whole : unit]
    return bytes(out)


def _person_name(value: Any) -> dict[str, str] | None:
    groups = value.components if isinstance(value, PersonName) else str(value).split("=")
    named = {key: text for key, text in zip(_PN_GROUPS, groups, strict=False) if text}
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


# --- plain attributes, decoded without pydicom's conversion ------------------------------------
#
# Each decoder repeats, for bytes it accepts, the steps of the pydicom converter for its VR
# (`pydicom.values.converters`) and of the class that converter builds (IS, DSfloat, UID,
# PersonName), so that the values have the same `str` and the same emptiness (pydicom's VM 0).
# Anything else is left to pydicom: deferred values, other VRs, implicit VR tags outside the
# main dictionary, the LUT Descriptor tags pydicom adjusts, IS and DS that are not plain
# numbers, numbers whose length does not divide by their size, and text of the VRs that follow
# Specific Character Set unless it is ASCII (no ESC) under an ASCII-compatible character set.
# Skipped too: pydicom's validation warnings, which change no value.

_IS_TEXT: Final = re.compile(r"[+-]?[0-9]{1,15}")
_DS_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
#: VRs whose text is decoded with Specific Character Set (0008,0005); others use ISO-IR 6/100.
_CHARSET_VRS: Final = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
#: The LUT Descriptor tags (PS3.3 C.11), whose first value pydicom reads as unsigned.
_NOT_DECODED_TAGS: Final = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_ASCII_BYTES: Final = bytes(range(0x80)).replace(b"\x1b", b"")


def _decodes_ascii(codec: str) -> bool:
    try:
        return _ASCII_BYTES.decode(codec) == _ASCII_BYTES.decode("ascii")
    except (LookupError, UnicodeDecodeError):
        return False


#: The Python codecs of pydicom's character sets that read ASCII (without ESC) as ASCII.
_ASCII_COMPATIBLE: Final = frozenset(
    codec for codec in set(python_encoding.values()) if _decodes_ascii(codec)
)


def _converts_as_assumed() -> bool:
    """Whether pydicom's value conversion is configured as the decoders below assume."""
    return (
        config.data_element_callback is None
        and not config.datetime_conversion
        and not config.use_DS_decimal
        and not config.use_DS_numpy
        and not config.use_IS_numpy
        and not config.use_none_as_empty_text_VR_value
        and config.settings.reading_validation_mode != config.RAISE
        and hooks.raw_element_vr is raw_element_vr
        and hooks.raw_element_value is raw_element_value
        and not hooks.raw_element_kwargs
    )


def _ascii_compatible(dataset: Dataset) -> bool:
    """Whether ASCII text of `dataset` reads the same whatever its Specific Character Set."""
    encodings = dataset.original_character_set
    if not encodings:
        return False
    first = encodings if isinstance(encodings, str) else encodings[0]
    return first in _ASCII_COMPATIBLE


def _decode(raw: RawDataElement, ascii_text: bool) -> Decoded | None:
    data = raw.value
    if type(data) is not bytes:
        return None
    vr = raw.VR
    if vr is None:  # implicit VR: pydicom takes the dictionary's
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    decoder = _DECODERS.get(vr)
    if decoder is None or raw.tag in _NOT_DECODED_TAGS:
        return None
    if not data:
        return Decoded(vr, [])
    if vr in _CHARSET_VRS and not (ascii_text and data.isascii() and b"\x1b" not in data):
        return None
    values = decoder(data, raw.is_little_endian)
    return None if values is None else Decoded(vr, values)


def _strings(data: bytes, _: bool) -> list[Any]:
    """AS, CS, DA, DT, TM: `convert_string`."""
    items = data.decode(default_encoding).rstrip(" \x00").split("\\")
    return [] if items == [""] else items


def _application_entity(data: bytes, _: bool) -> list[Any]:
    items = [item.strip() for item in data.decode(default_encoding).split("\\")]
    return [] if items == [""] else items


def _uri(data: bytes, _: bool) -> list[Any]:
    text = data.decode(default_encoding).rstrip()
    return [text] if text else []


def _uids(data: bytes, _: bool) -> list[Any]:
    items = [item.strip() for item in data.decode(default_encoding).rstrip("\x00 ").split("\\")]
    return [] if items == [""] else items


def _integer_strings(data: bytes, _: bool) -> list[Any] | None:
    items = data.decode(default_encoding).rstrip(" \x00").split("\\")
    if items == [""]:
        return []
    values = [item.strip() for item in items]
    return values if all(not v or _IS_TEXT.fullmatch(v) for v in values) else None


def _decimal_strings(data: bytes, _: bool) -> list[Any] | None:
    items = data.decode(default_encoding).strip().rstrip(" \x00").split("\\")
    if items == [""]:
        return []
    values = [item.strip() for item in items]
    return values if all(not v or _DS_TEXT.fullmatch(v) for v in values) else None


def _texts(data: bytes, _: bool) -> list[Any]:
    """LO, SH, UC: `convert_text`."""
    items = [item.rstrip("\x00 ") for item in data.decode("ascii").split("\\")]
    return [] if items == [""] else items


def _single_text(data: bytes, _: bool) -> list[Any]:
    """LT, ST, UT: `convert_single_string`."""
    text = data.decode("ascii").rstrip("\x00 ")
    return [text] if text else []


def _person_names(data: bytes, _: bool) -> list[Any]:
    names = []
    for item in data.rstrip(b"\x00 ").decode("ascii").split("\\"):
        groups = item.split("=")
        while groups and not groups[-1]:
            groups.pop()
        names.append("=".join(groups))
    return [] if names == [""] else names


def _numbers(code: str) -> Callable[[bytes, bool], list[Any] | None]:
    size = struct.calcsize(f"<{code}")

    def decode(data: bytes, little_endian: bool) -> list[Any] | None:
        count, rest = divmod(len(data), size)
        if rest:
            return None
        return list(struct.unpack(f"{'<' if little_endian else '>'}{count}{code}", data))

    return decode


def _binary(data: bytes, _: bool) -> list[Any]:
    return [data]


_DECODERS: Final[dict[str, Callable[[bytes, bool], list[Any] | None]]] = {
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _strings),
    "AE": _application_entity,
    "UR": _uri,
    "UI": _uids,
    "IS": _integer_strings,
    "DS": _decimal_strings,
    **dict.fromkeys(("LO", "SH", "UC"), _texts),
    **dict.fromkeys(("LT", "ST", "UT"), _single_text),
    "PN": _person_names,
    **{vr: _numbers(code) for vr, code in _PACK.items()},
    "OB": _binary,
    "OW": _binary,
}


def _parse_tag(text: str) -> int:
    if len(text) != 8:
        raise ValueError(text)
    return int(text, 16)


def iter_tag_paths(metadata: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every tag path in DICOM JSON `metadata` that holds a BulkDataURI (for tests and WADO)."""
    for key, attribute in metadata.items():
        if "BulkDataURI" in attribute:
            yield prefix + key
        for index, item in enumerate(attribute.get("Value", []) if attribute["vr"] == "SQ" else []):
            yield from iter_tag_paths(item, f"{prefix}{key}/{index}/")
