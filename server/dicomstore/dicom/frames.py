"""Frames of native (uncompressed) Pixel Data, one at a time (PS3.18 10.4.1.1.3; PS3.5 8.1.1).

A frame of native Pixel Data is Rows x Columns x Samples per Pixel x Bits Allocated bits, frames
following each other with no padding (PS3.5 8.1.1). With Bits Allocated 1 frames need not start
on a byte boundary: such a frame is shifted to start at bit 0 of its first byte, and its last
byte padded with zero bits. Frames are returned little endian (`values.StoredValue`), as the
`application/octet-stream` frames of WADO-RS carry them by default
(docs/google-behaviour.md#frame-media-types).

Frame numbers start at 1 (PS3.18 10.4.1.1.3). Compressed Pixel Data has no native frames: it
raises `EncapsulatedPixelData` until a decoder exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydicom.dataset import Dataset

from dicomstore.dicom.values import InstanceFile, StoredValue

#: Transfer syntaxes whose Pixel Data is native (PS3.5 A.1, A.2, A.3, A.5).
NATIVE_TRANSFER_SYNTAXES: Final = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    }
)


class FrameError(ValueError):
    """Frames cannot be read from this instance, or not the ones asked for."""


class NoPixelData(FrameError):
    """The instance has no Pixel Data, hence no frames."""


class FrameOutOfRange(FrameError):
    """A frame number below 1 or above the instance's Number of Frames."""


class InconsistentPixelData(FrameError):
    """The image attributes and the Pixel Data value disagree (too short, odd Bits Allocated)."""


@dataclass(frozen=True)
class FrameLayout:
    """The size of one frame (PS3.3 C.7.6.3, C.7.6.6)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int
    subsampled: bool = False
    """YBR_FULL_422 native data: two luminance samples share one pair of chrominance samples,
    so a pixel takes two samples, not three (PS3.3 C.7.6.3.1.2)."""

    @classmethod
    def of(cls, dataset: Dataset) -> FrameLayout:
        values: dict[str, int] = {}
        for keyword in ("Rows", "Columns", "BitsAllocated"):
            value = dataset.get(keyword)
            if not isinstance(value, int) or value <= 0:
                raise InconsistentPixelData(f"{keyword} is missing or not a positive number")
            values[keyword] = value
        bits = values["BitsAllocated"]
        if bits != 1 and bits % 8:
            raise InconsistentPixelData(f"Bits Allocated {bits} is neither 1 nor a whole byte")
        samples = dataset.get("SamplesPerPixel", 1)
        return cls(
            rows=values["Rows"],
            columns=values["Columns"],
            samples_per_pixel=samples if isinstance(samples, int) and samples > 0 else 1,
            bits_allocated=bits,
            number_of_frames=_number_of_frames(dataset),
            subsampled=str(dataset.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422",
        )

    @property
    def frame_bits(self) -> int:
        samples = 2 if self.subsampled and self.samples_per_pixel == 3 else self.samples_per_pixel
        return self.rows * self.columns * samples * self.bits_allocated

    @property
    def frame_bytes(self) -> int:
        return (self.frame_bits + 7) // 8

    def end_byte(self, number: int) -> int:
        """Where frame `number` (1-based) ends in the Pixel Data value, in bytes."""
        return (number * self.frame_bits + 7) // 8


def _number_of_frames(dataset: Dataset) -> int:
    value = dataset.get("NumberOfFrames")
    try:
        frames = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError):
        return 1
    return frames if frames > 0 else 1


@dataclass(frozen=True)
class FrameSpan:
    """Where the byte-aligned little-endian frames of a stored instance lie in its file, so
    that a frame can be read again without parsing the file (`FrameReader.span`)."""

    offset: int
    length: int
    frame_bytes: int
    number_of_frames: int

    def frame_range(self, number: int) -> tuple[int, int]:
        """(file offset, size) of frame `number` (from 1)."""
        if not 1 <= number <= self.number_of_frames:
            raise FrameOutOfRange(
                f"frame {number} does not exist: the instance has {self.number_of_frames} frame(s)"
            )
        end = number * self.frame_bytes
        if end > self.length:
            raise InconsistentPixelData(
                f"Pixel Data holds {self.length} bytes, but frame {number} of"
                f" {self.frame_bytes} bytes ends at byte {end}"
            )
        return self.offset + end - self.frame_bytes, self.frame_bytes


class FrameReader:
    """The native frames of an open instance."""

    def __init__(self, instance: InstanceFile) -> None:
        pixels = instance.pixel_data()
        if pixels is None:
            raise NoPixelData("the instance has no Pixel Data")
        self._value: StoredValue = pixels[1]
        self.layout = FrameLayout.of(instance.dataset)

    @property
    def number_of_frames(self) -> int:
        return self.layout.number_of_frames

    def span(self) -> FrameSpan | None:
        """Where the frames lie in the file, when each is a plain byte range of it."""
        found = self._value.file_span()
        if found is None or self.layout.frame_bits % 8:
            return None
        offset, length = found
        return FrameSpan(offset, length, self.layout.frame_bytes, self.layout.number_of_frames)

    def check(self, numbers: Sequence[int]) -> None:
        """Raise unless every frame in `numbers` exists and lies inside the Pixel Data."""
        for number in numbers:
            if not 1 <= number <= self.number_of_frames:
                raise FrameOutOfRange(
                    f"frame {number} does not exist: the instance has"
                    f" {self.number_of_frames} frame(s)"
                )
        end = self.layout.end_byte(max(numbers, default=0))
        if end > self._value.length:
            raise InconsistentPixelData(
                f"Pixel Data holds {self._value.length} bytes, but frame {max(numbers)} of"
                f" {self.layout.frame_bytes} bytes ends at byte {end}"
            )

    def frame(self, number: int) -> bytes:
        """Frame `number` (1-based), little endian; bit-packed frames start at bit 0."""
        self.check([number])
        bits = self.layout.frame_bits
        start_bit = (number - 1) * bits
        first, shift = divmod(start_bit, 8)
        data = self._value.read(first, self.layout.end_byte(number))
        if shift == 0 and bits % 8 == 0:
            return data
        packed = int.from_bytes(data, "little") >> shift
        packed &= (1 << bits) - 1
        return packed.to_bytes(self.layout.frame_bytes, "little")
