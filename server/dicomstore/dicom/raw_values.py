"""Plain attributes decoded straight from the bytes pydicom read, to the values pydicom's own
conversion would give, without it: that conversion costs more than everything else reading a
header does (`header.read_header` uses `decode_values`; `dicomjson` renders what it decoded).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Collection
from typing import Any, Final, NamedTuple, cast

from pydicom import config
from pydicom.charset import default_encoding, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks, raw_element_value, raw_element_vr

from dicomstore.dicom.elements import NUMBER_FORMATS


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

    A plain attribute (see `decode_raw`) is decoded straight from the bytes pydicom read, to the
    same values pydicom's own conversion gives, but without it: that conversion costs more than
    everything else `read_header` does. The data set is left as it is; None means "present, ask
    pydicom".
    """
    decode = converts_as_assumed()
    ascii_text = decode and ascii_compatible(dataset)
    found: dict[int, Decoded | None] = {}
    for tag, raw in dataset.items():
        number = int(tag)
        if number in tags:
            raw_bytes = decode and isinstance(raw, RawDataElement)
            found[number] = decode_raw(cast(RawDataElement, raw), ascii_text) if raw_bytes else None
    return found


_IS_TEXT: Final = re.compile(r"[+-]?[0-9]{1,15}")


_DS_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


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


def converts_as_assumed() -> bool:
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


def ascii_compatible(dataset: Dataset) -> bool:
    """Whether ASCII text of `dataset` reads the same whatever its Specific Character Set."""
    encodings = dataset.original_character_set
    if not encodings:
        return False
    first = encodings if isinstance(encodings, str) else encodings[0]
    return first in _ASCII_COMPATIBLE


def decode_raw(raw: RawDataElement, ascii_text: bool) -> Decoded | None:
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
    **{vr: _numbers(code) for vr, code in NUMBER_FORMATS.items()},
    "OB": _binary,
    "OW": _binary,
}
