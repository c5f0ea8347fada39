"""`kill -9` in the middle of a STOW-RS batch, then restart (DESIGN.md guarantees)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.e2e.server import start_server
from tests.unit.dicom.dicomfiles import new_instance, part10

PARENT = "v1/projects/p/locations/l/datasets/d"
WEB = f"{PARENT}/dicomStores/s/dicomWeb"
BOUNDARY = "crash-test-boundary"
STUDY = "1.2.826.0.1.3680043.10.1"


def payload(n: int) -> bytes:
    ds = new_instance(
        StudyInstanceUID=STUDY,
        SeriesInstanceUID=f"{STUDY}.1",
        SOPInstanceUID=f"{STUDY}.1.{n}",
    )
    return part10(ds)


def slow_multipart(count: int, sent: threading.Event) -> Iterator[bytes]:
    """Parts of a batch, one every 50 ms; `sent` is set once half of them went out."""
    for n in range(count):
        yield (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + payload(1000 + n)
            + b"\r\n"
        )
        if n == count // 2:
            sent.set()
        time.sleep(0.05)
    yield f"--{BOUNDARY}--\r\n".encode()


def post_batch(base: str, sent: threading.Event) -> None:
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    # The server dies mid-request: this batch is never acknowledged.
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"{base}/{WEB}/studies", content=slow_multipart(40, sent), headers=headers, timeout=30
        )


def sop_uids(base: str) -> set[str]:
    response = httpx.get(f"{base}/{WEB}/studies/{STUDY}/instances", timeout=10)
    if response.status_code == 204:
        return set()
    response.raise_for_status()
    return {item["00080018"]["Value"][0] for item in response.json()}


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


@pytest.mark.timeout(60)
def test_kill_during_stow_batch_keeps_acknowledged_and_nothing_else(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as server:
        base = server.http_url
        httpx.post(f"{base}/v1/projects/p/locations/l/datasets?datasetId=d").raise_for_status()
        httpx.post(f"{base}/{PARENT}/dicomStores?dicomStoreId=s").raise_for_status()
        acknowledged = {f"{STUDY}.1.{n}" for n in range(3)}
        for n in range(3):
            stored = httpx.post(
                f"{base}/{WEB}/studies",
                content=payload(n),
                headers={"Content-Type": "application/dicom"},
            )
            assert stored.status_code == 200, stored.text
        sent = threading.Event()
        batch = threading.Thread(target=post_batch, args=(base, sent))
        batch.start()
        assert sent.wait(20)
        server.kill()
        batch.join(30)

    with start_server(data_dir) as server:
        assert sop_uids(server.http_url) == acknowledged
        for uid in acknowledged:
            got = httpx.get(
                f"{server.http_url}/{WEB}/studies/{STUDY}/series/{STUDY}.1/instances/{uid}",
                headers={"Accept": "application/dicom; transfer-syntax=*"},
            )
            assert got.status_code == 200
            assert got.content == payload(int(uid.rsplit(".", 1)[1]))
        assert len(blob_files(data_dir)) == len(acknowledged)
