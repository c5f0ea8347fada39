"""The rendered-resource display pipeline (PS3.18 8.3.5; PS3.3 C.11; PS3.4 N.2).

Real frames come from every file in pydicom's test data that pydicom decodes; the cases those
files lack (MONOCHROME1 with exact values, VOI LUTs, sigmoid windows, palettes, float data) are
built here as native instances and decoded by pydicom, as the server decodes them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian

from dicomstore.dicom.render import (
    DEFAULT_JPEG_QUALITY,
    RenderError,
    RenderOptions,
    Viewport,
    Window,
    parse_quality,
    parse_viewport,
    parse_window,
    render_frame,
)

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def decoded(path: Path) -> tuple[Dataset, np.ndarray, str] | None:
    """The file's first frame as pydicom decodes it and that frame's photometric, or None."""
    try:
        ds = pydicom.dcmread(path)
        frame, meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, index=0)
    except Exception:  # not DICOM, no Pixel Data, or a file pydicom cannot decode
        return None
    return ds, frame, str(meta["photometric_interpretation"])


DECODABLE = sorted(
    path.relative_to(TEST_FILES).as_posix()
    for path in TEST_FILES.rglob("*")
    if path.is_file() and decoded(path) is not None
)


def instance(pixels: np.ndarray, photometric: str = "MONOCHROME2", **attributes: Any) -> Dataset:
    """A native instance holding `pixels` (rows x columns [x samples]) and `attributes`."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    if pixels.dtype.kind == "f":
        ds.FloatPixelData = pixels.astype("<f4").tobytes()
    else:
        ds.BitsStored, ds.HighBit = bits, bits - 1
        ds.PixelRepresentation = int(pixels.dtype.kind == "i")
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def rendered(
    ds: Dataset, photometric: str | None = None, frame: np.ndarray | None = None, **options: Any
) -> np.ndarray:
    """The PNG rendering of the instance's (decoded) first frame, as an array."""
    if frame is None:
        frame = pixel_array(ds, index=0)
    png = render_frame(
        ds,
        frame,
        photometric or ds.PhotometricInterpretation,
        RenderOptions(media_type="image/png", **options),
    )
    return np.asarray(Image.open(io.BytesIO(png)))


def row(*values: int, dtype: str = "<u2") -> np.ndarray:
    return np.array([values], dtype=dtype)


def lut_item(descriptor: list[int], data: list[int]) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new("LUTData", "US", data)
    return item


# -- every decodable test file ------------------------------------------------------------------


def test_pydicom_test_files_are_found_and_decoded() -> None:
    # pydicom 3 ships ~89 frames it decodes offline (58 top-level, the rest dicomdirtests);
    # fewer means a missing decoder plugin, and the parametrised test below would shrink silently.
    assert len(DECODABLE) >= 58


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png"])
@pytest.mark.parametrize("name", DECODABLE)
def test_rendered_image_has_the_frame_size_and_display_mode(name: str, media_type: str) -> None:
    found = decoded(TEST_FILES / name)
    assert found is not None
    ds, frame, photometric = found

    data = render_frame(ds, frame, photometric, RenderOptions(media_type=media_type))

    image = Image.open(io.BytesIO(data))
    assert image.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[media_type]
    assert image.size == (ds.Columns, ds.Rows)
    assert image.mode == ("L" if photometric.startswith("MONOCHROME") else "RGB")


def test_one_bit_frame_renders_black_and_white() -> None:
    found = decoded(TEST_FILES / "liver_1frame.dcm")
    assert found is not None
    ds, frame, photometric = found

    pixels = rendered(ds, photometric, frame)

    assert set(np.unique(frame)) == {0, 1}
    np.testing.assert_array_equal(pixels, frame * 255)


# -- VOI (PS3.3 C.11.2) -------------------------------------------------------------------------


def test_first_window_is_used_when_the_instance_has_several() -> None:
    # Window 1 (100, 51) spans 74.5..124.5; window 2 (1000, 2001) would render all three ~13.
    ds = instance(row(74, 100, 125), WindowCenter=[100, 1000], WindowWidth=[51, 2001])

    # PS3.3 C.11.2.1.2.1: ((100 - 99.5) / 50 + 0.5) * 255 = 130.05
    assert rendered(ds).tolist() == [[0, 130, 255]]


def test_window_is_applied_to_modality_values_after_rescale() -> None:
    # Stored 474, 500, 526 are modality -52, 0, 52 with slope 2 and intercept -1000.
    ds = instance(
        row(474, 500, 526), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=101
    )

    assert rendered(ds).tolist() == [[0, 129, 255]]


