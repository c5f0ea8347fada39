"""The pixel worker processes of a `dicomstore serve` live and die with it: a server killed with
SIGKILL, which cannot stop its pool, leaves no worker or fork server behind."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pydicom
from tests.e2e.server import start_server
from tests.unit.dicom.dicomfiles import data_file

PARENT = "v1/projects/p/locations/l/datasets/d"


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_workers_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    ct = pydicom.dcmread(data_file("CT_small.dcm"))
    with start_server(tmp_path / "data") as server:
        base = server.http_url
        httpx.post(f"{base}/v1/projects/p/locations/l/datasets?datasetId=d").raise_for_status()
        httpx.post(f"{base}/{PARENT}/dicomStores?dicomStoreId=s").raise_for_status()
        web = f"{base}/{PARENT}/dicomStores/s/dicomWeb"
        stored = httpx.post(
            f"{web}/studies",
            content=data_file("CT_small.dcm").read_bytes(),
            headers={"Content-Type": "application/dicom"},
        )
        assert stored.status_code == 200, stored.text
        instance = (
            f"{web}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
            f"/instances/{ct.SOPInstanceUID}"
        )
        assert httpx.get(f"{instance}/rendered").status_code == 200
        workers = descendants(server.process.pid)
        assert len(workers) >= 2  # the fork server and at least one worker
        server.kill()
    deadline = time.monotonic() + 10
    while running(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(workers)
