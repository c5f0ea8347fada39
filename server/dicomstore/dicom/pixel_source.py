"""The frames of a stored instance, as stored and decoded (PS3.5 8.1, 8.2, A.4; PS3.3 C.7.6.3).

`PixelSource` opens a stored Part 10 instance and reads one frame at a time, so memory stays
bounded by a frame whatever the number of frames:
- `stored_frame(n)`: the frame's bytes as stored: a native frame little endian (bit-packed
  frames start at bit 0, as `frames.FrameReader` reads them), a compressed frame its
  encapsulated fragments joined (pydicom's `encaps.get_frame`, honouring the Basic and
  Extended Offset Tables);
- `decode(n)`: the frame as a numpy array, through pydicom's decoders and the codec plugins
  installed with the project (pylibjpeg with libjpeg, openjpeg and RLE; pyjpegls; Pillow).
  Colour comes back as pydicom returns it by default: YBR_FULL, YBR_FULL_422, YBR_ICT and
  YBR_RCT converted to RGB, interleaved (Planar Configuration 0); `Decoded.photometric` says
  what the array holds.

Only Pixel Data (7FE0,0010) is decoded; Float and Double Float Pixel Data are native by
definition (PS3.5 A.4: never encapsulated) and read as stored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomstore.dicom.elements import FLOAT_PIXEL_DATA_TAGS, PIXEL_DATA, UNDEFINED_LENGTH
from dicomstore.dicom.frames import (
    NATIVE_TRANSFER_SYNTAXES,
    FrameError,
    FrameLayout,
    FrameOutOfRange,
    FrameReader,
)
from dicomstore.dicom.values import InstanceFile


class PixelDataError(ValueError):
    """The Pixel Data cannot be read or decoded; the message says why."""


class NoPixelData(PixelDataError):
    """The instance has no Pixel Data at all."""


@dataclass(frozen=True)
class ImagePixels:
    """What the Image Pixel module says of the stored Pixel Data (PS3.3 C.7.6.3)."""

    transfer_syntax: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    number_of_frames: int
    float_data: bool

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in NATIVE_TRANSFER_SYNTAXES

    @property
    def decoded_frame_bytes(self) -> int:
        """The size of one decoded frame, in bytes (bit-packed data counts a byte a pixel)."""
        per_sample = max(1, self.bits_allocated // 8)
        return self.rows * self.columns * self.samples_per_pixel * per_sample


@dataclass(frozen=True)
class Decoded:
    """One decoded frame: rows x columns (x samples), and the photometric of those values."""

    array: np.ndarray[Any, Any]
    photometric: str


class PixelSource:
    """The Pixel Data of an open instance, a frame at a time; `close()` it (or use `with`)."""

    def __init__(self, file: InstanceFile) -> None:
        self.file = file
        self.dataset = file.dataset
        self.image = _image_pixels(file)
        self._native: FrameReader | None = None
        if not self.image.encapsulated:
            try:
                self._native = FrameReader(file)
            except FrameError as exc:
                raise PixelDataError(str(exc)) from None

    @classmethod
    def open(cls, path: Path) -> PixelSource:
        file = InstanceFile.open(path)
        try:
            return cls(file)
        except BaseException:
            file.close()
            raise

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PixelSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def stored_frame_bytes(self) -> int:
        """The size of one native frame as stored (bit-packed frames rounded up to a byte)."""
        assert self._native is not None, "compressed frames have no fixed size"
        return self._native.layout.frame_bytes

    def check(self, number: int) -> None:
        if not 1 <= number <= self.image.number_of_frames:
            raise FrameOutOfRange(
                f"frame {number} does not exist: the instance has"
                f" {self.image.number_of_frames} frame(s)"
            )

    def stored_frame(self, number: int) -> bytes:
        """Frame `number` (from 1) as stored: native little endian, or its compressed bytes."""
        self.check(number)
        if self._native is not None:
            try:
                return self._native.frame(number)
            except FrameError as exc:
                raise PixelDataError(str(exc)) from None
        return self._encapsulated_frame(number)

    def decode(self, number: int) -> Decoded:
        """Frame `number` (from 1) decoded to an array."""
        data = self.stored_frame(number)
        image = self.image
        syntax = ExplicitVRLittleEndian if not image.encapsulated else UID(image.transfer_syntax)
        options = as_pixel_options(self.dataset)
        options.update(number_of_frames=1, transfer_syntax_uid=syntax, pixel_keyword="PixelData")
        if image.float_data:
            return Decoded(_float_frame(data, image), image.photometric)
        decoder = get_decoder(syntax)
        if not decoder.is_available:
            raise PixelDataError(f"no decoder is installed for {syntax} ({syntax.name})")
        try:
            # A buffer given to an encapsulated syntax's decoder is encapsulated Pixel Data.
            source = encapsulate([data]) if image.encapsulated else data
            array, overrides = decoder.as_array(source, index=0, **options)
        except Exception as exc:  # the plugins raise many kinds; all mean "cannot decode"
            raise PixelDataError(
                f"the frame cannot be decoded from {syntax} ({syntax.name}): {exc}"
            ) from None
        photometric = str(overrides.get("photometric_interpretation", image.photometric))
        return Decoded(array, photometric)

    def _encapsulated_frame(self, number: int) -> bytes:
        raw = self.dataset.get_item(PIXEL_DATA, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value is None:
            source: Any = self.file.source
            source.seek(raw.value_tell)
        else:
            source = io.BytesIO(bytes(self.dataset[PIXEL_DATA].value))
        offsets = None
        if "ExtendedOffsetTable" in self.dataset and "ExtendedOffsetTableLengths" in self.dataset:
            offsets = (
                bytes(self.dataset.ExtendedOffsetTable),
                bytes(self.dataset.ExtendedOffsetTableLengths),
            )
        try:
            return get_frame(
                source,
                number - 1,
                extended_offsets=offsets,
                number_of_frames=self.image.number_of_frames,
            )
        except Exception as exc:  # pydicom raises ValueError and others on bad items
            raise PixelDataError(f"frame {number} cannot be read: {exc}") from None


def _image_pixels(file: InstanceFile) -> ImagePixels:
    dataset = file.dataset
    tags = [tag for tag in (PIXEL_DATA, *sorted(FLOAT_PIXEL_DATA_TAGS)) if tag in dataset]
    if not tags:
        raise NoPixelData("the instance has no Pixel Data")
    try:
        layout = FrameLayout.of(dataset)
    except FrameError as exc:
        raise PixelDataError(str(exc)) from None
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    raw = dataset.get_item(tags[0], keep_deferred=True)
    length = raw.length if isinstance(raw, RawDataElement) else None
    if syntax not in NATIVE_TRANSFER_SYNTAXES and length != UNDEFINED_LENGTH:
        raise PixelDataError(f"Pixel Data of a {syntax} instance is not encapsulated")

    def number(keyword: str, default: int) -> int:
        value = dataset.get(keyword, default)
        return value if isinstance(value, int) else default

    return ImagePixels(
        transfer_syntax=syntax,
        rows=layout.rows,
        columns=layout.columns,
        samples_per_pixel=layout.samples_per_pixel,
        bits_allocated=layout.bits_allocated,
        bits_stored=number("BitsStored", layout.bits_allocated),
        pixel_representation=number("PixelRepresentation", 0),
        photometric=str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        number_of_frames=layout.number_of_frames,
        float_data=tags[0] in FLOAT_PIXEL_DATA_TAGS,
    )


def _float_frame(data: bytes, image: ImagePixels) -> np.ndarray[Any, Any]:
    dtype = np.dtype("<f4" if image.bits_allocated == 32 else "<f8")
    shape: tuple[int, ...] = (image.rows, image.columns)
    if image.samples_per_pixel > 1:
        shape += (image.samples_per_pixel,)
    return np.frombuffer(data, dtype=dtype).reshape(shape)