def test_explicit_window_overrides_the_instance_window() -> None:
    ds = instance(row(474, 500, 526), RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=5000)
    ds.WindowWidth = 10

    assert rendered(ds, window=Window(0, 101)).tolist() == [[0, 129, 255]]


def test_modality_lut_sequence_maps_stored_values_before_the_window() -> None:
    ds = instance(row(0, 1, 2), WindowCenter=200, WindowWidth=101)
    ds.ModalityLUTSequence = [lut_item([3, 0, 16], [100, 200, 300])]

    assert rendered(ds).tolist() == [[0, 129, 255]]


@pytest.mark.parametrize(
    ("descriptor", "data", "stored", "expected"),
    [
        # 8-bit entries from stored value 10: below the first is the first entry, above the last
        # is the last (PS3.3 C.11.2.1.1).
        ([4, 10, 8], [0, 50, 200, 255], [9, 10, 11, 12, 13, 14], [0, 0, 50, 200, 255, 255]),
        # 16-bit entries scale to 8 bits: 32768 * 255 / 65535 = 127.5
        ([3, 0, 16], [0, 32768, 65535], [0, 1, 2], [0, 128, 255]),
    ],
)
def test_voi_lut_sequence_maps_values_to_grey_levels(
    descriptor: list[int], data: list[int], stored: list[int], expected: list[int]
) -> None:
    ds = instance(row(*stored))
    ds.VOILUTSequence = [lut_item(descriptor, data)]

    assert rendered(ds).tolist() == [expected]


def test_voi_lut_sequence_is_preferred_to_a_window() -> None:
    ds = instance(row(0, 1, 2), WindowCenter=1000, WindowWidth=10)
    ds.VOILUTSequence = [lut_item([3, 0, 8], [255, 0, 255])]

    assert rendered(ds).tolist() == [[255, 0, 255]]


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        # PS3.3 C.11.2.1.3.1: 255 / (1 + exp(-4 (x - 100) / 40)) at 50, 95, 100, 130
        ("SIGMOID", [2, 96, 128, 243]),
        # PS3.3 C.11.2.1.3.2: ((x - 100) / 40 + 0.5) * 255
        ("LINEAR_EXACT", [0, 96, 128, 255]),
        # PS3.3 C.11.2.1.2.1: ((x - 99.5) / 39 + 0.5) * 255
        ("LINEAR", [0, 98, 131, 255]),
    ],
)
def test_voi_lut_function_of_the_instance_shapes_the_window(
    function: str, expected: list[int]
) -> None:
    ds = instance(row(50, 95, 100, 130), WindowCenter=100, WindowWidth=40, VOILUTFunction=function)

    assert rendered(ds).tolist() == [expected]


@pytest.mark.parametrize(
    ("window", "expected"),
    [("100,40,sigmoid", [2, 96, 128, 243]), ("100,40,linear-exact", [0, 96, 128, 255])],
)
def test_window_parameter_function_shapes_the_window(window: str, expected: list[int]) -> None:
    ds = instance(row(50, 95, 100, 130))

    assert rendered(ds, window=parse_window(window)).tolist() == [expected]


def test_instance_without_voi_renders_its_range_from_black_to_white() -> None:
    ds = instance(row(1000, 1010, 1020, 1040))

    assert rendered(ds).tolist() == [[0, 64, 128, 255]]


def test_signed_frame_without_voi_renders_its_range_from_black_to_white() -> None:
    ds = instance(row(-2000, 0, 2000, dtype="<i2"))

    assert rendered(ds).tolist() == [[0, 128, 255]]


def test_signed_frame_with_bits_stored_below_bits_allocated_is_windowed_as_signed() -> None:
    # 0x0800 is -2048 in 12 bits; pydicom sign-extends it before the pipeline sees it.
    ds = instance(row(0x0800, 0x0000, 0x07FF), BitsStored=12, HighBit=11, PixelRepresentation=1)
    ds.WindowCenter, ds.WindowWidth = 0, 4096

    assert rendered(ds).tolist() == [[0, 128, 255]]


def test_float_frame_renders_its_finite_range_from_black_to_white() -> None:
    ds = instance(np.array([[-1.5, 0.0, 1.5, np.nan]], dtype=np.float32))

    assert rendered(ds).tolist() == [[0, 128, 255, 0]]


# -- polarity (PS3.3 C.7.6.3.1.2, C.11.6) -------------------------------------------------------


