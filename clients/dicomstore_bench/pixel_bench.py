"""`dicomstore-pixel-bench`: pixel work (rendering, transcoding, decoded frames) of dicomstore
beside Orthanc, in one run.

Both servers run as subprocesses on loopback on fresh storage (see `servers.py`): `dicomstore
serve`, and Orthanc with its DICOMweb plugin and, when installed (Debian `orthanc-gdcm`), its GDCM
plugin, without which Orthanc decodes no JPEG 2000. Each gets the same instances, generated with
numpy and pydicom from a fixed seed, over STOW-RS:

- a 512x512 CT, 16-bit signed, MONOCHROME2, Rescale 1/-1024, Window 40/400, Explicit VR Little
  Endian: a body outline, fat, lungs, a heart, a spine, soft gradients and noise;
- the same pixels as JPEG 2000 lossless (1.2.840.10008.1.2.4.90) under its own SOP Instance UID;
- an 8-frame Multi-frame Grayscale Word Secondary Capture of such slices (12 bits stored),
  JPEG 2000 lossless.

Measured (PS3.18 paths under each server's DICOMweb root), each for --duration seconds after
WARMUP_S of warm-up, from 1 or 4 loops of one keep-alive connection each:
1. rendered: `/rendered` of the CT as `image/jpeg`, at c=1 and c=4, and with
   `?window=40,400,linear` at c=4 (Orthanc's plugin ignores the instance's window otherwise);
2. transcode: the JPEG 2000 CT as Explicit VR Little Endian, single-part
   `application/dicom; transfer-syntax=1.2.840.10008.1.2.1` where the server takes it, else the
   one-part `multipart/related; type="application/dicom"` equivalent (Orthanc's plugin 1.7
   answers 400 to single part), at c=1 and c=4;
3. frames: `/frames/N` as `multipart/related; type="application/octet-stream";
   transfer-syntax=1.2.840.10008.1.2.1` (decoded) at c=4: frame 1 of the JPEG 2000 CT, frame 1
   of the native CT, and frames 1-8 in turn of the multi-frame instance.

Before timing, each request is sent once and its answer checked outside the clock: status, media
type, a JPEG of 512x512 (and how far it is from the instance's window), an Explicit VR Little
Endian instance whose pixels equal the original, frame bytes equal to the original's. A server
answering an error status is "not available" for that measurement (reported, not timed); a 200
with a wrong body is a problem. Rows: p50, p99 (ms), requests or frames per second, the
server's CPU time per request (process tree, /proc, warm-up included); ratio = dicomstore /
Orthanc. With --repeat N the servers and instances stay and the measurements run N times; figures
are min-max over the rounds and a target is met when every round meets it.

A server that dies (Orthanc 1.10 with GDCM 1.5 segfaults now and then decoding JPEG 2000) is
started again on fresh storage and loaded, and the run it died in is run again, up to ATTEMPTS
runs; its row says so. Exit status: 0; 1 when an answer checked was wrong or a timed request to
dicomstore failed (Orthanc's failures are shown, not counted: it is the reference); 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
from PIL import Image as PilImage
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import compress
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from dicomstore_bench.corpus import ROOT
from dicomstore_bench.load import WARMUP_S, Tally, drive, post_instances, retrieve_op
from dicomstore_bench.pixel_report import OURS, THEIRS, Row, print_table, tally_rows
from dicomstore_bench.report import finite, machine, machine_line
from dicomstore_bench.servers import (
    Target,
    dicomstore_server,
    find_orthanc,
    orthanc_server,
    run_async,
)

SEED = 20250611
SIZE = 512
FRAMES = 8
WINDOW = (40.0, 400.0)  # center, width (HU)
INTERCEPT = -1024.0
RENDERED_P50_MS = 30.0
#: Throughput at c=4 over c=1 per core the server can use, at least.
SCALING_PER_CORE = 0.75
#: Mean |difference| (of 255) from the reference rendering below which the window was applied.
WINDOWED = 5.0
REFUSED = "refused: "
#: Runs of a measurement in which the server died before it is given up.
ATTEMPTS = 3
ORTHANC_GDCM = "/usr/share/orthanc/plugins/libOrthancGdcm.so"
WORKLOADS = ("rendered", "transcode", "frames")

EXPLICIT_LE = str(ExplicitVRLittleEndian)
JPEG = "image/jpeg"
DICOM_LE = f"application/dicom; transfer-syntax={EXPLICIT_LE}"
MULTIPART_DICOM_LE = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
FRAMES_LE = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'


# ---------------------------------------------------------------------------------------------
# Instances


@dataclass(frozen=True)
class Image:
    """One generated instance: its UIDs, Part 10 bytes and stored pixel values."""

    label: str
    series: int
    data: bytes
    pixels: npt.NDArray[np.int16] | npt.NDArray[np.uint16]  # frames x rows x columns
    hu: npt.NDArray[np.float32]  # the first frame after the modality LUT

    study_uid = f"{ROOT}.7.1"

    @property
    def series_uid(self) -> str:
        return f"{self.study_uid}.{self.series}"

    @property
    def sop_uid(self) -> str:
        return f"{self.series_uid}.1"

    @property
    def path(self) -> str:
        return f"/studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"

    def frame(self, number: int) -> bytes:
        """Frame `number` (from 1) as native little-endian bytes."""
        pixels = self.pixels[number - 1]
        return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()


def slice_hu(rng: np.random.Generator, z: float) -> npt.NDArray[np.float32]:
    """An axial slice, in Hounsfield units, `z` in [0, 1) along the body."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> npt.NDArray[np.bool_]:
        inside: npt.NDArray[np.bool_] = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
        return inside

    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    hu[ellipse(256, 270, 210, 160 + 8 * z)] = -100  # subcutaneous fat
    hu[ellipse(256, 270, 196, 146 + 8 * z)] = 45  # muscle and organs
    hu += np.where(hu > -500, 12 * np.sin(x / 41) * np.cos(y / 57), 0).astype(np.float32)
    for cx in (170.0, 342.0):
        lung = ellipse(cx, 245, 70 - 10 * z, 95)
        hu[lung] = -850 + 40 * np.cos((y[lung] - 245) / 30)
    hu[ellipse(285, 250, 55 + 10 * z, 50)] = 40  # heart
    hu[ellipse(256, 372, 26, 24)] = 700  # vertebral cortex
    hu[ellipse(256, 372, 18, 16)] = 250  # cancellous bone
    hu[ellipse(256, 402, 11, 10)] = 30  # spinal canal
    hu += rng.normal(0, 10, hu.shape).astype(np.float32)
    rounded: npt.NDArray[np.float32] = np.round(hu)
    return rounded


