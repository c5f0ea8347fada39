"""Facts about data elements that several readers share (PS3.5 7, A.4): the Pixel Data tags,
the undefined length, the VR of an element pydicom has not converted, and byte order.

Values of an Explicit VR Big Endian data set (PS3.5 A.3, retired) are swapped to little endian
by their VR's unit (`SWAP_WIDTH`); Pixel Data by the wider of that and Bits Allocated, so
32-bit pixels in an OW value are 4-byte numbers while 8-bit pixels in OW are swapped in 16-bit
words, as pydicom reads them (`swap_unit`).
"""

from __future__ import annotations

from typing import Any, Final

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

#: PS3.5 A.4: the three Pixel Data tags.
PIXEL_DATA: Final = 0x7FE00010
#: Float Pixel Data and Double Float Pixel Data: native by definition, never encapsulated.
FLOAT_PIXEL_DATA_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009})
PIXEL_DATA_TAGS: Final = frozenset({PIXEL_DATA}) | FLOAT_PIXEL_DATA_TAGS

UNDEFINED_LENGTH: Final = 0xFFFFFFFF
#: Bytes per unit of the binary VRs whose big-endian values are swapped.
SWAP_WIDTH: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def raw_vr(raw: RawDataElement) -> str:
    """The VR of an unconverted element: explicit, else the dictionary's (as pydicom does)."""
    if raw.VR is None or raw.VR == "UN":
        return dictionary_vr(raw.tag) or "UN"
    return str(raw.VR)


def dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def resolved_vr(elem: DataElement) -> str:
    vr = str(elem.VR)
    if " or " in vr:
        # pydicom leaves an ambiguous VR only when it cannot decide; report the first choice.
        return vr.split(" or ", 1)[0]
    return vr


def element_values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def is_little_endian(dataset: Dataset) -> bool:
    little = dataset.original_encoding[1]
    return True if little is None else bool(little)


def little_endian_bytes(elem: DataElement, parent: Dataset) -> bytes:
    """`elem`'s value as Explicit VR Little Endian holds it (see `swap_unit`)."""
    value = elem.value
    if isinstance(value, MultiValue | list):
        value = b"".join(value)
    data = bytes(value)
    vr = resolved_vr(elem)
    width = SWAP_WIDTH.get(vr)
    if is_little_endian(parent) or width is None or elem.is_undefined_length:
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


PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")


#: struct format characters of the numeric VRs (PS3.5 6.2), little endian with `<`.
NUMBER_FORMATS: Final = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "UV": "Q",
    "SV": "q",
    "FL": "f",
    "FD": "d",
}
