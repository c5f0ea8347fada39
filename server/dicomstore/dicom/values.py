"""Binary values of a stored instance, read back little endian (PS3.18 10.4).

WADO-RS bulk data and frames return "uncompressed, unencoded bytes"
(docs/google-behaviour.md#bulkdata-retrieve):
the value as Explicit VR Little Endian would hold it. `InstanceFile.value` finds the value at a
tag path and hands back a `StoredValue` that reads it by byte range:
- a top-level value pydicom deferred (larger than `header.DEFER_SIZE`, Pixel Data above all) is
  read from its window of the file on demand, so a multi-gigabyte value never sits in memory;
- any other value (small, nested in a sequence, or in a deflated data set, which pydicom
  inflates in memory anyway) comes from `bulkdata.bulkdata_element` or the raw element.

Values of an Explicit VR Big Endian data set (PS3.5 A.3, retired) are swapped to little endian.
Pixel Data is swapped by the wider of its VR's unit and Bits Allocated: 32-bit pixels in an OW
value are 4-byte big-endian numbers, while 8-bit pixels in OW are swapped in 16-bit words (as
pydicom reads them). Encapsulated (compressed) Pixel Data raises `EncapsulatedPixelData`.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Final

from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset

from dicomstore.dicom.bulkdata import EncapsulatedPixelData, bulkdata_element
from dicomstore.dicom.elements import (
    PIXEL_DATA_TAGS,
    UNDEFINED_LENGTH,
    byteswap,
    raw_vr,
    swap_unit,
)
from dicomstore.dicom.header import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, read_dataset

#: Bytes per unit of each binary or numeric VR (PS3.5 6.2), the unit of big-endian swapping.
_UNIT: Final = {
    "OB": 1,
    "UN": 1,
    "OW": 2,
    "OF": 4,
    "OL": 4,
    "OD": 8,
    "OV": 8,
    "AT": 2,
    "US": 2,
    "SS": 2,
    "UL": 4,
    "SL": 4,
    "FL": 4,
    "FD": 8,
    "SV": 8,
    "UV": 8,
}


class IncompleteValue(ValueError):
    """The file ends inside a value it announced (a blob altered after it was stored)."""


class StoredValue:
    """A binary value of an open instance, read by byte range as little endian."""

    def __init__(
        self,
        length: int,
        *,
        data: bytes | None = None,
        source: BinaryIO | None = None,
        offset: int = 0,
        unit: int = 1,
    ) -> None:
        self.length = length
        self._data = data
        self._source = source
        self._offset = offset
        self._unit = unit

    @classmethod
    def in_memory(cls, data: bytes) -> StoredValue:
        return cls(len(data), data=data)

    def file_span(self) -> tuple[int, int] | None:
        """(offset, length) of the value in the file when its bytes there are already little
        endian; None when it is in memory or must be swapped."""
        if self._source is None or self._unit != 1:
            return None
        return self._offset, self.length

    def read(self, start: int, end: int) -> bytes:
        """Bytes `start` to `end` (clamped to the value) of the little-endian value."""
        end = min(end, self.length)
        if start >= end:
            return b""
        if self._data is not None:
            return self._data[start:end]
        assert self._source is not None
        unit = self._unit
        # Whole units only: a big-endian unit must be swapped as one.
        first = start - start % unit
        last = min(self.length, end + (-end) % unit)
        self._source.seek(self._offset + first)
        raw = self._source.read(last - first)
        if len(raw) < last - first:
            raise IncompleteValue(
                f"the file ends {last - first - len(raw)} bytes before the end of a value"
            )
        if unit > 1:
            raw = byteswap(raw, unit)
        return raw[start - first : end - first]


class InstanceFile:
    """A stored Part 10 instance opened to read values; `close()` it (or use `with`)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.dataset: FileDataset = read_dataset(source)
        transfer_syntax = str(self.dataset.file_meta.get("TransferSyntaxUID", ""))
        self._deflated = transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        little = self.dataset.original_encoding[1]
        self._big_endian = little is not None and not little

    @classmethod
    def open(cls, path: Path) -> InstanceFile:
        source = path.open("rb")
        try:
            return cls(source)
        except BaseException:
            source.close()
            raise

    @property
    def source(self) -> BinaryIO:
        """The open file, for values read in place (keep it open while the data set is used)."""
        return self._source

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> InstanceFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def value(self, tag_path: str) -> StoredValue | None:
        """The binary or numeric value at `tag_path` (`TTTTTTTT`, `SSSSSSSS/i/TTTTTTTT`, ...).

        None when the path names nothing, or an attribute that is neither binary nor numeric.
        Raises `EncapsulatedPixelData` for compressed Pixel Data.
        """
        if "/" not in tag_path and not self._deflated:
            found = self._top_level(tag_path)
            if found is not None:
                return found
        data = bulkdata_element(self.dataset, tag_path)
        return None if data is None else StoredValue.in_memory(data)

    def pixel_data(self) -> tuple[int, StoredValue] | None:
        """The first Pixel Data attribute present (PS3.5 A.4 tags) and its native value."""
        for tag in sorted(PIXEL_DATA_TAGS):
            if tag in self.dataset:
                value = self.value(f"{tag:08X}")
                if value is not None:
                    return tag, value
        return None

    def _top_level(self, tag_path: str) -> StoredValue | None:
        try:
            tag = int(tag_path, 16) if len(tag_path) == 8 else -1
        except ValueError:
            return None
        if tag < 0 or tag not in self.dataset:
            return None
        raw = self.dataset.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement):
            return None  # already converted: bulkdata_element reads it
        vr = raw_vr(raw).split(" or ", 1)[0]  # the dictionary's first choice
        if raw.length == UNDEFINED_LENGTH:
            if tag in PIXEL_DATA_TAGS:
                raise EncapsulatedPixelData(tag_path)
            return None
        if vr not in _UNIT:
            return None
        unit = swap_unit(tag, vr, _UNIT[vr], self.dataset) if self._big_endian else 1
        if raw.value is None:  # deferred: left in the file
            return StoredValue(raw.length, source=self._source, offset=raw.value_tell, unit=unit)
        data = bytes(raw.value)
        return StoredValue.in_memory(byteswap(data, unit) if unit > 1 else data)
