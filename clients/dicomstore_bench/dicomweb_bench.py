"""`dicomstore-dicomweb-bench`: DICOMweb throughput of dicomstore beside Orthanc, in one run.

Both servers run as subprocesses on loopback, each on fresh storage in one temporary directory:
`dicomstore serve` (a dataset and a store created over REST) and, when the Debian packages
`orthanc` and `orthanc-dicomweb` are installed, `Orthanc` with its DICOMweb plugin, no DICOM
listener, no compression and otherwise its packaged defaults. This process is the client: one
asyncio loop with an httpx.AsyncClient per run (`Accept-Encoding: identity`). Each workload runs
against dicomstore, then against Orthanc, with the same generated instances.

Instances: Secondary Capture, Explicit VR Little Endian, built once per size with pydicom as a
template whose UIDs, patient, date, accession, modality and numbers are then patched in place
(fixed-width values), so generating one costs a buffer copy and never competes with the servers.
Studies of 10 instances in 2 series of 5; two studies per patient; study dates spread ~3 per day.
"10 KB" is 100x100 8-bit pixels, "0.5 MB" 512x512 16-bit.

Workloads (MB = 10^6 bytes):
1. STOW: one instance per POST at concurrency 1, 4 and 16, counted over --duration seconds after
   WARMUP_S of warm-up (instances/s, MB/s, and the server's CPU time per instance from
   /proc/PID/stat). dicomstore gets single-part `application/dicom`; Orthanc's STOW-RS (DICOMweb
   plugin 1.7) answers 415 to that, so it gets the same instance as a one-part
   `multipart/related; type="application/dicom"` body.
2. QIDO: --qido-instances loaded as one multipart POST per study at --load-concurrency (reported
   as a multipart ingest rate), then --qido-queries queries of each kind at concurrency 1 (p50,
   p99 per kind and for the mix) and the mix at concurrency 4 for --duration (queries/s): studies
   by PatientID, by a 7-day StudyDate range, by AccessionNumber; series of a study by Modality;
   instances of a series. Every query matches; a non-200 or an empty result is an error. The
   stores also hold the STOW workload's instances.
3. WADO: a study of --wado-study-mb of 0.5 MB instances, retrieved whole at concurrency 1
   (`multipart/related; type="application/dicom"; transfer-syntax=*`) and its instances one by
   one at concurrency 4, each for --duration: multipart for both (Orthanc 1.7 answers 400 to a
   single-part `application/dicom` Accept) and single-part for dicomstore alone. The baseline is
   a trivial asyncio-streams HTTP server (own process) serving a static body of the same size
   through the same client code: "loopback HTTP throughput".
4. Peak RSS of each server's process tree, sampled every RSS_PERIOD_S from /proc (and VmHWM).

Every failed request (HTTP status, transport error, a STOW failure item, a short or empty body)
is counted and shown next to its row; the exit status is 1 when there was any, 2 when the
benchmark could not run, 0 otherwise (a missing Orthanc is reported, not an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import io
import itertools
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

ROOT = "1.2.826.0.1.3680043.8.498"  # pydicom's UID root
PER_STUDY, PER_SERIES = 10, 5
MODALITIES = ("CT", "MR", "US", "CR", "DX", "NM", "PT", "XA")
CONCURRENCY = (1, 4, 16)
WARMUP_S = 1.0
RSS_PERIOD_S = 0.1
BOUNDARY = "dicomstore-bench-boundary"
DICOM_PART = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
MULTIPART_DICOM = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
ACCEPT_MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_SINGLE = "application/dicom; transfer-syntax=*"
DICOMSTORE_STORE = "projects/bench/locations/local/datasets/bench/dicomStores/bench"
ORTHANC_PLUGIN_PATHS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
MB = 1e6


# ---------------------------------------------------------------------------------------------
# Instances


@dataclass(frozen=True)
class Ids:
    """What varies between generated instances; every text value has a fixed width."""

    study: int  # < 10**9
    series: int  # < 10**3
    instance: int  # < 10**6
    patient: int  # < 10**9
    date: str  # YYYYMMDD
    modality: str  # two letters

    @property
    def study_uid(self) -> str:
        return f"{ROOT}.1{self.study:09d}"

    @property
    def series_uid(self) -> str:
        return f"{self.study_uid}.1{self.series:03d}"

    @property
    def sop_uid(self) -> str:
        return f"{self.series_uid}.1{self.instance:06d}"

    def values(self) -> dict[tuple[int, int], str]:
        """(group, element) -> value, for every patched element."""
        return {
            (0x0002, 0x0003): self.sop_uid,
            (0x0008, 0x0018): self.sop_uid,
            (0x0008, 0x0020): self.date,
            (0x0008, 0x0050): f"A{self.study:09d}",
            (0x0008, 0x0060): self.modality,
            (0x0010, 0x0010): f"BENCH^P{self.patient:09d}",
            (0x0010, 0x0020): f"P{self.patient:09d}",
            (0x0020, 0x000D): self.study_uid,
            (0x0020, 0x000E): self.series_uid,
            (0x0020, 0x0011): f"{self.series + 1:>3d}",
            (0x0020, 0x0013): f"{self.instance + 1:>6d}",
        }


PLACEHOLDER = Ids(999_999_999, 999, 999_999, 999_999_999, "19991231", "OT")
VRS = {
    (0x0002, 0x0003): b"UI",
    (0x0008, 0x0018): b"UI",
    (0x0008, 0x0020): b"DA",
    (0x0008, 0x0050): b"SH",
    (0x0008, 0x0060): b"CS",
    (0x0010, 0x0010): b"PN",
    (0x0010, 0x0020): b"LO",
    (0x0020, 0x000D): b"UI",
    (0x0020, 0x000E): b"UI",
    (0x0020, 0x0011): b"IS",
    (0x0020, 0x0013): b"IS",
}


class Template:
    """A Part 10 instance encoded once by pydicom; `render` patches the varying values in."""

    def __init__(self, label: str, rows: int, columns: int, bits: int) -> None:
        self.label = label
        values = PLACEHOLDER.values()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = UID(values[(0x0002, 0x0003)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.StudyTime = "120000"
        ds.ReferringPhysicianName = "BENCH^REFERRER"
        ds.StudyDescription = "dicomstore-dicomweb-bench"
        ds.SeriesDescription = f"{label} instances"
        ds.StudyID = "1"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.ConversionType = "WSD"
        for (group, element), value in values.items():
            if group != 0x0002:
                vr = VRS[(group, element)].decode()
                ds.add_new((group << 16) | element, vr, value)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = random.Random(rows * columns * bits).randbytes(rows * columns * bits // 8)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        self.data = buffer.getvalue()
        pixels = self.data.rfind(b"\xe0\x7f\x10\x00")
        self.offsets: list[tuple[tuple[int, int], int]] = []
        for key, value in values.items():
            raw = value.encode()
            padded = len(raw) + len(raw) % 2
            header = struct.pack("<HH", *key) + VRS[key] + struct.pack("<H", padded)
            at = self.data.find(header, 0, pixels)
            if at < 0 or self.data.find(header, at + 1, pixels) >= 0:
                raise RuntimeError(f"template {label}: element {key} not found exactly once")
            self.offsets.append((key, at + len(header)))

    @property
    def size(self) -> int:
        return len(self.data)

    def render(self, ids: Ids) -> bytes:
        buffer = bytearray(self.data)
        values = ids.values()
        for key, offset in self.offsets:
            raw = values[key].encode()
            buffer[offset : offset + len(raw)] = raw
        return bytes(buffer)


def multipart(instances: Sequence[bytes]) -> bytes:
    """A `multipart/related; type="application/dicom"` body (PS3.18 8.6.1.2)."""
    chunks: list[bytes] = []
    for data in instances:
        chunks += [DICOM_PART, data, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


@dataclass(frozen=True)
class Corpus:
    """Numbering of one workload's instances: studies from `base`, ~3 study dates per day."""

    base: int
    days: int

    def ids(self, k: int) -> Ids:
        relative = k // PER_STUDY
        study = self.base + relative
        series = (k % PER_STUDY) // PER_SERIES
        day = dt.date(2010, 1, 1) + dt.timedelta(days=(relative * 7919) % self.days)
        modality = MODALITIES[(study + 3 * series) % len(MODALITIES)]
        return Ids(study, series, k % PER_STUDY, study // 2, f"{day:%Y%m%d}", modality)


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass(frozen=True)
class Target:
    """One DICOMweb server under test."""

    name: str
    root: str  # the DICOMweb root URL, without a trailing slash
    pid: int
    stow_single_part: bool  # single-part application/dicom STOW; else a one-part multipart
    wado_single_part: bool  # serves an instance as single-part application/dicom
    version: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within 60 s:\n{log.read_text()}")


@contextlib.contextmanager
def _process(command: list[str], log: Path, what: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM):
            tail = log.read_text(errors="replace")[-4000:]
            print(f"{what} exited with {proc.returncode}:\n{tail}", file=sys.stderr)


@contextlib.contextmanager
def dicomstore_server(tmp: Path) -> Iterator[Target]:
    """`dicomstore serve` on its own data dir, with dataset `bench` and store `bench`."""
    port, log = _free_port(), tmp / "dicomstore.log"
    command = [sys.executable, "-m", "dicomstore.cli", "serve", "--grpc-port", "0"]
    command += ["--http-port", str(port), "--data-dir", str(tmp / "dicomstore")]
    command += ["--log-level", "warning"]
    with _process(command, log, "dicomstore") as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/healthz", proc, log, "dicomstore")
        location = f"{base}/v1/projects/bench/locations/local"
        for url in (
            f"{location}/datasets?datasetId=bench",
            f"{location}/datasets/bench/dicomStores?dicomStoreId=bench",
        ):
            reply = httpx.post(url, json={}, timeout=30)
            if reply.status_code != 200:
                raise RuntimeError(f"POST {url}: {reply.status_code} {reply.text}")
        version = importlib.metadata.version("dicomstore")
        root = f"{base}/v1/{DICOMSTORE_STORE}/dicomWeb"
        yield Target("dicomstore", root, proc.pid, True, True, version)


def find_orthanc(binary: str | None, plugin: str | None) -> tuple[str, str] | str:
    """(Orthanc binary, DICOMweb plugin) or the reason they are not usable."""
    if binary:
        found = shutil.which(binary)
        if not found:
            return f"Orthanc is missing: {binary} is not an executable"
    else:
        found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if not found:
        return "Orthanc is missing: not installed (apt-get install orthanc orthanc-dicomweb)"
    candidates = [plugin] if plugin else list(ORTHANC_PLUGIN_PATHS)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return found, candidate
    return f"Orthanc is missing its DICOMweb plugin ({', '.join(map(str, candidates))})"


@contextlib.contextmanager
def orthanc_server(tmp: Path, binary: str, plugin: str) -> Iterator[Target]:
    """Orthanc with its DICOMweb plugin on loopback; storage and index in `tmp/orthanc`."""
    port, log = _free_port(), tmp / "orthanc.log"
    storage = tmp / "orthanc"
    storage.mkdir()
    config = {
        "Name": "dicomstore-bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "HttpPort": port,
        "HttpCompressionEnabled": False,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "KeepAlive": True,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    config_path = tmp / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    with _process([binary, str(config_path)], log, "Orthanc") as proc:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/system", proc, log, "Orthanc")
        system = httpx.get(f"{base}/system", timeout=10).json()
        web = httpx.get(f"{base}/plugins/dicom-web", timeout=10)
        if web.status_code != 200:
            raise RuntimeError(f"Orthanc did not load its DICOMweb plugin:\n{log.read_text()}")
        version = f"{system.get('Version', '?')} + DICOMweb {web.json().get('Version', '?')}"
        yield Target("orthanc", f"{base}/dicom-web", proc.pid, False, False, version)


def _loopback_serve(conn: Connection, bodies: dict[str, int]) -> None:
    """The baseline server: HTTP/1.1 keep-alive, any GET of /<name> returns a static body."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    blobs = {
        f"/{name}".encode(): random.Random(size).randbytes(size) for name, size in bodies.items()
    }

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                blob = blobs.get(head.split(b" ", 2)[1], b"")
                writer.write(
                    b"HTTP/1.1 %d OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % (200 if blob else 404, len(blob))
                )
                view = memoryview(blob)
                for start in range(0, len(view), 1 << 20):
                    writer.write(view[start : start + (1 << 20)])
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    _run(serve())


@contextlib.contextmanager
def loopback_server(bodies: dict[str, int]) -> Iterator[str]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_loopback_serve, args=(child, bodies), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(60):
            raise RuntimeError("the loopback HTTP server did not start")
        yield f"http://127.0.0.1:{parent.recv()}"
    finally:
        with contextlib.suppress(OSError):
            parent.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


# ---------------------------------------------------------------------------------------------
# Measurement


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/PID/task/TID/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants (/proc/PID/stat fields 14, 15)."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RequestFailed(Exception):
    """A request that did not do what it should; the message is the reason counted."""


class RssSampler:
    """Peak resident memory of each server's process tree, per phase, polled from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {name: {} for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    @staticmethod
    def _status_kb(pid: int, key: str) -> int:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        return 0

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            kb = sum(self._status_kb(p, "VmRSS:") for p in process_tree(pid))
            peaks = self.peaks[name]
            peaks[self.phase] = max(peaks.get(self.phase, 0), kb)

    def _run(self) -> None:
        while not self._stop.wait(RSS_PERIOD_S):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        for name, pid in self.pids.items():
            hwm = self._status_kb(pid, "VmHWM:")
            self.peaks[name]["hwm"] = hwm
        self._stop.set()
        self._thread.join()

    def peak_mb(self, name: str, phase: str | None = None) -> float:
        peaks = self.peaks[name]
        kb = peaks.get(phase, 0) if phase else max(peaks.values(), default=0)
        return kb * 1024 / MB


@dataclass
class Tally:
    ops: int = 0
    items: int = 0  # instances or queries
    bytes: int = 0
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0  # over the whole run, warm-up included
    all_items: int = 0  # items done over the whole run, warm-up included
    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1e6

    @property
    def per_s(self) -> float:
        return self.items / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def server_ms_per_item(self) -> float:
        return 1000 * self.server_cpu_s / self.all_items if self.all_items else math.nan


Op = Callable[[httpx.AsyncClient, int], Awaitable[tuple[int, int]]]  # k -> (items, bytes)


async def drive(
    op: Op,
    concurrency: int,
    *,
    duration: float | None = None,
    count: int | None = None,
    server: int | None = None,
) -> Tally:
    """Run `op` on indexes 0, 1, ... from `concurrency` loops, for a time window or a count.

    Each loop has its own one-connection client: one shared pool of N connections costs the
    client ~3x the CPU per request at N=16 (httpcore scans its pool on every request), CPU the
    servers on this machine would not get. With `duration`, operations that end within
    [WARMUP_S, WARMUP_S + duration) are counted; with `count`, all of them are, over the whole
    wall time. Failures are counted either way. `server` is a pid whose CPU time is measured.
    """
    tally, indexes = Tally(), itertools.count()
    start = time.perf_counter_ns()
    begin = start + (int(WARMUP_S * 1e9) if duration is not None else 0)
    stop = begin + int(duration * 1e9) if duration is not None else None
    cpu = time.process_time()
    server_cpu = cpu_seconds(server) if server else 0.0

    async def loop() -> None:
        async with _client() as client:
            await loop_on(client)

    async def loop_on(client: httpx.AsyncClient) -> None:
        while True:
            if stop is not None and time.perf_counter_ns() >= stop:
                return
            k = next(indexes)
            if count is not None and k >= count:
                return
            sent = time.perf_counter_ns()
            try:
                items, size = await op(client, k)
            except RequestFailed as exc:
                tally.fail(str(exc))
                continue
            except httpx.HTTPError as exc:
                tally.fail(type(exc).__name__)
                continue
            done = time.perf_counter_ns()
            tally.all_items += items
            if begin <= done and (stop is None or done < stop):
                tally.ops += 1
                tally.items += items
                tally.bytes += size
                tally.latencies_ns.append(done - sent)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    tally.client_cpu_s = time.process_time() - cpu
    tally.server_cpu_s = cpu_seconds(server) - server_cpu if server else 0.0
    tally.elapsed_s = duration if duration is not None else (time.perf_counter_ns() - start) / 1e9
    return tally


def _client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(300), headers={"Accept-Encoding": "identity"}
    )


def _check_stow(reply: httpx.Response, expected: int) -> None:
    if reply.status_code != 200:
        raise RequestFailed(f"STOW HTTP {reply.status_code}")
    try:
        body: dict[str, Any] = reply.json()
    except ValueError as exc:
        raise RequestFailed("STOW response not JSON") from exc
    failed = len(body.get("00081198", {}).get("Value", []))
    stored = len(body.get("00081199", {}).get("Value", []))
    if failed or stored != expected:
        raise RequestFailed(f"STOW stored {stored} of {expected}")


async def post_instances(client: httpx.AsyncClient, target: Target, data: list[bytes]) -> int:
    """STOW-RS `data`; single-part when the target takes it and there is one instance."""
    if len(data) == 1 and target.stow_single_part:
        body, content_type = data[0], "application/dicom"
    else:
        body, content_type = multipart(data), MULTIPART_DICOM
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    reply = await client.post(f"{target.root}/studies", content=body, headers=headers)
    _check_stow(reply, len(data))
    return len(body)


async def get_bytes(client: httpx.AsyncClient, url: str, accept: str, least: int) -> int:
    """GET `url`, count the body's bytes without keeping them."""
    async with client.stream("GET", url, headers={"Accept": accept}) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise RequestFailed(f"GET HTTP {reply.status_code}")
        size = 0
        async for chunk in reply.aiter_raw():
            size += len(chunk)
    if size < least:
        raise RequestFailed("short body")
    return size


# ---------------------------------------------------------------------------------------------
# Workloads


def stow_op(target: Target, template: Template, corpus: Corpus) -> Op:
    """Instance k of `corpus`, one per request."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        data = template.render(corpus.ids(k))
        await post_instances(client, target, [data])
        return 1, len(data)

    return op


def study_load_op(target: Target, template: Template, ids: Sequence[Ids]) -> Op:
    """Batch k of PER_STUDY instances of `ids`, one multipart request each."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        picked = ids[k * PER_STUDY : (k + 1) * PER_STUDY]
        data = [template.render(one) for one in picked]
        return len(picked), await post_instances(client, target, data)

    return op


def query_op(target: Target, paths: Sequence[str]) -> Op:
    """QIDO path k (cycling); it must answer 200 with a non-empty array."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        reply = await client.get(
            target.root + paths[k % len(paths)], headers={"Accept": "application/dicom+json"}
        )
        if reply.status_code != 200:
            raise RequestFailed(f"QIDO HTTP {reply.status_code}")
        if not reply.content.lstrip(b"[ \r\n\t").startswith(b"{"):
            raise RequestFailed("QIDO empty result")
        return 1, len(reply.content)

    return op


def retrieve_op(urls: Sequence[str], accept: str, least: int) -> Op:
    """GET url k (cycling), counting its bytes."""

    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        return 1, await get_bytes(client, urls[k % len(urls)], accept, least)

    return op


@dataclass
class Row:
    workload: str
    unit: str
    better: str  # "higher" or "lower"
    values: dict[str, float]
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    target: str = ""  # the target for dicomstore, when it sets one
    met: bool | None = None

    @property
    def ratio(self) -> float:
        ours, theirs = self.values.get("dicomstore"), self.values.get("orthanc")
        if ours is None or theirs is None or not theirs or math.isnan(theirs):
            return math.nan
        return ours / theirs


@dataclass(frozen=True)
class Settings:
    duration: float
    qido_instances: int
    qido_queries: int
    load_concurrency: int
    wado_study_mb: float


class Bench:
    """The workloads, run against each target in turn; results accumulate in `rows`."""

    def __init__(self, targets: list[Target], settings: Settings) -> None:
        self.targets = targets
        self.settings = settings
        self.small = Template("10 KB", 100, 100, 8)
        self.large = Template("0.5 MB", 512, 512, 16)
        self.study_count = max(1, math.ceil(settings.wado_study_mb * MB / self.large.size))
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.rss: RssSampler | None = None

    def _phase(self, name: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
        if self.rss:
            self.rss.phase = name.split()[0]

    def _add(
        self,
        workload: str,
        unit: str,
        tallies: dict[str, Tally],
        value: Callable[[Tally], float],
        *,
        better: str = "higher",
        errors: bool = True,
        compare: bool = True,
    ) -> Row:
        """A row from one Tally per target, its errors unless an earlier row of them shows them.

        The target is the issue's: at least as good as Orthanc, when Orthanc ran.
        """
        failed = {name: t.errors for name, t in tallies.items() if t.errors and errors}
        row = Row(workload, unit, better, {n: value(t) for n, t in tallies.items()}, failed)
        if compare and "orthanc" in row.values and "dicomstore" in row.values:
            row.target = ">= orthanc" if better == "higher" else "<= orthanc"
            row.met = row.ratio >= 1 if better == "higher" else row.ratio <= 1
        self.rows.append(row)
        return row

    def _client_cpu(self, workload: str, tallies: dict[str, Tally]) -> None:
        for target, tally in tallies.items():
            share = tally.client_cpu_s / (tally.elapsed_s + WARMUP_S)
            if share > 0.8:
                self.notes.append(f"{workload} {target}: the client used {share:.0%} of a core")

    async def stow(self) -> None:
        runs = itertools.product((self.small, self.large), CONCURRENCY)
        for run, (template, concurrency) in enumerate(runs):
            corpus = Corpus(100_000_000 * (run + 1), 3650)
            workload = f"STOW {template.label} c={concurrency}"
            tallies: dict[str, Tally] = {}
            for target in self.targets:
                self._phase(f"stow {template.label} c={concurrency} {target.name}")
                op = stow_op(target, template, corpus)
                tallies[target.name] = await drive(
                    op, concurrency, duration=self.settings.duration, server=target.pid
                )
            self._add(workload, "inst/s", tallies, lambda t: t.per_s)
            self._add(workload, "MB/s", tallies, lambda t: t.mb_per_s, errors=False)
            self._add(
                workload,
                "CPU ms/inst",
                tallies,
                lambda t: t.server_ms_per_item,
                better="lower",
                errors=False,
                compare=False,
            )
            self._client_cpu(workload, tallies)

    async def qido(self) -> None:
        s = self.settings
        studies = max(1, s.qido_instances // PER_STUDY)
        corpus = Corpus(1, max(7, studies // 3))
        ids = [corpus.ids(k) for k in range(studies * PER_STUDY)]
        loads: dict[str, Tally] = {}
        for target in self.targets:
            self._phase(f"qido-load {len(ids)} instances {target.name}")
            op = study_load_op(target, self.small, ids)
            loads[target.name] = await drive(
                op, s.load_concurrency, count=studies, server=target.pid
            )
        workload = f"STOW multipart 10/request c={s.load_concurrency} (QIDO load)"
        self._add(workload, "inst/s", loads, lambda t: t.per_s)
        self._add(
            workload,
            "CPU ms/inst",
            loads,
            lambda t: t.server_ms_per_item,
            better="lower",
            errors=False,
            compare=False,
        )

        queries = self._queries(corpus, studies, random.Random(20241122))
        kinds = list(dict.fromkeys(kind for kind, _ in queries))
        every = [path for _, path in queries]
        latencies: dict[str, dict[str, Tally]] = {kind: {} for kind in [*kinds, "mix"]}
        mixed: dict[str, Tally] = {}
        for target in self.targets:
            self._phase(f"qido {len(queries)} queries {target.name}")
            await drive(query_op(target, every), 1, count=min(len(every), 50))  # warm-up
            mix = Tally()
            for kind in kinds:
                paths = [path for k, path in queries if k == kind]
                tally = await drive(query_op(target, paths), 1, count=len(paths))
                latencies[kind][target.name] = tally
                mix.latencies_ns += tally.latencies_ns
                for reason, n in tally.errors.items():
                    mix.errors[reason] = mix.errors.get(reason, 0) + n
            latencies["mix"][target.name] = mix
            mixed[target.name] = await drive(query_op(target, every), 4, duration=s.duration)
        for kind in [*kinds, "mix"]:
            self._add(
                f"QIDO {kind} c=1",
                "p50 ms",
                latencies[kind],
                lambda t: t.percentile_ms(0.50),
                better="lower",
            )
            self._add(
                f"QIDO {kind} c=1",
                "p99 ms",
                latencies[kind],
                lambda t: t.percentile_ms(0.99),
                better="lower",
                errors=False,
            )
        self._add("QIDO mix c=4", "queries/s", mixed, lambda t: t.per_s)

    def _queries(self, corpus: Corpus, studies: int, rng: random.Random) -> list[tuple[str, str]]:
        """The fixed mix, interleaved: each kind --qido-queries times, all of them matching."""
        out: list[tuple[str, str]] = []

        def any_study() -> Ids:
            return corpus.ids(rng.randrange(studies) * PER_STUDY)

        for _ in range(self.settings.qido_queries):
            out.append(("studies by PatientID", f"/studies?PatientID=P{any_study().patient:09d}"))
            start = dt.datetime.strptime(any_study().date, "%Y%m%d")
            window = f"{start:%Y%m%d}-{start + dt.timedelta(days=6):%Y%m%d}"
            out.append(("studies by StudyDate range", f"/studies?StudyDate={window}"))
            number = any_study().study
            out.append(("studies by AccessionNumber", f"/studies?AccessionNumber=A{number:09d}"))
            study = any_study()
            path = f"/studies/{study.study_uid}/series?Modality={study.modality}"
            out.append(("series of a study by Modality", path))
            series = corpus.ids(rng.randrange(studies) * PER_STUDY + rng.choice((0, PER_SERIES)))
            path = f"/studies/{series.study_uid}/series/{series.series_uid}/instances"
            out.append(("instances of a series", path))
        return out

    async def wado(self, loopback: str) -> None:
        count = self.study_count
        study = Ids(990_000_000, 0, 0, 495_000_000, "20200101", "CT")
        ids = [
            Ids(study.study, k % 2, k, study.patient, study.date, MODALITIES[k % 2])
            for k in range(count)
        ]
        study_bytes = count * self.large.size
        for target in self.targets:
            self._phase(f"wado-load {count} x 0.5 MB {target.name}")
            op = study_load_op(target, self.large, ids)
            tally = await drive(
                op, self.settings.load_concurrency, count=math.ceil(count / PER_STUDY)
            )
            if tally.errors:
                self._add(
                    f"WADO study load ({target.name})",
                    "inst/s",
                    {target.name: tally},
                    lambda t: t.per_s,
                )

        # name, Accept, concurrency, whole study or its instances one by one
        cases = (
            ("WADO study (multipart) c=1", ACCEPT_MULTIPART, 1, True),
            ("WADO instance (multipart) c=4", ACCEPT_MULTIPART, 4, False),
            ("WADO instance (application/dicom) c=4", ACCEPT_SINGLE, 4, False),
        )
        results: dict[str, dict[str, Tally]] = {}
        for name, accept, concurrency, whole in cases:
            results[name] = {}
            for target in self.targets:
                if accept == ACCEPT_SINGLE and not target.wado_single_part:
                    continue
                self._phase(f"wado {name} {target.name}")
                base = f"{target.root}/studies/{study.study_uid}"
                urls = (
                    [base]
                    if whole
                    else [f"{base}/series/{one.series_uid}/instances/{one.sop_uid}" for one in ids]
                )
                least = study_bytes if whole else self.large.size
                results[name][target.name] = await self._retrieve(concurrency, urls, accept, least)
        self._phase("wado loopback HTTP baseline")
        baseline = {
            True: await self._retrieve(1, [f"{loopback}/study"], "*/*", study_bytes),
            False: await self._retrieve(4, [f"{loopback}/instance"], "*/*", self.large.size),
        }
        self.notes.append(
            f"loopback HTTP baseline: {study_bytes / MB:.0f} MB body c=1"
            f" {baseline[True].mb_per_s:,.0f} MB/s, {self.large.size / MB:.2f} MB body c=4"
            f" {baseline[False].mb_per_s:,.0f} MB/s"
        )
        for tally in baseline.values():
            if tally.errors:
                self._add(
                    "loopback HTTP baseline", "MB/s", {"loopback": tally}, lambda t: t.mb_per_s
                )
        for name, _, _, whole in cases:
            self._add(name, "MB/s", results[name], lambda t: t.mb_per_s)

            def share_of(tally: Tally, loopback_mb_s: float = baseline[whole].mb_per_s) -> float:
                return 100 * tally.mb_per_s / loopback_mb_s

            share = self._add(f"{name} / loopback HTTP", "%", results[name], share_of, errors=False)
            share.target = ">= 50 %"
            share.met = share.values.get("dicomstore", 0.0) >= 50

    async def run(self, loopback: str) -> None:
        await self.stow()
        await self.qido()
        await self.wado(loopback)

    async def _retrieve(
        self, concurrency: int, urls: Sequence[str], accept: str, least: int
    ) -> Tally:
        op = retrieve_op(urls, accept, least)
        return await drive(op, concurrency, duration=self.settings.duration)

    def rss_rows(self, rss: RssSampler) -> None:
        for phase in ("stow", "qido-load", "qido", "wado-load", "wado", None):
            label = f"peak RSS during {phase}" if phase else "peak RSS, whole run (and VmHWM)"
            row = Row(
                label, "MB", "lower", {t.name: rss.peak_mb(t.name, phase) for t in self.targets}
            )
            row.target, row.met = "< 300 MB", row.values["dicomstore"] < 300
            self.rows.append(row)


def _run(main: Awaitable[Any]) -> Any:
    async def wrapped() -> Any:
        return await main

    try:
        import uvloop
    except ImportError:
        return asyncio.run(wrapped())
    return uvloop.run(wrapped())


# ---------------------------------------------------------------------------------------------
# Report


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if unit.startswith("p") or value < 10:
        return f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def print_table(header: list[str], rows: Sequence[Row], notes: Sequence[str]) -> None:
    for line in header:
        print(line)
    print(f"{'workload':<56}{'unit':>10}{'dicomstore':>12}{'orthanc':>10}{'ratio':>8}  target")
    for row in rows:
        ratio = row.ratio
        target = f"{row.target} {'ok' if row.met else 'MISS'}" if row.target else ""
        print(
            f"{row.workload:<56}{row.unit:>10}{_number(row.values.get('dicomstore'), row.unit):>12}"
            f"{_number(row.values.get('orthanc'), row.unit):>10}"
            f"{'-' if math.isnan(ratio) else f'{ratio:.2f}':>8}  {target}"
        )
        for server, errors in row.errors.items():
            print(f"{'':<6}errors {server}: {errors}")
    for note in notes:
        print(f"note: {note}")


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dicomstore-dicomweb-bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run of ~1 minute")
    p.add_argument("--duration", type=float, help="measured seconds per timed run (default 10)")
    p.add_argument("--qido-instances", type=int, help="instances loaded for QIDO (default 100000)")
    p.add_argument("--qido-queries", type=int, help="queries of each kind (default 200)")
    p.add_argument("--load-concurrency", type=int, default=16, help="for the QIDO/WADO load")
    p.add_argument("--wado-study-mb", type=float, help="size of the WADO study (default 100)")
    p.add_argument("--no-orthanc", action="store_true", help="measure dicomstore alone")
    p.add_argument(
        "--orthanc-bin", help="Orthanc executable (default: Orthanc on PATH or /usr/sbin)"
    )
    p.add_argument("--orthanc-plugin", help="libOrthancDicomWeb.so (default: the Debian path)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    quick = args.quick
    defaults = (2.0, 2000, 20, 10.0) if quick else (10.0, 100_000, 200, 100.0)
    return Settings(
        duration=args.duration or defaults[0],
        qido_instances=args.qido_instances or defaults[1],
        qido_queries=args.qido_queries or defaults[2],
        load_concurrency=args.load_concurrency,
        wado_study_mb=args.wado_study_mb or defaults[3],
    )


def _finite(value: Any) -> Any:
    """`value` with NaN as None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "pydicom": pydicom.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if importlib.util.find_spec("sniffio") is None:
        # httpcore tries `import sniffio` on every request; a failed import is not cached and
        # costs ~0.2 ms of client CPU per request. An entry of None fails it at once.
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    settings = _settings(args)
    began = time.monotonic()
    orthanc = (
        "Orthanc skipped (--no-orthanc)"
        if args.no_orthanc
        else find_orthanc(args.orthanc_bin, args.orthanc_plugin)
    )
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dicomweb-bench-")))
            targets = [stack.enter_context(dicomstore_server(tmp))]
            if isinstance(orthanc, tuple):
                targets.append(stack.enter_context(orthanc_server(tmp, *orthanc)))
            else:
                print(f"{orthanc}; running dicomstore alone", file=sys.stderr)
            bench = Bench(targets, settings)
            bodies = {"instance": bench.large.size, "study": bench.study_count * bench.large.size}
            loopback = stack.enter_context(loopback_server(bodies))
            with RssSampler({t.name: t.pid for t in targets}) as rss:
                bench.rss = rss
                _run(bench.run(loopback))
            bench.rss_rows(rss)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        print(f"dicomstore-dicomweb-bench: {exc}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - began
    machine = _machine()
    versions = {t.name: t.version for t in targets}
    if not isinstance(orthanc, tuple):
        versions["orthanc"] = orthanc
    counts = {
        "qido_instances": settings.qido_instances,
        "sizes_bytes": {"10 KB": bench.small.size, "0.5 MB": bench.large.size},
        "wado_study_instances": bench.study_count,
    }
    if args.json:
        report = {
            "machine": machine,
            "versions": versions,
            "settings": asdict(settings),
            "counts": counts,
            "elapsed_s": round(elapsed, 1),
            "rows": [asdict(r) | {"ratio": r.ratio} for r in bench.rows],
            "rss_kb": bench.rss.peaks if bench.rss else {},
            "notes": bench.notes,
        }
        print(json.dumps(_finite(report), indent=2))
    else:
        header = [
            f"machine: {machine['nproc']} cores ({machine['cpu']}), Linux {machine['kernel']},"
            f" Python {machine['python']}, httpx {machine['httpx']}",
            f"servers: dicomstore {versions['dicomstore']} | "
            + (f"Orthanc {versions['orthanc']}" if isinstance(orthanc, tuple) else orthanc),
            f"instances: 10 KB = {bench.small.size:,} B, 0.5 MB = {bench.large.size:,} B;"
            f" QIDO over {settings.qido_instances:,} instances"
            + (
                " (--qido-instances 100000 for the issue's figure)"
                if settings.qido_instances < 100_000
                else ""
            )
            + f"; WADO study {counts['wado_study_instances']} x 0.5 MB;"
            f" {settings.duration:g} s per timed run (+{WARMUP_S:g} s warm-up); MB = 10^6 B",
            f"elapsed: {elapsed:.0f} s",
        ]
        print_table(header, bench.rows, bench.notes)
    return 1 if any(r.errors for r in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
