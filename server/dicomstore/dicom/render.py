"""Rendered frames: the display pipeline of DICOMweb `/rendered` resources (PS3.18 8.3.5).

`render_frame` turns one decoded frame into a consumer image (PS3.18 8.3.5.1, rendered media
types `image/jpeg` and `image/png`), following the pipeline of PS3.4 N.2 and PS3.3 C.11:

- MONOCHROME1/2: Modality LUT (Rescale Slope/Intercept or the Modality LUT Sequence, PS3.3
  C.11.1), then VOI (PS3.3 C.11.2): the `window` query parameter when given (PS3.18 8.3.5.1.4),
  else the instance's first VOI LUT Sequence item, else its first Window Center/Width pair with
  its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID; any other value is read as LINEAR, the
  default of C.11.2.1.2). An instance with no usable VOI gets a min-max window: the frame's
  lowest modality value renders black and its highest white (dcmtk's `+Wm`). MONOCHROME1, or a
  Presentation LUT Shape INVERSE (C.11.6; the DX Image Module pairs INVERSE with MONOCHROME1, so
  both together are one inversion, not two), is inverted. Output is 8-bit grayscale.
- PALETTE COLOR: the Palette Color LUTs (PS3.3 C.7.6.3.1.5-6, segmented ones too, C.7.9),
  16-bit entries scaled to 8 bits. RGB (and YBR_ICT / YBR_RCT, whose component transform the
  JPEG 2000 decoder has already undone, PS3.5 8.2.4): samples above 8 bits are scaled from Bits
  Stored to 8 bits. YBR_FULL and YBR_FULL_422 frames not yet converted are converted to RGB.
  Colour frames have no VOI: the `window` parameter is ignored for them. Output is 8-bit RGB.
- Float Pixel Data (PS3.3 C.7.6.24) renders like monochrome: the `window` parameter or the first
  Window Center/Width, else min-max over its finite values; NaN and infinities take the lowest
  finite value.

The frame is the one `pydicom.pixels.pixel_array(ds, index=i)` returns with its defaults: Bits
Stored below Bits Allocated already masked or sign-extended, YBR_FULL(_422) already RGB (the
caller then passes "RGB" as `photometric`), palette colour as indices.

Viewport (PS3.18 8.3.5.1.3): the image is scaled to the largest size that fits within vw x vh
keeping its aspect ratio (up or down), and is not padded to the viewport. Google's reference says no
more than "as specified in PS3.18 8.3.5.1.3"; fitting is what viewers expect and what Orthanc does
(Orthanc then pads to vw x vh, we do not). The optional source region `sx,sy,sw,sh` (standard mode:
Google accepts `vw,vh` only, docs/google-behaviour.md#rendered-parameters) crops the frame before
scaling; a negative `sw` or `sh` flips the region, as in Orthanc. Sides above 10,000 px are refused
(Google's limit, docs/google-behaviour.md#rendered-limits).

Speed: a lookup table over the frame's range of stored values carries the whole grayscale
pipeline, so the per-pixel work is one gather; a 16-bit frame needs at most 65,536 entries.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
)

#: Google's limit on each side of a viewport (docs/google-behaviour.md#rendered-limits).
MAX_VIEWPORT_SIDE: Final = 10_000
#: JPEG quality when the request has none (PS3.18 8.3.5.1.2 leaves it to the server); the value
#: Orthanc and dcmtk use.
DEFAULT_JPEG_QUALITY: Final = 90
#: Rendered media types (PS3.18 8.3.5) this module encodes.
MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png"})
#: `window` functions (PS3.18 8.3.5.1.4) and the VOI LUT Function each names (PS3.3 C.11.2.1.3).
WINDOW_FUNCTIONS: Final = {"linear": "LINEAR", "linear_exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}

# Resampling for the viewport: bilinear (with Pillow's antialiasing support on downscale) is about
# twice as fast as Lanczos and looks the same at thumbnail sizes.
_RESAMPLE: Final = Image.Resampling.BILINEAR
# A table wider than this and than the frame (32-bit data, wide range) costs more than it saves.
_MAX_TABLE: Final = 1 << 16
_UNSIGNED: Final = re.compile(r"[0-9]+")
_SIGNED: Final = re.compile(r"-?[0-9]+")
# What pydicom's processing functions raise on malformed or missing LUT attributes.
_PYDICOM_ERRORS: Final = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    NotImplementedError,
)

Pixels = NDArray[np.uint8]


class RenderError(ValueError):
    """The frame cannot be rendered; the message says why."""


@dataclass(frozen=True)
class Viewport:
    """`viewport=vw,vh[,sx,sy,sw,sh]` (PS3.18 8.3.5.1.3).

    `width` x `height` is the box the image is fitted into, keeping its aspect ratio. `sx`, `sy`,
    `sw`, `sh` select a source region of the frame (None: up to the frame's edge); a negative
    `sw` / `sh` flips the region horizontally / vertically.
    """

    width: int
    height: int
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None

    def __post_init__(self) -> None:
        for name, side in (("vw", self.width), ("vh", self.height)):
            if not 1 <= side <= MAX_VIEWPORT_SIDE:
                raise ValueError(f"viewport {name} must be from 1 to {MAX_VIEWPORT_SIDE}: {side}")
        if self.sx < 0 or self.sy < 0:
            raise ValueError("viewport sx and sy must not be negative")
        if self.sw == 0 or self.sh == 0:
            raise ValueError("viewport sw and sh must not be 0")

    @property
    def has_source_region(self) -> bool:
        """Whether the source region was given (Google's mode accepts `vw,vh` only)."""
        return (self.sx, self.sy, self.sw, self.sh) != (0, 0, None, None)


@dataclass(frozen=True)
class Window:
    """`window=center,width,function` (PS3.18 8.3.5.1.4), in modality units (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: str = "linear"

    def __post_init__(self) -> None:
        if self.function not in WINDOW_FUNCTIONS:
            raise ValueError(
                f"window function must be linear, linear-exact or sigmoid: {self.function!r}"
            )
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise ValueError("window center and width must be finite numbers")
        # PS3.3 C.11.2.1.2.1: width >= 1 for LINEAR; C.11.2.1.3: > 0 for the others.
        if self.function == "linear" and self.width < 1:
            raise ValueError(f"a linear window's width must be at least 1: {self.width}")
        if self.width <= 0:
            raise ValueError(f"window width must be above 0: {self.width}")


@dataclass(frozen=True)
class RenderOptions:
    """What a rendered request asks for (PS3.18 8.3.5.1)."""

    media_type: str = "image/jpeg"
    viewport: Viewport | None = None
    #: JPEG quality 1..100 (PS3.18 8.3.5.1.2); None means DEFAULT_JPEG_QUALITY. PNG ignores it.
    quality: int | None = None
    #: Overrides the instance's VOI; ignored for colour images.
    window: Window | None = None

    def __post_init__(self) -> None:
        if self.media_type not in MEDIA_TYPES:
            raise ValueError(f"cannot render to {self.media_type!r}")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be from 1 to 100: {self.quality}")


def parse_viewport(text: str) -> Viewport:
    """Parse `vw,vh` or `vw,vh,sx,sy,sw,sh` (PS3.18 8.3.5.1.3); empty sx..sh take defaults."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 6):
        raise ValueError(f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh: {text!r}")
    width, height = (_integer(part, "viewport vw and vh", _UNSIGNED) for part in parts[:2])
    if len(parts) == 2:
        return Viewport(width, height)
    sx, sy = (_integer(part, "viewport sx and sy", _UNSIGNED) if part else 0 for part in parts[2:4])
    sw, sh = (_integer(part, "viewport sw and sh", _SIGNED) if part else None for part in parts[4:])
    return Viewport(width, height, sx, sy, sw, sh)


def parse_window(text: str) -> Window:
    """Parse `center,width,function` (PS3.18 8.3.5.1.4); the function defaults to linear.

    The function is linear, linear-exact or sigmoid, any case; `linear_exact` is accepted too.
    """
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(f"window must be center,width,function: {text!r}")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"window center and width must be numbers: {text!r}") from None
    function = parts[2].lower().replace("-", "_") if len(parts) == 3 else "linear"
    return Window(center, width, function)


def parse_quality(text: str) -> int:
    """Parse the JPEG `quality` parameter, an integer from 1 to 100 (PS3.18 8.3.5.1.2)."""
    quality = _integer(text.strip(), "quality", _UNSIGNED)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be from 1 to 100: {text!r}")
    return quality


def render_frame(
    dataset: Dataset, frame: np.ndarray, photometric: str, options: RenderOptions
) -> bytes:
    """Render one decoded frame to JPEG or PNG bytes (PS3.18 8.3.5; PS3.4 N.2).

    `dataset` supplies the attributes of the pipeline only (its Pixel Data is not read);
    `photometric` is the Photometric Interpretation of `frame` as decoded. Raises RenderError
    when the frame cannot be rendered (an unsupported photometric, a malformed LUT, a source
    region outside the frame).
    """
    if frame.size == 0:
        raise RenderError("the frame has no pixels")
    try:
        pixels = _display(dataset, frame, photometric.strip().upper(), options.window)
    except RenderError:
        raise
    except _PYDICOM_ERRORS as exc:
        raise RenderError(f"the frame cannot be rendered: {exc}") from exc
    if options.viewport is not None:
        pixels = _source_region(pixels, options.viewport)
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if options.viewport is not None:
        picture = _fit(picture, options.viewport)
    buffer = io.BytesIO()
    if options.media_type == "image/png":
        picture.save(buffer, format="PNG")
    else:
        quality = DEFAULT_JPEG_QUALITY if options.quality is None else options.quality
        picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _display(
    dataset: Dataset, frame: np.ndarray, photometric: str, window: Window | None
) -> Pixels:
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        _require_plane(frame, photometric)
        shape = str(dataset.get("PresentationLUTShape") or "").strip().upper()
        invert = photometric == "MONOCHROME1" or shape == "INVERSE"
        return _grayscale(dataset, frame, window, invert)
    if photometric == "PALETTE COLOR":
        _require_plane(frame, photometric)
        return _palette(dataset, frame)
    if photometric in ("RGB", "YBR_ICT", "YBR_RCT", "YBR_FULL", "YBR_FULL_422"):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise RenderError(f"a {photometric} frame must have 3 samples per pixel: {frame.shape}")
        if photometric.startswith("YBR_FULL"):
            if frame.dtype != np.uint8:
                raise RenderError(f"{photometric} is only converted from 8-bit samples")
            return convert_color_space(frame, photometric, "RGB").astype(np.uint8, copy=False)
        return _true_colour(dataset, frame)
    raise RenderError(f"Photometric Interpretation {photometric!r} cannot be rendered")


def _require_plane(frame: np.ndarray, photometric: str) -> None:
    if frame.ndim != 2:
        raise RenderError(f"a {photometric} frame must have one sample per pixel: {frame.shape}")


def _grayscale(dataset: Dataset, frame: np.ndarray, window: Window | None, invert: bool) -> Pixels:
    if frame.dtype.kind == "f":
        finite = np.isfinite(frame)
        if not finite.all():
            frame = np.where(finite, frame, frame[finite].min() if finite.any() else 0)
        return _grey_levels(dataset, frame, None, window, invert)
    if frame.dtype.kind not in "iu":
        raise RenderError(f"pixel data of type {frame.dtype} cannot be rendered")
    # pydicom's functions run over a table of the frame's range of stored values instead of the
    # frame: the same result, and one gather per pixel instead of several float64 passes.
    low, high = int(frame.min()), int(frame.max())
    # With no negative value the table starts at 0, so that the frame itself indexes it.
    start = min(low, 0)
    if high - start >= max(_MAX_TABLE, frame.size):
        return _grey_levels(dataset, frame, None, window, invert)
    table = _grey_levels(
        dataset,
        np.arange(start, high + 1, dtype=np.int64),
        slice(low - start, None),
        window,
        invert,
    )
    return _look_up(table, frame, start)


def _look_up(table: Pixels, frame: np.ndarray, start: int) -> Pixels:
    """`table[value - start]` for each value of `frame`: the one per-pixel step."""
    index = frame if start == 0 else np.subtract(frame, start, dtype=np.intp)
    return np.take(table, index, axis=0)


def _grey_levels(
    dataset: Dataset,
    stored: np.ndarray,
    present: slice | None,
    window: Window | None,
    invert: bool,
) -> Pixels:
    """Stored values -> 8-bit grey levels; `present` is the part of `stored` the frame holds."""
    values = _modality(dataset, stored)
    if window is not None:
        levels = _windowed(values, window.center, window.width, WINDOW_FUNCTIONS[window.function])
    elif (bits := _voi_lut_bits(dataset)) is not None:
        levels = _voi_lut(dataset, values, bits)
    elif (first := _first_window(dataset)) is not None:
        levels = _windowed(values, *first)
    else:
        seen = values if present is None else values[present]
        low, high = float(seen.min()), float(seen.max())
        # dcmtk's min-max window: LINEAR maps `low` to black and `high` to white exactly.
        levels = _windowed(values, (low + high + 1) / 2, high - low + 1, "LINEAR")
    # Nearest level; dcmtk truncates instead, hence its output is up to 1 level darker.
    grey: Pixels = np.rint(np.clip(levels, 0, 255)).astype(np.uint8)
    # Not pydicom's apply_presentation_lut: its INVERSE is `max - value` over the array given,
    # which depends on the frame's content rather than on the display range.
    return np.subtract(255, grey, dtype=np.uint8) if invert else grey


def _modality(dataset: Dataset, stored: np.ndarray) -> np.ndarray:
    """PS3.3 C.11.1: the Modality LUT Sequence, else Rescale Slope and Intercept if numbers."""
    if dataset.get("ModalityLUTSequence"):
        return apply_modality_lut(stored, dataset)
    if (
        _number(dataset.get("RescaleSlope")) is None
        or _number(dataset.get("RescaleIntercept")) is None
    ):
        return stored
    return apply_modality_lut(stored, dataset)


def _windowed(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2-3 through pydicom, with the output range set to 0..255.

    pydicom takes its output range from the dataset's Bits Stored and rescale; a dataset of 8
    unsigned bits and no rescale makes that range the display's 0..255.
    """
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    return apply_windowing(values, voi)


def _voi_lut_bits(dataset: Dataset) -> int | None:
    """The bits per entry of the first usable VOI LUT Sequence item (PS3.3 C.11.2.1.1), or None."""
    items = dataset.get("VOILUTSequence")
    if not items:
        return None
    item = items[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or item.get("LUTData") is None or len(descriptor) != 3:
        return None
    bits = int(descriptor[2])
    return bits if 8 <= bits <= 16 else None


def _voi_lut(dataset: Dataset, values: np.ndarray, bits: int) -> np.ndarray:
    # A VOI LUT is indexed by integers; a rescale may have made modality values floats.
    indices = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
    # pydicom returns the LUT's own entries (PS3.3 C.11.2.1.1: `bits` per entry); scale to 8 bits.
    levels: np.ndarray = apply_voi(indices, dataset, 0) * (255 / (2**bits - 1))
    return levels


def _first_window(dataset: Dataset) -> tuple[float, float, str] | None:
    """The first Window Center/Width pair and the VOI LUT Function, if usable (PS3.3 C.11.2.1.2)."""
    center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(dataset.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in WINDOW_FUNCTIONS.values():
        function = "LINEAR"
    # PS3.3 C.11.2.1.2.1: width >= 1 for LINEAR; C.11.2.1.3: > 0 for the others.
    if width <= 0 or (function == "LINEAR" and width < 1):
        return None
    return center, width, function


def _first(value: object) -> float | None:
    """The first value of a multi-valued attribute such as Window Center (VM 1-n)."""
    if isinstance(value, MultiValue | list | tuple):
        return _number(value[0]) if value else None
    return _number(value)


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _palette(dataset: Dataset, frame: np.ndarray) -> Pixels:
    """PS3.3 C.7.6.3.1.5-6: indices through the Palette Color LUTs, entries scaled to 8 bits."""
    if frame.dtype.kind not in "iu":
        raise RenderError(f"palette indices of type {frame.dtype} cannot be rendered")
    start, high = min(int(frame.min()), 0), int(frame.max())
    table = apply_color_lut(np.arange(start, high + 1, dtype=np.int64), dataset)[:, :3]
    # pydicom returns the entries as stored; the descriptor's third value is their bit depth
    # (8 or 16; 8-bit entries may sit in 16-bit words), so scale 16-bit ones to 8 bits.
    descriptor = dataset.RedPaletteColorLookupTableDescriptor
    if int(descriptor[2]) > 8:
        table = (table.astype(np.uint32) * 255 + 32767) // 65535
    return _look_up(np.minimum(table, 255).astype(np.uint8), frame, start)


def _true_colour(dataset: Dataset, frame: np.ndarray) -> Pixels:
    """RGB samples of Bits Stored bits, scaled to 8 bits (PS3.3 C.7.6.3.1.2)."""
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype.kind != "u":
        raise RenderError(f"colour samples of type {frame.dtype} cannot be rendered")
    bits = dataset.get("BitsStored")
    if not isinstance(bits, int) or not 1 <= bits <= frame.dtype.itemsize * 8:
        bits = frame.dtype.itemsize * 8
    scaled = frame.astype(np.float32) * np.float32(255 / (2**bits - 1))
    pixels: Pixels = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    return pixels


def _source_region(pixels: Pixels, viewport: Viewport) -> Pixels:
    """Crop (and flip) to the viewport's source region (PS3.18 8.3.5.1.3)."""
    if not viewport.has_source_region:
        return pixels
    rows, columns = pixels.shape[:2]
    if viewport.sx >= columns or viewport.sy >= rows:
        raise RenderError(f"the viewport's source region starts outside the {columns}x{rows} frame")
    right = columns if viewport.sw is None else min(columns, viewport.sx + abs(viewport.sw))
    bottom = rows if viewport.sh is None else min(rows, viewport.sy + abs(viewport.sh))
    region = pixels[viewport.sy : bottom, viewport.sx : right]
    if viewport.sw is not None and viewport.sw < 0:
        region = region[:, ::-1]
    if viewport.sh is not None and viewport.sh < 0:
        region = region[::-1]
    return region


def _fit(picture: Image.Image, viewport: Viewport) -> Image.Image:
    """Scale to the largest size within the viewport that keeps the aspect ratio."""
    width, height = picture.size
    scale = min(viewport.width / width, viewport.height / height)
    size = (
        min(viewport.width, max(1, round(width * scale))),
        min(viewport.height, max(1, round(height * scale))),
    )
    return picture if size == picture.size else picture.resize(size, _RESAMPLE)


def _integer(text: str, name: str, pattern: re.Pattern[str]) -> int:
    if not pattern.fullmatch(text):
        raise ValueError(f"{name} must be whole numbers: {text!r}")
    return int(text)
