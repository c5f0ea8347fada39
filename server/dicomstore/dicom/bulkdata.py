"""Bulk data (PS3.18 F.2.6, 10.4.1.1.5) under Google's rules
(docs/google-behaviour.md#metadata-bulkdata-rules): which attributes are bulk data, their tag
paths, and their values little endian.

An attribute is bulk data, and gets a `BulkDataURI` instead of its value, when:
- it is a Pixel Data tag: (7FE0,0010), (7FE0,0008) or (7FE0,0009), native or encapsulated;
- its VR is OB, OW or UN;
- its VR is OD, OF, OL or OV and its value is larger than 2 KiB;
- its VR is AT, FD, FL, UL, US, SV or UV and its VM is above 512 (Google's list names neither
  SS nor SL, so those stay inline).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Final

from pydicom.dataset import Dataset

from dicomstore.dicom.elements import (
    NUMBER_FORMATS,
    PIXEL_DATA_TAGS,
    element_values,
    little_endian_bytes,
)

ALWAYS_BULK_VRS: Final = frozenset({"OB", "OW", "UN"})


LARGE_BULK_VRS: Final = frozenset({"OD", "OF", "OL", "OV"})


#: OD/OF/OL/OV values larger than this many bytes are bulk data.
BULK_BYTES_THRESHOLD: Final = 2048


#: Numeric element sizes for the "VM above 512" rule.
NUMERIC_BULK_SIZES: Final = {"AT": 4, "FD": 8, "FL": 4, "UL": 4, "US": 2, "SV": 8, "UV": 8}


#: AT/FD/FL/UL/US/SV/UV values with a VM above this are bulk data.
BULK_VM_THRESHOLD: Final = 512


def is_bulkdata(tag: int, vr: str, length: int, vm: int | None = None) -> bool:
    """Whether an attribute is bulk data under Google's rules (see the module docstring).

    `length` is the value's size in bytes; `vm` (when known) its value multiplicity, otherwise
    derived from `length` for the numeric VRs. An empty value is never bulk data.
    """
    if length == 0 or vm == 0:
        return False
    if tag in PIXEL_DATA_TAGS or vr in ALWAYS_BULK_VRS:
        return True
    if vr in LARGE_BULK_VRS:
        return length > BULK_BYTES_THRESHOLD
    size = NUMERIC_BULK_SIZES.get(vr)
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
            sequence = item[parse_tag(parts[index])]
            position = int(parts[index + 1])
            if sequence.VR != "SQ" or not 0 <= position < len(sequence.value):
                return None
            item = sequence.value[position]
        tag = parse_tag(parts[-1])
        if tag not in item:
            return None
        elem = item[tag]
    except ValueError:
        return None
    if elem.VR in ALWAYS_BULK_VRS | LARGE_BULK_VRS | {"OB or OW"}:
        if elem.tag in PIXEL_DATA_TAGS and elem.is_undefined_length:
            raise EncapsulatedPixelData(tag_path)
        return little_endian_bytes(elem, item)
    if elem.VR == "AT":
        return b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in element_values(elem))
    code = NUMBER_FORMATS.get(elem.VR)
    if code is None:
        return None
    values = element_values(elem)
    return struct.pack(f"<{len(values)}{code}", *values)


class EncapsulatedPixelData(ValueError):
    """Bulk data was asked of encapsulated Pixel Data, which only a transcoder can decode."""

    def __init__(self, tag_path: str) -> None:
        super().__init__(f"{tag_path} holds encapsulated (compressed) pixel data")
        self.tag_path = tag_path


def parse_tag(text: str) -> int:
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
