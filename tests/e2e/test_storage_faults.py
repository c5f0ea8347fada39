"""Storage faults while serving reach clients as clear statuses, over both transports, and lose
nothing: never a traceback, never a bare 500 without a request id.

- a catalog locked by another connection: UNAVAILABLE (503) on gRPC, REST and STOW-RS; a server
  in this process, whose catalog waits 0.2 s for a lock instead of 10 s;
- blob storage turned read-only (a read-only bind mount over the blob folder of a running
  `dicomstore serve`): STOW-RS is INTERNAL (500) naming the cause, reads go on;
- permission denied (a `dicomstore serve` without root's permission override, folders and files
  chmod-ed): writes and reads are INTERNAL, and a read that fails once a multipart response is
  under way breaks the response off, so that the client cannot take it for complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from tests.conftest import settings_for
from tests.e2e.server import ServerProcess, base_environment, external_target, serve_command
from tests.e2e.test_full_disk import SERIES, STUDY, instance, retrieve, stored_uids, stow
from tests.faults import (
    catalog_state,
    orphans,
    read_only_bind,
    require_root,
    without_permission_override,
)

from dicomstore.app import App
from dicomstore.catalog.sqlite import SqliteCatalog

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="breaks the storage of its own servers"
)

LOCATION = "projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"


def request_id_of(message: str) -> str:
    match = re.search(r"\(request id (\S+)\)$", message)
    assert match is not None, message
    return match[1]


def assert_error(response: httpx.Response, http: int, status: str, says: str) -> None:
    """Google's error body with `status`, a message saying `says` and naming the request id."""
    assert response.status_code == http, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (http, status)
    assert says in error["message"]
    assert request_id_of(error["message"]) == response.headers["x-request-id"]
    assert "Traceback" not in response.text


def setup_store(client: httpx.Client, numbers: tuple[int, ...] = (1, 2)) -> None:
    client.post(f"/v1/{LOCATION}/datasets?datasetId=d").raise_for_status()
    client.post(f"/v1/{DATASET}/dicomStores?dicomStoreId=s").raise_for_status()
    for number in numbers:
        assert stow(client, [instance(number, pixels=4000)], "single").status_code == 200


def assert_only(client: httpx.Client, data_dir: Path, numbers: tuple[int, ...]) -> None:
    """Exactly instances `numbers` are visible and on disk, byte-identical; nothing else."""
    assert stored_uids(client) == {f"{SERIES}.{n}" for n in numbers}
    for number in numbers:
        assert retrieve(client, number) == instance(number, pixels=4000)
    check, keys, invisible = catalog_state(data_dir)
    assert (check, len(keys), invisible) == ("ok", len(numbers), 0)
    assert orphans(data_dir) == []


# --- a locked catalog ---------------------------------------------------------------------------


@pytest.fixture
async def locked_app(tmp_path: Path) -> AsyncIterator[App]:
    settings = settings_for(tmp_path / "data")
    app = App(settings)
    app.catalog = SqliteCatalog(settings.catalog_path, busy_timeout=0.2)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Another connection holds the catalog's write lock (as a backup or a shell could)."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def refused_while_locked(client: httpx.Client) -> None:
    """REST and STOW-RS (single part and multipart) answer UNAVAILABLE; reads go on."""
    rest = client.post(f"/v1/{LOCATION}/datasets?datasetId=rest")
    assert_error(rest, 503, "UNAVAILABLE", "the catalog is locked by another connection")
    for form, bodies in [
        ("single", [instance(3, pixels=4000)]),
        ("multipart", [instance(n, pixels=4000) for n in (3, 4)]),
    ]:
        assert_error(stow(client, bodies, form), 503, "UNAVAILABLE", "the catalog is locked")
    assert stored_uids(client) == {f"{SERIES}.1", f"{SERIES}.2"}


def works_once_unlocked(client: httpx.Client, data_dir: Path) -> None:
    assert_only(client, data_dir, (1, 2))
    assert client.post(f"/v1/{LOCATION}/datasets?datasetId=rest").status_code == 200
    assert stow(client, [instance(3, pixels=4000)], "single").status_code == 200
    assert_only(client, data_dir, (1, 2, 3))


async def test_locked_catalog_is_unavailable_on_both_transports_then_works(
    locked_app: App,
) -> None:
    app = locked_app
    # The blocking HTTP client runs in a thread: the server runs on this test's event loop.
    client = httpx.Client(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
    with client:
        await asyncio.to_thread(setup_store, client)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
            request = dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id="grpc")
            with exclusive_lock(app.settings.catalog_path):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await datasets.CreateDataset(request)
                await asyncio.to_thread(refused_while_locked, client)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            details = caught.value.details() or ""
            assert "the catalog is locked by another connection" in details
            trailer = dict(caught.value.trailing_metadata() or ())
            assert request_id_of(details) == trailer["x-request-id"]

            await datasets.CreateDataset(request)
            await asyncio.to_thread(works_once_unlocked, client, app.settings.data_dir)


