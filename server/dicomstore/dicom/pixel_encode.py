"""Encoding decoded frames: the transfer syntaxes and frame media types this server produces.

Transcoding goes from any syntax pydicom can decode (`pixel_source`) to one of `PRODUCIBLE`:
- native: Implicit VR Little Endian (1.2.840.10008.1.2), Explicit VR Little Endian (.1.2.1);
- RLE Lossless (.1.2.5), through pydicom's encoder (pylibjpeg-rle when installed);
- JPEG 2000 lossless (.4.90) and lossy (.4.91), through pydicom's encoder on openjpeg;
  colour is written with the reversible / irreversible component transform, hence YBR_RCT /
  YBR_ICT (PS3.5 8.2.4);
- JPEG-LS lossless (.4.80) and near-lossless (.4.81), through pydicom's encoder on CharLS;
- JPEG Baseline (.4.50), 8-bit only, through Pillow (libjpeg-turbo), which pydicom has no
  encoder for: colour as YCbCr without subsampling, hence YBR_FULL (PS3.5 8.2.1).

Google's rules of what cannot be transcoded (its conformance statement): 1-bit and float pixel
data only between native syntaxes; no JPEG Baseline but for 8-bit unsigned data; palette colour
indices are never lossy-compressed. Anything an encoder refuses is `CannotTranscode` too, with
the encoder's reason.

Frames (PS3.18 10.4.1.1.3, 8.7.3.5) are produced as `application/octet-stream` (native little
endian), or as one of `FRAME_MEDIA_TYPES`: the bare codestream of the syntax, or a PNG (8 or 16
bits grey, 8-bit RGB) for `image/png`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from PIL import Image
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomstore.dicom.pixel_source import Decoded, ImagePixels

NATIVE_OUTPUTS: Final = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
PRODUCIBLE: Final = (
    *NATIVE_OUTPUTS,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
#: The Lossy Image Compression Method (0028,2114) of each lossy output (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHODS: Final[Mapping[str, str]] = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEG2000: "ISO_15444_1",
    JPEGLSNearLossless: "ISO_14495_1",
}
PNG: Final = "image/png"
#: Frame media types and the syntaxes each can carry, the default first (PS3.18 Table 8.7.4-1).
FRAME_MEDIA_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "image/jpeg": (JPEGBaseline8Bit,),
    "image/jls": (JPEGLSLossless, JPEGLSNearLossless),
    "image/jp2": (JPEG2000Lossless, JPEG2000),
    "image/dicom-rle": (RLELossless,),
    PNG: ("",),
}

#: How a frame is asked of the pixel workers, besides a transfer syntax UID of PRODUCIBLE:
#: native little endian (decoded when stored compressed), as stored, or a lossless PNG.
NATIVE_FRAME: Final = ""
STORED_FRAME: Final = "*"
PNG_FRAME: Final = "png"

#: JPEG Baseline quality of transcoded data (libjpeg's scale; 90 keeps diagnostic detail).
JPEG_QUALITY: Final = 90
#: Target PSNR (dB) of lossy JPEG 2000 output, over the frame's own range of values.
J2K_PSNR: Final = 50.0
#: Smallest side openjpeg encodes with its default six resolution levels (2 ** 5).
J2K_MIN_SIDE: Final = 32
#: NEAR parameter of near-lossless JPEG-LS output: no sample is off by more than this.
JLS_ERROR: Final = 2

_YBR_TO_RGB: Final = frozenset({"YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})


class CannotTranscode(ValueError):
    """The image cannot be produced in the asked syntax; the message says why (Google's 400)."""


@dataclass(frozen=True)
class Encoded:
    data: bytes
    photometric: str


def check_target(image: ImagePixels, target: str) -> None:
    """Raise `CannotTranscode` unless this image can be produced in `target`."""
    if target not in PRODUCIBLE:
        raise _cannot(image, target, "this server produces " + ", ".join(PRODUCIBLE))
    native = target in NATIVE_OUTPUTS
    if not native and (image.float_data or image.bits_allocated == 1):
        raise _cannot(image, target, "1-bit and float pixel data go only to native syntaxes")
    if target in LOSSY_METHODS and image.photometric == "PALETTE COLOR":
        raise _cannot(image, target, "palette colour indices cannot be lossy-compressed")
    small = min(image.rows, image.columns) < J2K_MIN_SIDE
    if target in (JPEG2000Lossless, JPEG2000) and small:
        raise _cannot(
            image,
            target,
            f"JPEG 2000 output needs at least {J2K_MIN_SIDE} rows and columns (openjpeg's six"
            f" resolution levels), and the image has {image.rows} x {image.columns}",
        )
    if target == JPEGBaseline8Bit and (image.bits_allocated != 8 or image.pixel_representation):
        raise _cannot(
            image,
            target,
            f"JPEG Baseline holds 8-bit unsigned samples, and the image has"
            f" {image.bits_allocated}-bit {'signed' if image.pixel_representation else 'unsigned'}"
            " samples",
        )


def _cannot(image: ImagePixels, target: str, reason: str) -> CannotTranscode:
    return CannotTranscode(
        f"image cannot be transcoded from {image.transfer_syntax} to {target}: {reason}"
    )


def decoded_photometric(image: ImagePixels) -> str:
    """The photometric interpretation of `image`'s frames once decoded (see `pixel_source`)."""
    if image.encapsulated and image.photometric in _YBR_TO_RGB:
        return "RGB"
    return image.photometric


def native_bytes(decoded: Decoded, image: ImagePixels) -> bytes:
    """A decoded frame as native little-endian Pixel Data (Planar Configuration 0)."""
    array = decoded.array
    if image.bits_allocated == 1:
        return np.packbits(array.astype(np.uint8).ravel(), bitorder="little").tobytes()
    kind = "f" if image.float_data else ("i" if image.pixel_representation else "u")
    dtype = np.dtype(f"<{kind}{image.bits_allocated // 8}")
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def encode_frame(decoded: Decoded, image: ImagePixels, target: str) -> Encoded:
    """A decoded frame in `target`'s encoding: native bytes or one compressed codestream."""
    check_target(image, target)
    if target in NATIVE_OUTPUTS:
        return Encoded(native_bytes(decoded, image), decoded.photometric)
    if target == JPEGBaseline8Bit:
        return _jpeg_baseline(decoded)
    photometric = decoded.photometric
    options: dict[str, Any] = {}
    if target in (JPEG2000Lossless, JPEG2000) and photometric == "RGB":
        photometric = "YBR_RCT" if target == JPEG2000Lossless else "YBR_ICT"
        options["use_mct"] = True
    if target == JPEG2000:
        options["j2k_psnr"] = [_j2k_psnr(decoded.array, image.bits_stored)]
    if target == JPEGLSNearLossless:
        options["jls_error"] = JLS_ERROR
    encoder = get_encoder(UID(target))
    try:
        data = encoder.encode(
            np.ascontiguousarray(decoded.array),
            rows=image.rows,
            columns=image.columns,
            samples_per_pixel=image.samples_per_pixel,
            bits_allocated=image.bits_allocated,
            bits_stored=image.bits_stored,
            pixel_representation=image.pixel_representation,
            photometric_interpretation=decoded.photometric,
            planar_configuration=0,
            number_of_frames=1,
            **options,
        )
    except (ValueError, RuntimeError, TypeError) as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines())
        raise _cannot(image, target, reason) from None
    return Encoded(bytes(data), photometric)  # CharLS answers a bytearray


