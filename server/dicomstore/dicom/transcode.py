"""A stored instance rewritten in another transfer syntax, a frame at a time (PS3.5 A, 8.2).

The body is produced in pieces so that memory holds one frame, not the instance:
`head(source, target)` is the Part 10 preamble, File Meta Information and every attribute
before Pixel Data, then the Pixel Data element's header, then the first frame; `frames(source,
target, start, stop)` are the frames that follow; `tail(...)` ends the value. Concatenated, the
pieces are one valid Part 10 file.

What changes, and nothing else (every other attribute is kept, SOP Instance UID included):
- the Transfer Syntax UID of the File Meta Information;
- Photometric Interpretation and Planar Configuration, as decoding and encoding leave the
  pixels (`pixel_encode`), Planar Configuration 0 whenever the pixels were re-encoded;
- Lossy Image Compression "01" and the method appended to Lossy Image Compression Method when
  the output is lossy (PS3.3 C.7.6.1.1.5: once lossy, an image stays marked so);
- the Extended Offset Table of the stored encapsulation is dropped (it described other
  fragments); an encapsulated output has one fragment per frame and an empty Basic Offset
  Table (PS3.5 A.4);
- attributes after Pixel Data (Data Set Trailing Padding, digital signatures) are dropped: a
  signature over other bytes would be false; so are group lengths (retired, PS3.5 7.2), which
  pydicom's writer leaves out.
Native Pixel Data going to a native syntax is copied, not decoded: the stored bits, unused high
bits included, arrive unchanged (swapped to little endian from a big-endian upload), so the
copy is lossless by construction; 1-bit data, whose frames need not start on a byte, goes in
one piece. Values of a big-endian upload other than Pixel Data are swapped too.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydicom import dcmread, dcmwrite
from pydicom.uid import UID, ImplicitVRLittleEndian

from dicomstore.dicom.elements import (
    FLOAT_PIXEL_DATA_TAGS,
    SWAP_WIDTH,
    UNDEFINED_LENGTH,
    byteswap,
)
from dicomstore.dicom.pixel_encode import (
    LOSSY_METHODS,
    NATIVE_OUTPUTS,
    check_target,
    encode_frame,
)
from dicomstore.dicom.pixel_source import PixelSource

#: Decoded bytes a worker job produces at most (whole frames, at least one).
PIECE_BYTES: Final = 4 << 20
_ITEM: Final = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
_SEQUENCE_DELIMITER: Final = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_DROPPED: Final = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")


@dataclass(frozen=True)
class Plan:
    """How the frames of a transcoded body are produced."""

    target: str
    frames: int
    """Pieces after the head: the frames, or 1 for a native copy of bit-packed data."""
    copy: bool
    """Native to native: the stored frames are copied, not decoded."""
    pixel_bytes: int
    """The Pixel Data value's length for a native output (before its padding byte), else 0."""
    pieces_per_job: int = 1
    """Frames a worker job produces at a time: about `PIECE_BYTES` of decoded pixels."""


def is_copy(source: PixelSource, target: str) -> bool:
    return not source.image.encapsulated and target in NATIVE_OUTPUTS