def test_monochrome1_renders_brighter_stored_values_darker() -> None:
    ds = instance(row(0, 100, 200), "MONOCHROME1")

    assert rendered(ds).tolist() == [[255, 127, 0]]


def test_monochrome1_window_is_inverted_after_voi() -> None:
    ds = instance(row(74, 100, 125), "MONOCHROME1", WindowCenter=100, WindowWidth=51)

    assert rendered(ds).tolist() == [[255, 125, 0]]


def test_presentation_lut_shape_inverse_inverts_monochrome2() -> None:
    ds = instance(row(0, 100, 200), PresentationLUTShape="INVERSE")

    assert rendered(ds).tolist() == [[255, 127, 0]]


def test_monochrome1_with_presentation_lut_shape_inverse_is_inverted_once() -> None:
    ds = instance(row(0, 100, 200), "MONOCHROME1", PresentationLUTShape="INVERSE")

    assert rendered(ds).tolist() == [[255, 127, 0]]


# -- colour --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "red", "green", "blue", "expected"),
    [
        (8, b"\x00\x80\xff", b"\xff\x00\x10", b"\x20\x30\x40", [[0, 255, 32], [128, 0, 48]]),
        (
            16,
            np.array([0, 32768, 65535], "<u2").tobytes(),
            np.array([65535, 0, 4112], "<u2").tobytes(),
            np.array([8224, 12336, 16448], "<u2").tobytes(),
            [[0, 255, 32], [128, 0, 48]],
        ),
    ],
)
def test_palette_colour_indices_render_through_the_lookup_tables(
    bits: int, red: bytes, green: bytes, blue: bytes, expected: list[list[int]]
) -> None:
    ds = instance(row(0, 1, dtype="u1"), "PALETTE COLOR")
    for colour, data in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [3, 0, bits])
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)

    assert rendered(ds).tolist() == [expected]


def test_sixteen_bit_rgb_scales_to_eight_bits() -> None:
    ds = instance(np.array([[[0, 32768, 65535], [65535, 0, 257]]], dtype="<u2"), "RGB")

    assert rendered(ds).tolist() == [[[0, 128, 255], [255, 0, 1]]]


def test_ybr_full_frame_is_converted_to_rgb() -> None:
    # Pure red in YBR_FULL (PS3.3 C.7.6.3.1.2): Y 76, Cb 85, Cr 255.
    frame = np.array([[[76, 85, 255], [255, 128, 128]]], dtype=np.uint8)
    ds = instance(frame, "YBR_FULL")

    pixels = rendered(ds, "YBR_FULL", frame)

    np.testing.assert_allclose(pixels, [[[255, 0, 0], [255, 255, 255]]], atol=2)


def test_window_parameter_is_ignored_for_colour() -> None:
    frame = np.array([[[10, 20, 30]]], dtype=np.uint8)

    assert rendered(instance(frame, "RGB"), window=Window(0, 1)).tolist() == [[[10, 20, 30]]]


@pytest.mark.parametrize(
    ("photometric", "frame"),
    [
        ("ARGB", np.zeros((2, 2, 4), np.uint8)),
        ("CMYK", np.zeros((2, 2, 4), np.uint8)),
        ("RGB", np.zeros((2, 2), np.uint8)),
        ("MONOCHROME2", np.zeros((2, 2, 3), np.uint8)),
        ("RGB", np.zeros((2, 2, 3), np.int16)),
        ("MONOCHROME2", np.zeros((2, 0), np.uint8)),
    ],
)
def test_frame_that_cannot_be_displayed_is_a_render_error(
    photometric: str, frame: np.ndarray
) -> None:
    with pytest.raises(RenderError):
        render_frame(Dataset(), frame, photometric, RenderOptions())


def test_palette_colour_without_its_lookup_tables_is_a_render_error() -> None:
    ds = instance(row(0, 1, dtype="u1"), "PALETTE COLOR")

    with pytest.raises(RenderError, match="Palette"):
        rendered(ds)


# -- viewport (PS3.18 8.3.5.1.3) ----------------------------------------------------------------


@pytest.mark.google_behaviour("rendered-parameters")
@pytest.mark.parametrize(
    ("columns", "rows", "viewport", "size"),
    [
        (512, 512, "256,128", (128, 128)),
        (200, 100, "50,50", (50, 25)),
        (100, 200, "50,50", (25, 50)),
        (64, 64, "128,256", (128, 128)),
        (300, 100, "300,100", (300, 100)),
    ],
)
@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png"])
def test_viewport_fits_the_image_keeping_its_aspect_ratio(
    columns: int, rows: int, viewport: str, size: tuple[int, int], media_type: str
) -> None:
    frame = (np.arange(rows * columns) % 4096).astype(np.uint16).reshape(rows, columns)
    ds = instance(frame)

    options = RenderOptions(media_type=media_type, viewport=parse_viewport(viewport))
    data = render_frame(ds, pixel_array(ds), "MONOCHROME2", options)

    assert Image.open(io.BytesIO(data)).size == size