def _dataset(sop_class: UID, series: int, frames: npt.NDArray[np.int16 | np.uint16]) -> Dataset:
    series_uid = f"{Image.study_uid}.{series}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(f"{series_uid}.1")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "20250611", "120000"
    ds.Modality = "CT" if sop_class == CTImageStorage else "OT"
    ds.PatientName, ds.PatientID = "BENCH^PIXEL", "PIXEL1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = Image.study_uid, series_uid
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", series, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = SIZE, SIZE
    signed = frames.dtype == np.int16
    ds.BitsAllocated, ds.BitsStored = 16, 16 if signed else 12
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(signed)
    ds.ImagePositionPatient = [-179.2, -179.2, 0.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
    ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
    return ds


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _j2k(ds: Dataset, series: int) -> bytes:
    """`ds` as JPEG 2000 lossless, with a UID of its own."""
    out = copy.deepcopy(ds)
    compress(out, JPEG2000Lossless, generate_instance_uid=False)
    out.SeriesInstanceUID = f"{Image.study_uid}.{series}"
    out.SOPInstanceUID = UID(f"{out.SeriesInstanceUID}.1")
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.SeriesNumber = series
    return _encode(out)


def generate() -> dict[str, Image]:
    """The CT, its JPEG 2000 twin and the JPEG 2000 multi-frame instance, by name."""
    rng = np.random.default_rng(SEED)
    hu = slice_hu(rng, 0.0)
    ct = (hu - INTERCEPT).astype(np.int16)[np.newaxis]
    ct_ds = _dataset(CTImageStorage, 1, ct)
    stack = np.stack([slice_hu(rng, z / FRAMES) for z in range(FRAMES)])
    multi = np.clip(stack - INTERCEPT, 0, 4095).astype(np.uint16)
    multi_ds = _dataset(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, 3, multi)
    return {
        "ct": Image("CT", 1, _encode(ct_ds), ct, hu),
        "j2k": Image("CT JPEG 2000", 2, _j2k(ct_ds, 2), ct, hu),
        "multi": Image("8-frame JPEG 2000", 3, _j2k(multi_ds, 3), multi, stack[0]),
    }


# ---------------------------------------------------------------------------------------------
# What is measured, and the check of an answer


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
    latency: bool = True


CASES = (
    Case("rendered CT -> JPEG", "rendered", "ct", ("/rendered",), (JPEG,), (1, 4)),
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


class Unavailable(Exception):
    """The server answered an error status: it does not do this."""


class WrongAnswer(Exception):
    """The server answered 200 with something else than asked."""


def parts(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart/related body (PS3.18 8.6.1.2)."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        raise WrongAnswer(f"multipart answer without a boundary: {content_type}")
    out = []
    for chunk in (b"\r\n" + body).split(b"\r\n--" + boundary[1].encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^content-type:[ \t]*(.*?)[ \t]*\r?$", head)
        out.append((found[1].decode() if found else "", payload))
    return out


def payload(reply: httpx.Response, accept: str, part_type: str) -> bytes:
    """The one body asked for: the whole answer, or its single part when multipart."""
    content_type = reply.headers.get("content-type", "")
    if not accept.startswith("multipart/"):
        if not content_type.startswith(part_type):
            raise WrongAnswer(f"Content-Type {content_type}, not {part_type}")
        return reply.content
    if not content_type.startswith("multipart/related"):
        raise WrongAnswer(f"Content-Type {content_type}, not multipart/related")
    found = parts(reply.content, content_type)
    if len(found) != 1:
        raise WrongAnswer(f"{len(found)} parts, not 1")
    if not found[0][0].startswith(part_type):
        raise WrongAnswer(f"part of Content-Type {found[0][0]!r}, not {part_type}")
    return found[0][1]


def reason(reply: httpx.Response) -> str:
    """The message of an error answer: Google's `error.message`, Orthanc's `Details`, or the
    start of the body."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        found = error.get("message") if isinstance(error, dict) else body.get("Details")
        if isinstance(found, str):
            return found
    return " ".join(reply.text.split())[:160]


def window_reference(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """8-bit grey levels of the linear VOI LUT function (PS3.3 C.11.2.1.2.1) at WINDOW."""
    center, width = WINDOW
    scaled = ((hu - (center - 0.5)) / (width - 1) + 0.5) * 255
    clipped: npt.NDArray[np.float32] = np.clip(scaled, 0, 255)
    return clipped


def check(case: Case, image: Image, reply: httpx.Response, accept: str) -> str:
    """What the answer is, for the notes; raises when it is not the one asked for."""
    if reply.status_code != 200:
        raise Unavailable(f"HTTP {reply.status_code} {reason(reply)}")
    if case.workload == "rendered":
        body = payload(reply, accept, JPEG)
        with PilImage.open(io.BytesIO(body)) as picture:
            if picture.format != "JPEG" or picture.size != (SIZE, SIZE):
                raise WrongAnswer(f"a {picture.format} of {picture.size}, not a JPEG of {SIZE}^2")
            grey = np.asarray(picture.convert("L"), dtype=np.float32)
        off = float(np.abs(grey - window_reference(image.hu)).mean())
        applied = "" if off < WINDOWED else ", not the instance's window"
        return f"{len(body):,} B JPEG, {off:.1f}/255 from window 40/400{applied}"
    if case.workload == "transcode":
        body = payload(reply, accept, "application/dicom")
        ds = dcmread(io.BytesIO(body))
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax != ExplicitVRLittleEndian:
            raise WrongAnswer(f"transfer syntax {syntax}, not {EXPLICIT_LE}")
        if not np.array_equal(ds.pixel_array, image.pixels[0]):
            raise WrongAnswer("the transcoded pixels differ from the original's")
        return f"{len(body):,} B, {syntax}, pixels equal"
    body = payload(reply, accept, "application/octet-stream")
    number = int(str(reply.url).rsplit("/", 1)[1])
    if body != image.frame(number):
        raise WrongAnswer(f"frame {number}: {len(body):,} B that differ from the original frame")
    return f"{len(body):,} B, the original frame"


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Settings:
    duration: float
    repeat: int
    workloads: tuple[str, ...] = WORKLOADS


@dataclass
class Chosen:
    """How a server is asked for a case, once its answer checked out."""

    accept: str
    answer: str
    refused: list[str] = field(default_factory=list)  # the accepts tried first, and why not
    least: int = 1  # a timed answer shorter than this is a failure: half the checked one's size


def phase(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def exit_signal(pid: int) -> int | None:
    """None while `pid` runs, else the signal that ended it (0 for an exit): /proc/PID/stat
    field 52 of the zombie (a server is our child, so it stays one until its context ends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    if fields[0] not in ("Z", "X"):
        return None
    return int(fields[49]) & 0x7F if len(fields) > 49 else 0


Restart = Callable[[str], Target]


class Bench:
    """Verification, then the timed runs, of every case against every server. A server that
    dies is started again on fresh storage (`restart`) and loaded, its run counted as crashed
    and run once more."""

    def __init__(self, targets: list[Target], settings: Settings, restart: Restart) -> None:
        self.targets = {target.name: target for target in targets}
        self.settings = settings
        self.restart = restart
        self.cases = [c for c in CASES if c.workload in settings.workloads]
        self.images = generate()
        self.chosen: dict[tuple[str, str], Chosen] = {}  # (case, server) -> how
        self.missing: dict[str, str] = {}  # "case (server)" -> why
        self.problems: list[str] = []
        self.crashes: list[str] = []
        self.smallest: dict[tuple[str, str], int] = {}  # (case, server) -> checked answer size
        self.tallies: dict[tuple[str, int], dict[str, list[Tally]]] = {}

    async def load(self, target: Target) -> None:
        phase(f"storing {len(self.images)} instances in {target.name}")
        async with httpx.AsyncClient(timeout=60) as client:
            for image in self.images.values():
                await post_instances(client, target, [image.data])

    async def _died(self, name: str, doing: str) -> str | None:
        """None while server `name` runs; else how it ended, and it is started again."""
        ended = exit_signal(self.targets[name].pid)
        if ended is None:
            return None
        how = f"signal {signal.Signals(ended).name}" if ended else "an exit"
        self.crashes.append(f"{name} died ({how}) during {doing}; started again")
        phase(f"{name} died ({how}) during {doing}: starting it again")
        self.targets[name] = self.restart(name)
        await self.load(self.targets[name])
        return how

    async def verify(self) -> None:
        """Choose how each server is asked for each case: the first Accept it answers right."""
        async with httpx.AsyncClient(timeout=60) as client:
            for case, name in ((c, n) for c in self.cases for n in list(self.targets)):
                refused: list[str] = []
                for accept in case.accepts:
                    answer = await self._check(client, case, name, accept)
                    if answer.startswith(REFUSED):
                        refused.append(f"{accept}: {answer.removeprefix(REFUSED)}")
                        continue
                    least = self.smallest.pop((case.name, name), 2) // 2
                    self.chosen[(case.name, name)] = Chosen(accept, answer, refused, least)
                    break
                else:
                    self.missing[f"{case.name} ({name})"] = "; ".join(refused)

    async def _check(self, client: httpx.AsyncClient, case: Case, name: str, accept: str) -> str:
        """What the server answers to each of the case's URLs, checked; REFUSED and why when
        it answers an error status, the wrong thing, or dies ATTEMPTS times."""
        image = self.images[case.image]
        deaths: list[str] = []
        answer = ""
        for suffix in case.suffixes:
            while True:
                url = self.targets[name].root + image.path + suffix
                try:
                    reply = await client.get(url, headers={"Accept": accept})
                    answer = check(case, image, reply, accept)
                    key = (case.name, name)
                    self.smallest[key] = min(len(reply.content), self.smallest.get(key, 1 << 40))
                    break
                except (Unavailable, httpx.HTTPError) as exc:
                    died = await self._died(name, f"the check of {case.name}")
                    if died is None:
                        return REFUSED + (str(exc) or type(exc).__name__)
                    deaths.append(died)
                    if len(deaths) == ATTEMPTS:
                        return f"{REFUSED}the server died each time ({', '.join(deaths)})"
                except (WrongAnswer, ValueError, OSError) as exc:
                    self.problems.append(f"{case.name} ({name}) {accept}: {exc}")
                    return f"{REFUSED}wrong answer: {exc}"
        return answer

    async def measure(self) -> None:
        for case in self.cases:
            for concurrency in case.concurrency:
                runs = self.tallies.setdefault((case.name, concurrency), {})
                for name in list(self.targets):
                    how = self.chosen.get((case.name, name))
                    if how is not None:
                        tally = await self._timed(case, concurrency, name, how)
                        runs.setdefault(name, []).append(tally)

    async def _timed(self, case: Case, concurrency: int, name: str, how: Chosen) -> Tally:
        doing = f"{case.name} c={concurrency}"
        deaths: list[str] = []
        for _ in range(ATTEMPTS):
            phase(f"{doing} {name}")
            target = self.targets[name]
            urls = [target.root + self.images[case.image].path + s for s in case.suffixes]
            op = retrieve_op(urls, how.accept, how.least)
            tally = await drive(op, concurrency, duration=self.settings.duration, server=target.pid)
            died = await self._died(name, doing)
            if died is None:
                if deaths:
                    tally.errors[f"died ({', '.join(deaths)}); started and run again"] = 1
                return tally
            deaths.append(died)
        failed = Tally()
        failed.errors[f"died in each of {ATTEMPTS} runs ({', '.join(deaths)})"] = 1
        return failed

    async def run(self) -> None:
        for target in self.targets.values():
            await self.load(target)
        await self.verify()
        for number in range(self.settings.repeat):
            if self.settings.repeat > 1:
                phase(f"round {number + 1} of {self.settings.repeat}")
            await self.measure()

    def rows(self) -> list[Row]:
        out: list[Row] = []
        for case in self.cases:
            for concurrency in case.concurrency:
                tallies = self.tallies.get((case.name, concurrency), {})
                if not tallies:
                    continue
                rows = tally_rows(f"{case.name} c={concurrency}", case.per_s, tallies)
                out += rows
                if case is CASES[0]:
                    self._rendered_targets(concurrency, rows)
            if case is CASES[0] and len(case.concurrency) > 1:
                out += self._scaling(case)
        return out

    def _rendered_targets(self, concurrency: int, rows: list[Row]) -> None:
        p50, rate = rows[0], rows[2]
        if concurrency == 1 and OURS in p50.values:
            target = f"< {RENDERED_P50_MS:g} ms"
            p50.aim(target, lambda v: v < RENDERED_P50_MS, p50.values[OURS])
        if concurrency == 4 and OURS in rate.values and THEIRS in rate.values:
            rate.aim(">= orthanc", lambda v: v >= 1, rate.ratios)

    def _scaling(self, case: Case) -> list[Row]:
        one, four = (self.tallies.get((case.name, c), {}) for c in (1, 4))
        values = {
            server: [b.per_s / a.per_s for a, b in zip(one[server], four[server], strict=True)]
            for server in one
            if server in four
        }
        if not values:
            return []
        row = Row(f"{case.name} c=4 / c=1", "x req/s", values)
        floor = SCALING_PER_CORE * min(4, len(os.sched_getaffinity(0)))
        if OURS in values:
            row.aim(f">= {floor:.1f}x", lambda v: v >= floor, values[OURS])
        return [row]

    def notes(self) -> list[str]:
        out = []
        for case in self.cases:
            for name in self.targets:
                how = self.chosen.get((case.name, name))
                if how is None:
                    continue
                line = f"{case.name} ({name}): Accept {how.accept} -> {how.answer}"
                if how.refused:
                    line += f" (first refused: {'; '.join(how.refused)})"
                out.append(line)
        return out + self.crashes


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicomstore-pixel-bench", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per timed run")
    p.add_argument("--repeat", type=_positive, default=1, help="rounds; figures are min-max")
    p.add_argument(
        "--workloads",
        type=_workloads,
        default=WORKLOADS,
        help="comma-separated subset of rendered,transcode,frames (default: all)",
    )
    p.add_argument("--no-orthanc", action="store_true", help="measure dicomstore alone")
    p.add_argument("--no-dicomstore", action="store_true", help="measure Orthanc alone")
    p.add_argument(
        "--orthanc-bin", help="Orthanc executable (default: Orthanc on PATH or /usr/sbin)"
    )
    p.add_argument("--orthanc-plugin", help="libOrthancDicomWeb.so (default: the Debian path)")
    p.add_argument(
        "--orthanc-gdcm",
        default=ORTHANC_GDCM,
        help=f"libOrthancGdcm.so, Orthanc's JPEG 2000 decoder (default {ORTHANC_GDCM})",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _workloads(text: str) -> tuple[str, ...]:
    named = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(named) - set(WORKLOADS))
    if unknown or not named:
        what = f"unknown workload {', '.join(unknown)}" if unknown else "no workload named"
        raise argparse.ArgumentTypeError(f"{what}: choose from {','.join(WORKLOADS)}")
    return tuple(name for name in WORKLOADS if name in named)


def _orthanc_plugins(tmp: Path, dicomweb: str, gdcm: str) -> tuple[str, str]:
    """A folder of Orthanc plugins (its `Plugins` setting takes folders) with the DICOMweb
    plugin, and GDCM's when present; and what it holds, for the header."""
    folder = tmp / "orthanc-plugins"
    folder.mkdir()
    (folder / Path(dicomweb).name).symlink_to(dicomweb)
    if gdcm and Path(gdcm).is_file():
        (folder / Path(gdcm).name).symlink_to(gdcm)
        return str(folder), "with GDCM"
    return str(folder), f"without GDCM ({gdcm or 'none'} missing: no JPEG 2000)"


class Servers:
    """The servers measured, each from a factory of context managers, started on fresh storage
    in a folder of its own under `tmp` and again when one died (`restart`)."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.factories: dict[str, Callable[[Path], contextlib.AbstractContextManager[Target]]] = {}
        self.starts: dict[str, int] = {}

    def start(
        self, name: str, factory: Callable[[Path], contextlib.AbstractContextManager[Target]]
    ) -> Target:
        self.factories[name] = factory
        return self.restart(name)

    def restart(self, name: str) -> Target:
        self.starts[name] = self.starts.get(name, 0) + 1
        folder = self.tmp / f"{name}-{self.starts[name]}"
        folder.mkdir()
        return self.stack.enter_context(self.factories[name](folder))


def _start(args: argparse.Namespace, servers: Servers, versions: dict[str, str]) -> list[Target]:
    targets = []
    if args.no_dicomstore:
        versions[OURS] = "skipped (--no-dicomstore)"
    else:
        targets.append(servers.start(OURS, dicomstore_server))
        versions[OURS] = targets[-1].version
    found = (
        "skipped (--no-orthanc)"
        if args.no_orthanc
        else find_orthanc(args.orthanc_bin, args.orthanc_plugin)
    )
    if isinstance(found, str):
        versions[THEIRS] = found
        print(f"Orthanc {found}", file=sys.stderr)
    else:
        binary, (plugins, gdcm) = (
            found[0],
            _orthanc_plugins(servers.tmp, found[1], args.orthanc_gdcm),
        )
        targets.append(servers.start(THEIRS, lambda tmp: orthanc_server(tmp, binary, plugins)))
        versions[THEIRS] = f"{targets[-1].version} {gdcm}"
    if not targets:
        raise RuntimeError("no server to measure")
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if importlib.util.find_spec("sniffio") is None:
        # As in dicomstore-dicomweb-bench: a failed `import sniffio` per request costs the client.
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    settings = Settings(args.duration, args.repeat, args.workloads)
    began, load = time.monotonic(), os.getloadavg()[0]
    versions: dict[str, str] = {}
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pixel-bench-")))
            servers = Servers(stack, tmp)
            targets = _start(args, servers, versions)
            phase("generating the instances")
            bench = Bench(targets, settings, servers.restart)
            run_async(bench.run())
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        print(f"dicomstore-pixel-bench: {exc}", file=sys.stderr)
        return 2
    rows, notes = bench.rows(), bench.notes()
    # Orthanc's failures are shown but are the reference's: only ours fail the run.
    problems = bench.problems + [
        f"{row.measurement}: {errors}" for row in rows if (errors := row.errors.get(OURS))
    ]
    host = machine()
    elapsed = time.monotonic() - began
    if args.json:
        report = {
            "machine": host,
            "versions": versions,
            "settings": asdict(settings),
            "sizes_bytes": {name: len(image.data) for name, image in bench.images.items()},
            "elapsed_s": round(elapsed, 1),
            "load_average_before": load,
            "rows": [asdict(row) | {"ratios": row.ratios} for row in rows],
            "missing": bench.missing,
            "problems": problems,
            "notes": notes,
        }
        print(json.dumps(finite(report), indent=2))
    else:
        sizes = ", ".join(f"{i.label} {len(i.data):,} B" for i in bench.images.values())
        header = [
            machine_line(host),
            "servers: " + " | ".join(f"{k} {v}" for k, v in versions.items()),
            f"instances: {sizes}; {settings.duration:g} s per timed run (+{WARMUP_S:g} s"
            f" warm-up), {settings.repeat} round(s), ranges min-max; ratio = dicomstore / orthanc",
            f"elapsed: {elapsed:.0f} s; load average before: {load:.2f}",
        ]
        print_table(
            header, rows, bench.missing, [*notes, *(f"PROBLEM {p}" for p in bench.problems)]
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