def plan(source: PixelSource, target: str) -> Plan:
    check_target(source.image, target)
    image = source.image
    copy = is_copy(source, target)
    frames = 1 if copy and image.bits_allocated == 1 else image.number_of_frames
    pixel_bytes = 0
    if target in NATIVE_OUTPUTS:
        if image.bits_allocated == 1:
            pixel_bytes = (image.number_of_frames * image.rows * image.columns + 7) // 8
        elif copy:
            pixel_bytes = source.stored_frame_bytes * image.number_of_frames
        else:
            pixel_bytes = image.decoded_frame_bytes * image.number_of_frames
    per_job = max(1, PIECE_BYTES // max(1, image.decoded_frame_bytes))
    return Plan(target, frames, copy, pixel_bytes, per_job)


def head(source: PixelSource, path: str, target: str) -> tuple[Plan, bytes]:
    """The plan and the body up to and including the first frame."""
    transcoding = plan(source, target)
    first, photometric = _piece(source, transcoding, 1)
    header = _header(source, path, transcoding, photometric)
    return transcoding, header + first


def frames(source: PixelSource, transcoding: Plan, start: int, stop: int) -> bytes:
    """Pieces `start` to `stop - 1` (from 1) of the Pixel Data value."""
    return b"".join(_piece(source, transcoding, n)[0] for n in range(start, stop))


def tail(transcoding: Plan) -> bytes:
    if transcoding.target in NATIVE_OUTPUTS or not transcoding.frames:
        return b"\x00" if transcoding.pixel_bytes % 2 else b""
    return _SEQUENCE_DELIMITER


def _piece(source: PixelSource, transcoding: Plan, number: int) -> tuple[bytes, str]:
    image = source.image
    if transcoding.copy:
        if image.bits_allocated == 1:
            pixels = source.file.pixel_data()
            assert pixels is not None
            return pixels[1].read(0, transcoding.pixel_bytes), image.photometric
        return source.stored_frame(number), image.photometric
    encoded = encode_frame(source.decode(number), image, transcoding.target)
    if transcoding.target in NATIVE_OUTPUTS:
        return encoded.data, encoded.photometric
    data = encoded.data + b"\x00" * (len(encoded.data) % 2)
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(data)) + data, encoded.photometric


def header_only(path: str, target: str) -> tuple[Plan, bytes]:
    """An instance without Pixel Data (a report, a presentation state) in `target`: only the
    data set's encoding and the File Meta Information change."""
    transcoding = Plan(target, frames=0, copy=True, pixel_bytes=0)
    return transcoding, _data_set(path, target, None)


def _header(source: PixelSource, path: str, transcoding: Plan, photometric: str) -> bytes:
    recoded = None if transcoding.copy else (photometric, source.image.samples_per_pixel)
    return _data_set(path, transcoding.target, recoded) + _pixel_data_header(source, transcoding)


def _data_set(path: str, target: str, recoded: tuple[str, int] | None) -> bytes:
    """The file up to Pixel Data in `target`; `recoded`: the photometric and samples per pixel
    of re-encoded pixels, None when they are copied."""
    dataset = dcmread(path, stop_before_pixels=True, force=False)
    big_endian = dataset.original_encoding[1] is False
    for element in dataset.iterall():  # converts every raw element, so each has its VR
        unit = SWAP_WIDTH.get(str(element.VR))
        if big_endian and unit and isinstance(element.value, bytes):
            element.value = byteswap(element.value, unit)
    for tag in FLOAT_PIXEL_DATA_TAGS:  # before Pixel Data, so read with the header
        if tag in dataset:
            del dataset[tag]
    dataset.file_meta.TransferSyntaxUID = UID(target)
    if recoded is not None:
        for keyword in _DROPPED:
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.PhotometricInterpretation, samples = recoded
        if samples > 1:
            dataset.PlanarConfiguration = 0
    method = LOSSY_METHODS.get(target)
    if method is not None and recoded is not None:
        dataset.LossyImageCompression = "01"
        methods = dataset.get("LossyImageCompressionMethod") or []
        dataset.LossyImageCompressionMethod = [*_strings(methods), method]
    out = io.BytesIO()
    # Written as the target's encoding, whatever the upload's was (pydicom's save_as keeps it).
    dcmwrite(
        out,
        dataset,
        implicit_vr=target == ImplicitVRLittleEndian,
        little_endian=True,
        enforce_file_format=True,
    )
    return out.getvalue()


def _pixel_data_header(source: PixelSource, transcoding: Plan) -> bytes:
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    if transcoding.target not in NATIVE_OUTPUTS:
        return tag + b"OB\x00\x00" + struct.pack("<I", UNDEFINED_LENGTH) + _ITEM
    length = transcoding.pixel_bytes + transcoding.pixel_bytes % 2
    if transcoding.target == ImplicitVRLittleEndian:
        return tag + struct.pack("<I", length)
    vr = b"OB" if source.image.bits_allocated <= 8 else b"OW"
    if source.image.float_data:
        tag = struct.pack("<HH", 0x7FE0, 0x0008 if source.image.bits_allocated == 32 else 0x0009)
        vr = b"OF" if source.image.bits_allocated == 32 else b"OD"
    return tag + vr + b"\x00\x00" + struct.pack("<I", length)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value] if isinstance(value, Sequence) else []