@pytest.mark.google_behaviour("rendered-parameters")
def test_viewport_source_region_crops_and_flips_before_scaling() -> None:
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17  # no VOI: 0..255 renders as is
    ds = instance(frame)

    assert rendered(ds, viewport=parse_viewport("2,2,1,2,2,2")).tolist() == [
        [153, 170],
        [221, 238],
    ]
    assert rendered(ds, viewport=parse_viewport("2,2,1,2,-2,-2")).tolist() == [
        [238, 221],
        [170, 153],
    ]


def test_viewport_source_region_outside_the_frame_is_a_render_error() -> None:
    ds = instance(np.zeros((4, 4), np.uint8))

    with pytest.raises(RenderError, match="outside"):
        rendered(ds, viewport=parse_viewport("2,2,4,0,,"))


# -- encoding ------------------------------------------------------------------------------------


def test_jpeg_quality_trades_size_and_defaults_to_the_documented_value() -> None:
    found = decoded(TEST_FILES / "CT_small.dcm")
    assert found is not None
    ds, frame, photometric = found

    def size(quality: int | None) -> int:
        return len(render_frame(ds, frame, photometric, RenderOptions(quality=quality)))

    assert size(10) < size(95)
    assert size(None) == size(DEFAULT_JPEG_QUALITY)


@pytest.mark.parametrize(
    "options",
    [{"media_type": "image/gif"}, {"quality": 0}, {"quality": 101}],
)
def test_render_options_refuse_what_cannot_be_encoded(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RenderOptions(**options)


# -- query parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "viewport"),
    [
        ("512,256", Viewport(512, 256)),
        ("10000,1", Viewport(10_000, 1)),
        ("64,64,10,20,30,40", Viewport(64, 64, 10, 20, 30, 40)),
        ("64,64,,,-30,", Viewport(64, 64, 0, 0, -30, None)),
    ],
)
def test_parse_viewport_reads_the_parameter(text: str, viewport: Viewport) -> None:
    assert parse_viewport(text) == viewport


def test_viewport_reports_whether_a_source_region_was_given() -> None:
    assert not parse_viewport("64,64").has_source_region
    assert parse_viewport("64,64,0,0,10,10").has_source_region


@pytest.mark.google_behaviour("rendered-limits")
@pytest.mark.parametrize(
    "text",
    [
        "",
        "512",
        "512,",
        "a,b",
        "512.5,512",
        "0,10",
        "10,0",
        "10001,10",
        "-1,5",
        "1_0,5",
        "1,2,3",
        "1,2,3,4,5,6,7",
        "1,2,-1,0,1,1",
        "1,2,0,0,0,1",
        "1,2,0,0,1.5,1",
    ],
)
def test_parse_viewport_refuses_a_malformed_value(text: str) -> None:
    with pytest.raises(ValueError, match="viewport"):
        parse_viewport(text)


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("40,400,linear", Window(40, 400, "linear")),
        ("-600.5,1500,LINEAR-EXACT", Window(-600.5, 1500, "linear_exact")),
        ("40,0.5,linear_exact", Window(40, 0.5, "linear_exact")),
        ("40,400,sigmoid", Window(40, 400, "sigmoid")),
        ("40,400", Window(40, 400, "linear")),
    ],
)
def test_parse_window_reads_the_parameter(text: str, window: Window) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize(
    "text",
    [
        "",
        "40",
        "a,400,linear",
        "40,,linear",
        "nan,400,linear",
        "40,inf,linear",
        "40,0.5,linear",
        "40,0,sigmoid",
        "40,-1,linear-exact",
        "40,400,cubic",
        "40,400,linear,1",
    ],
)
def test_parse_window_refuses_a_malformed_value(text: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


@pytest.mark.parametrize(("text", "quality"), [("1", 1), ("75", 75), ("100", 100)])
def test_parse_quality_reads_the_parameter(text: str, quality: int) -> None:
    assert parse_quality(text) == quality


@pytest.mark.parametrize("text", ["", "0", "101", "50.5", "-5", "high"])
def test_parse_quality_refuses_a_malformed_value(text: str) -> None:
    with pytest.raises(ValueError, match="quality"):
        parse_quality(text)
