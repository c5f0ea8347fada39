"""WADO-RS streams a large study over a real socket with bounded server memory.

The data directory is filled through the core's ingest path (DICOMSTORE_TEST_STREAM_MB of
instances, 200 MB by default; set it to 2048 for a 2 GB study), then `dicomstore serve` runs as
a child process over it and the whole study is retrieved with `transfer-syntax=*`. The server's
peak resident set (VmHWM in /proc/PID/status) is read after a warm-up retrieval and again after
the study: it may grow by a bounded amount however large the study is. Each part must be the
stored file, byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import external_target, start_server
from tests.unit.dicom.dicomfiles import new_instance, part10

from dicomstore.blobs.local import LocalBlobStore
from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.config import Settings
from dicomstore.core.instances import Instances
from dicomstore.core.model import Dataset, DicomStore
from dicomstore.core.names import DatasetName, DicomStoreName
from dicomstore.core.operations import Operations
from dicomstore.core.paging import PageTokens
from dicomstore.dicom.multipart import MultipartReader, parse_content_type

DATASET = DatasetName.parse("projects/p/locations/l/datasets/d")
STORE = DicomStoreName(DATASET, "big")
STUDY = "1.2.826.0.1.9"
INSTANCE_BYTES = 8 * 1024 * 1024
TOTAL_BYTES = int(os.environ.get("DICOMSTORE_TEST_STREAM_MB", "200")) * 1024 * 1024
#: How much the server's peak RSS may grow while it streams the study.
MAX_PEAK_GROWTH_BYTES = 64 * 1024 * 1024

pytestmark = [
    pytest.mark.skipif(
        external_target() is not None, reason="fills its own data directory and server"
    ),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
    pytest.mark.timeout(600),
]


async def populate(data_dir: Path) -> dict[str, str]:
    """Store the study; return the SHA-256 of each instance file by SOP Instance UID."""
    settings = Settings(data_dir=data_dir)
    catalog = SqliteCatalog(settings.catalog_path)
    blobs = LocalBlobStore(settings.blob_dir)
    await catalog.open()
    await blobs.open()
    try:
        await catalog.create_dataset(Dataset(DATASET))
        await catalog.create_dicom_store(DicomStore(STORE))
        operations = Operations(catalog, PageTokens(b"k" * 32), concurrency=1)
        instances = Instances(catalog, blobs, operations)
        digests: dict[str, str] = {}
        for n in range(max(1, TOTAL_BYTES // INSTANCE_BYTES)):
            sop = f"{STUDY}.1.{n + 1}"
            ds = new_instance(SOPInstanceUID=sop, SeriesInstanceUID=f"{STUDY}.1")
            ds.StudyInstanceUID = STUDY
            ds.Rows, ds.Columns, ds.SamplesPerPixel = 2048, 2048, 1
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.PixelData = random.Random(n).randbytes(INSTANCE_BYTES)
            data = part10(ds)
            digests[sop] = hashlib.sha256(data).hexdigest()
            result = await instances.ingest(STORE, io.BytesIO(data))
            assert result.stored, result.detail
        await operations.close()
        return digests
    finally:
        await catalog.close()


def peak_rss(pid: int) -> int:
    """VmHWM, the peak resident set size of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def retrieve(url: str) -> tuple[dict[str, str], int]:
    """Stream a multipart study; the SHA-256 of each part by SOP UID, and the bytes received."""
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    digests: dict[str, str] = {}
    received = 0
    with httpx.stream("GET", url, headers={"accept": accept}, timeout=120) as response:
        assert response.status_code == 200, response.read()
        boundary = parse_content_type(response.headers["content-type"]).boundary
        assert boundary is not None
        reader = MultipartReader(boundary, max_part_bytes=1 << 40, spool_threshold=1 << 20)
        for chunk in response.iter_raw():
            received += len(chunk)
            for part in reader.feed(chunk):
                with part:
                    sop = (part.content_location or "").rpartition("/instances/")[2]
                    digest = hashlib.sha256()
                    while block := part.body.read(1 << 20):
                        digest.update(block)
                    digests[sop] = digest.hexdigest()
        reader.close()
    return digests, received


def test_large_study_streams_with_bounded_server_memory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    expected = asyncio.run(populate(data_dir))
    with start_server(data_dir) as server:
        study = f"{server.http_url}/v1/{STORE}/dicomWeb/studies/{STUDY}"
        pid = server.process.pid
        # Warm up: one instance through the same path, so that what is measured is the study.
        warm, _ = retrieve(f"{study}/series/{STUDY}.1/instances/{STUDY}.1.1")
        assert warm == {f"{STUDY}.1.1": expected[f"{STUDY}.1.1"]}
        before = peak_rss(pid)
        started = time.perf_counter()
        digests, received = retrieve(study)
        elapsed = time.perf_counter() - started
        after = peak_rss(pid)
    assert digests == expected
    growth = after - before
    print(
        f"\nstreamed {received / 2**20:.0f} MiB in {elapsed:.2f}s"
        f" ({received / 2**20 / elapsed:.0f} MiB/s); server peak RSS {before / 2**20:.1f}"
        f" -> {after / 2**20:.1f} MiB (+{growth / 2**20:.1f} MiB)"
    )
    assert received >= TOTAL_BYTES
    assert growth < MAX_PEAK_GROWTH_BYTES, f"peak RSS grew by {growth / 2**20:.1f} MiB"
