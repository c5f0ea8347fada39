"""What `dicomstore-pixel-bench` measures: PS3.18 paths under each server's DICOMweb root, each
from 1 or 4 loops of one keep-alive connection:

1. rendered: `/rendered` of the CT as `image/jpeg`, at c=1 and c=4, and with
   `?window=40,400,linear` at c=4 (Orthanc's plugin ignores the instance's window otherwise);
2. transcode: the JPEG 2000 CT as Explicit VR Little Endian, single-part
   `application/dicom; transfer-syntax=1.2.840.10008.1.2.1` where the server takes it, else the
   one-part `multipart/related; type="application/dicom"` equivalent (Orthanc's plugin 1.7
   answers 400 to single part), at c=1 and c=4;
3. frames: `/frames/N` as `multipart/related; type="application/octet-stream";
   transfer-syntax=1.2.840.10008.1.2.1` (decoded) at c=4: frame 1 of the JPEG 2000 CT, frame 1
   of the native CT, and frames 1-8 in turn of the multi-frame instance.

dicomstore and Orthanc share the URL shape (DICOMweb root + PS3.18 path); they differ in the
Accept they take, which the one-time check chooses.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian

from dicomstore_bench.pixel_images import FRAMES, Image

WORKLOADS = ("rendered", "transcode", "frames")

EXPLICIT_LE = str(ExplicitVRLittleEndian)
JPEG = "image/jpeg"
DICOM_LE = f"application/dicom; transfer-syntax={EXPLICIT_LE}"
MULTIPART_DICOM_LE = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
FRAMES_LE = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'


@dataclass(frozen=True)
class Case:
    """One request shape: `suffixes` of the instance's URL in turn, the first of `accepts` the
    server answers correctly, at each of `concurrency`."""

    name: str
    workload: str
    image: str
    suffixes: tuple[str, ...]
    accepts: tuple[str, ...]
    concurrency: tuple[int, ...]
    per_s: str = "req/s"

    def urls(self, root: str, image: Image) -> list[str]:
        """The URLs asked in turn, under the DICOMweb root `root`."""
        return [url(root, image, suffix) for suffix in self.suffixes]


def url(root: str, image: Image, suffix: str) -> str:
    """`suffix` of `image`'s PS3.18 URL under the DICOMweb root `root` (no trailing slash)."""
    return root + image.path + suffix


RENDERED = Case("rendered CT -> JPEG", "rendered", "ct", ("/rendered",), (JPEG,), (1, 4))

CASES = (
    RENDERED,
    Case(
        "rendered CT -> JPEG ?window=40,400,linear",
        "rendered",
        "ct",
        ("/rendered?window=40,400,linear",),
        (JPEG,),
        (4,),
    ),
    Case(
        "transcode J2K CT -> explicit LE",
        "transcode",
        "j2k",
        ("",),
        (DICOM_LE, MULTIPART_DICOM_LE),
        (1, 4),
    ),
    Case(
        "frame 1 of J2K CT, decoded",
        "frames",
        "j2k",
        ("/frames/1",),
        (FRAMES_LE,),
        (4,),
        "frames/s",
    ),
    Case("frame 1 of native CT", "frames", "ct", ("/frames/1",), (FRAMES_LE,), (4,), "frames/s"),
    Case(
        "frames 1-8 of 8-frame J2K, decoded",
        "frames",
        "multi",
        tuple(f"/frames/{n}" for n in range(1, FRAMES + 1)),
        (FRAMES_LE,),
        (4,),
        "frames/s",
    ),
)