# --- a real server whose storage turns against it -----------------------------------------------


@contextlib.contextmanager
def serve(data_dir: Path, *, permissions: bool = True) -> Iterator[ServerProcess]:
    """`dicomstore serve`, with root's permission override dropped unless `permissions`."""
    command = serve_command(data_dir)
    process = subprocess.Popen(
        command if permissions else without_permission_override(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=base_environment(None),
    )
    with ServerProcess(process) as server:
        server.wait_ready()
        yield server


def logged_error(server: ServerProcess, request_id: str) -> str:
    """The message of the error line the server logged for `request_id`."""
    found = server.wait_for_records(
        lambda r: r.get("request_id") == request_id and r.get("level") == "error"
    )
    assert found, server.stderr()[-3000:]
    return str(found[0]["message"])


def test_read_only_blob_storage_refuses_stow_as_internal_and_keeps_serving(
    tmp_path: Path,
) -> None:
    require_root()
    data_dir = tmp_path / "data"
    with serve(data_dir) as server, httpx.Client(base_url=server.http_url, timeout=30) as client:
        setup_store(client)
        with read_only_bind(data_dir / "blobs"):
            for form, bodies in [
                ("single", [instance(3, pixels=4000)]),
                ("multipart", [instance(n, pixels=4000) for n in (3, 4)]),
            ]:
                refused = stow(client, bodies, form)
                assert_error(refused, 500, "INTERNAL", "writing a blob: read-only file system")
                message = refused.json()["error"]["message"]
                assert "writing a blob" in logged_error(server, request_id_of(message))
            assert_only(client, data_dir, (1, 2))
        assert stow(client, [instance(3, pixels=4000)], "single").status_code == 200
        assert_only(client, data_dir, (1, 2, 3))


def blob_path(data_dir: Path, number: int) -> Path:
    """Where instance `number`'s blob lives (its key from the catalog)."""
    uri = f"file:{data_dir / 'catalog.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        key, store = db.execute(
            "SELECT id, store_key FROM instances WHERE sop_uid = ?", (f"{SERIES}.{number}",)
        ).fetchone()
    return data_dir / "blobs" / str(store) / f"{key % 256:02x}" / f"{key}.dcm"


def test_permission_denied_is_internal_and_breaks_off_a_response_under_way(
    tmp_path: Path,
) -> None:
    require_root()
    data_dir = tmp_path / "data"
    with (
        serve(data_dir, permissions=False) as server,
        httpx.Client(base_url=server.http_url, timeout=30) as client,
    ):
        setup_store(client)
        store_folder = blob_path(data_dir, 1).parent.parent
        folders = [store_folder, *store_folder.iterdir()]
        for folder in folders:
            folder.chmod(0o555)
        try:
            refused = stow(client, [instance(3, pixels=4000)], "single")
        finally:
            for folder in folders:
                folder.chmod(0o755)
        assert_error(refused, 500, "INTERNAL", "writing a blob: permission denied")

        second = blob_path(data_dir, 2)
        second.chmod(0o000)
        # Alone, the unreadable instance fails before its response starts: an error body.
        alone = client.get(
            f"/v1/{DATASET}/dicomStores/s/dicomWeb/studies/{STUDY}/series/{SERIES}"
            f"/instances/{SERIES}.2",
            headers={"Accept": "application/dicom; transfer-syntax=*"},
        )
        assert_error(alone, 500, "INTERNAL", "reading a blob: permission denied")
        # In a study, after a part already sent: the response is broken off, never completed.
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream(
                "GET",
                f"/v1/{DATASET}/dicomStores/s/dicomWeb/studies/{STUDY}",
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
            ) as study,
        ):
            assert study.status_code == 200
            request_id = study.headers["x-request-id"]
            study.read()
        assert "reading a blob" in logged_error(server, request_id)
        access = server.wait_for_records(
            lambda r: r.get("request_id") == request_id and r.get("message") == "rpc"
        )
        assert access[0]["code"] == "INTERNAL"
        second.chmod(0o644)
        # Each traceback logged is one of ours, with its request id (none from uvicorn).
        assert all("request_id" in r for r in server.records() if "traceback" in r)
        assert_only(client, data_dir, (1, 2))
    assert "Traceback" not in "\n".join(
        line for line in server.stderr().splitlines() if not line.startswith("{")
    )