def _j2k_psnr(array: np.ndarray[Any, Any], bits_stored: int) -> float:
    """The PSNR to ask openjpeg for, so that the frame keeps `J2K_PSNR` over its own range:
    openjpeg measures it against the largest value of `bits_stored` bits, which a 16-bit CT
    with a range of a few thousand never comes near."""
    span = max(float(array.max(initial=0)) - float(array.min(initial=0)), 1.0)
    return J2K_PSNR + 20 * math.log10(max((1 << bits_stored) - 1, 1) / span)


def _jpeg_baseline(decoded: Decoded) -> Encoded:
    array = np.ascontiguousarray(decoded.array, dtype=np.uint8)
    colour = array.ndim == 3
    out = io.BytesIO()
    Image.fromarray(array, "RGB" if colour else "L").save(
        out, "JPEG", quality=JPEG_QUALITY, subsampling=0 if colour else -1
    )
    return Encoded(out.getvalue(), "YBR_FULL" if colour else decoded.photometric)


def encode_png(decoded: Decoded, image: ImagePixels) -> bytes:
    """A decoded frame as a lossless PNG: grey at 8 or 16 bits, or 8-bit RGB."""
    array = decoded.array
    if image.float_data or (array.ndim == 3 and array.dtype.itemsize > 1):
        raise _cannot(image, PNG, "PNG holds 8 or 16-bit grey or 8-bit colour samples")
    wide_or_signed = array.dtype.itemsize > 2 or array.dtype.kind == "i"
    if wide_or_signed and (array.min(initial=0) < 0 or array.max(initial=0) > 0xFFFF):
        raise _cannot(image, PNG, "PNG holds unsigned samples of up to 16 bits")
    out = io.BytesIO()
    if array.ndim == 3:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB").save(out, "PNG")
    elif array.dtype.itemsize == 1:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "L").save(out, "PNG")
    else:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint16), "I;16").save(out, "PNG")
    return out.getvalue()
