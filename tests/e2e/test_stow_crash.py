"""`kill -9` in the middle of a STOW-RS batch or a study delete, then restart (the guarantees of
docs/architecture.md, "The ingest protocol", and docs/reliability.md, "Crash safety"). The
checks of the data directory are those `dicomstore-crash-trials` makes after each of its random
kills (`dicomstore_bench.crash_trials.check_data_dir`); these tests put the server in chosen
states instead, and show that the checks see what they look for."""

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

from dicomstore_bench.crash_trials import check_data_dir, multipart_chunks, referenced

PARENT = "v1/projects/p/locations/l/datasets/d"
WEB = f"{PARENT}/dicomStores/s/dicomWeb"
MULTIPART = 'multipart/related; type="application/dicom"; boundary=dicomstore-crash-trials-boundary'
STUDY = "1.2.826.0.1.3680043.10.1"
JSON = {"Accept": "application/dicom+json"}


def payload(n: int, study: str = STUDY) -> bytes:
    ds = new_instance(
        StudyInstanceUID=study,
        SeriesInstanceUID=f"{study}.1",
        SOPInstanceUID=f"{study}.1.{n}",
    )
    return part10(ds)


def slow_multipart(count: int, sent: threading.Event) -> Iterator[bytes]:
    """A batch sent a chunk every 50 ms; `sent` is set once half of it went out."""
    chunks = multipart_chunks([payload(1000 + n) for n in range(count)])
    for n, chunk in enumerate(chunks):
        yield chunk
        if n == len(chunks) // 2:
            sent.set()
        time.sleep(0.05)


def post_batch(base: str, sent: threading.Event) -> None:
    # The server dies mid-request: this batch is never acknowledged.
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"{base}/{WEB}/studies",
            content=slow_multipart(40, sent),
            headers={"Content-Type": MULTIPART},
            timeout=30,
        )


def create_store(base: str) -> None:
    httpx.post(f"{base}/v1/projects/p/locations/l/datasets?datasetId=d").raise_for_status()
    httpx.post(f"{base}/{PARENT}/dicomStores?dicomStoreId=s").raise_for_status()


def store_study(base: str, count: int, study: str = STUDY) -> set[str]:
    """Store `count` instances of `study` in one multipart request; their SOP Instance UIDs."""
    body = b"".join(multipart_chunks([payload(n, study) for n in range(count)]))
    stored = httpx.post(
        f"{base}/{WEB}/studies",
        content=body,
        headers={"Content-Type": MULTIPART, **JSON},
        timeout=60,
    )
    assert stored.status_code == 200, stored.text
    return referenced(stored)


def sop_uids(base: str, study: str = STUDY) -> set[str]:
    response = httpx.get(f"{base}/{WEB}/studies/{study}/instances", timeout=10)
    if response.status_code == 204:
        return set()
    response.raise_for_status()
    return {item["00080018"]["Value"][0] for item in response.json()}


def wait_for_operations(base: str) -> None:
    for _ in range(600):
        running = httpx.get(f"{base}/{PARENT}/operations", params={"filter": "done=false"})
        running.raise_for_status()
        if not running.json().get("operations"):
            return
        time.sleep(0.05)
    raise AssertionError("operations still running after 30 s")


@pytest.mark.timeout(60)
def test_kill_during_stow_batch_keeps_acknowledged_and_nothing_else(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as server:
        base = server.http_url
        create_store(base)
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
        assert check_data_dir(data_dir) == []


@pytest.mark.timeout(90)
def test_kill_after_study_delete_acknowledged_finishes_the_delete_after_restart(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    other = "1.2.826.0.1.3680043.10.2"
    with start_server(data_dir) as server:
        base = server.http_url
        create_store(base)
        assert len(store_study(base, 150)) == 150
        kept = store_study(base, 3, other)
        deleted = httpx.delete(f"{base}/{WEB}/studies/{STUDY}")
        assert deleted.status_code == 200, deleted.text
        operation = deleted.json()["name"]
        server.kill()

    with start_server(data_dir) as server:
        base = server.http_url
        wait_for_operations(base)
        done = httpx.get(f"{base}/v1/{operation}").json()
        assert done["done"] is True and "error" not in done, done
        assert sop_uids(base) == set()
        assert sop_uids(base, other) == kept
        assert check_data_dir(data_dir) == []


@pytest.mark.timeout(60)
def test_check_data_dir_reports_orphans_partials_and_missing_blobs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir) as server:
        create_store(server.http_url)
        store_study(server.http_url, 3)
        assert check_data_dir(data_dir) == []
        server.terminate()
    first, second, third = sorted((data_dir / "blobs").rglob("*.dcm"))
    first.write_bytes(first.read_bytes()[:-1])  # truncated
    second.unlink()  # lost
    orphan = int(third.parent.name, 16) + 256 * 1000  # a key of that folder, without a row
    (third.parent / f"{orphan}.dcm").write_bytes(b"orphan")
    (third.parent / "7.partial").write_bytes(b"partial")
    (data_dir / "blobs" / "1.deleting").mkdir()

    found = check_data_dir(data_dir)

    assert sorted(kind for kind, _ in found) == [
        "missing-blob",
        "missing-blob",
        "orphan-blob",
        "temp-file",
        "temp-file",
    ]
    details = "\n".join(detail for _, detail in found)
    assert f"{first.name} has {first.stat().st_size} bytes" in details
    assert f"row {second.stem} of store" in details
    assert f"{orphan}.dcm has no catalog row" in details
    assert "unexpected file blobs/" in details and "7.partial" in details
    assert "unexpected folder blobs/1.deleting" in details
