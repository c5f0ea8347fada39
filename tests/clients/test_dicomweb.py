"""The DICOMweb client library, sync and async, against a real `dicomstore serve` process."""

from __future__ import annotations

import datetime
import socket
import tracemalloc
from typing import Any

import pydicom
import pytest

from dicomstore_client.connection import Connection
from dicomstore_client.dicomweb import (
    AsyncDicomWebClient,
    DicomPath,
    DicomWebClient,
    Query,
    StoreName,
    StoreResult,
    find_files,
)
from dicomstore_client.dicomweb_multipart import PartsToFiles
from dicomstore_client.errors import ClientError, ExitCode
from tests.clients.dicomweb_support import (
    CT_STUDY,
    MR_FIRST_INSTANCE,
    MR_SECOND_INSTANCE,
    MR_SERIES,
    MR_STUDY,
    pydicom_file,
    same_dataset,
    server,
    small_files,
    store_name,
)
from tests.e2e.server import ServerProcess

__all__ = ["server", "small_files", "store_name"]  # fixtures


def client(server: ServerProcess, store: str) -> DicomWebClient:
    return DicomWebClient(store, Connection(http_url=server.http_url))


def uids(results: list[dict[str, Any]], tag: str) -> set[str]:
    return {result[tag]["Value"][0] for result in results}


@pytest.fixture
def stored(server, store_name, small_files):
    with client(server, store_name) as web:
        report = web.store_files([small_files[key] for key in ("ct", "mr1", "mr2")])
    assert not report.failed
    return small_files


def test_store_files_reports_each_file_stored_or_refused(server, store_name, small_files):
    seen: list[StoreResult] = []
    with client(server, store_name) as web:
        report = web.store_folder(small_files["ct"].parent, parallel=3, on_result=seen.append)
    assert {result.path for result in report.stored} == {
        small_files["ct"],
        small_files["mr1"],
        small_files["mr2"],
    }
    [failed] = report.failed
    assert failed.path == small_files["junk"]
    assert "not a DICOM Part 10 file" in (failed.error or "")
    assert sorted(seen, key=str) == sorted(report.results, key=str)
    assert sum(r.size for r in report.results) == sum(
        p.stat().st_size for p in small_files.values()
    )
    assert all(
        r.retrieve_url and MR_STUDY in r.retrieve_url
        for r in report.stored
        if r.path != small_files["ct"]
    )


@pytest.mark.parametrize("per_request", [1, 2, 4])
def test_store_files_matches_each_failure_to_its_file_in_a_request(
    server, store_name, small_files, per_request
):
    with client(server, store_name) as web:
        web.store_files([small_files["ct"]])
        files = [small_files[key] for key in ("ct", "junk", "mr1", "mr2")]
        report = web.store_files(files, per_request=per_request, parallel=2)
    errors = {result.path.name: result.error for result in report.results}
    assert errors["MR_small.dcm"] is None
    assert errors["MR_small_2.dcm"] is None
    assert "already exists" in (errors["CT_small.dcm"] or "")
    assert "not a DICOM Part 10 file" in (errors["notes.txt"] or "")


def test_store_files_into_a_missing_store_raises_not_found(server, small_files):
    missing = "projects/p/locations/l/datasets/d/dicomStores/missing"
    with client(server, missing) as web, pytest.raises(ClientError) as raised:
        web.store_files([small_files["ct"], small_files["mr1"]])
    assert raised.value.status == "NOT_FOUND"
    assert raised.value.exit_code == ExitCode.NOT_FOUND
    assert "missing" in str(raised.value)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), {CT_STUDY, MR_STUDY}),
        (Query(patient_id="4MR1"), {MR_STUDY}),
        (Query(study_date=(datetime.date(2004, 8, 1), None)), {MR_STUDY}),
        (Query(study_date=("20040101", "20040131")), {CT_STUDY}),
        (Query(study_date=(None, "20040131")), {CT_STUDY}),
        (Query(study_date=datetime.date(2004, 8, 26)), {MR_STUDY}),
        (Query(patient_name="compressedsamples", fuzzy=True), {CT_STUDY, MR_STUDY}),
        (Query(patient_name="compressedsamples"), set()),
        (Query(filters={"00100020": "1CT1"}), {CT_STUDY}),
    ],
)
def test_search_studies_with_filters(server, store_name, stored, query, expected):
    with client(server, store_name) as web:
        assert uids(web.search("studies", query), "0020000D") == expected


def test_search_series_and_instances_within_a_study_and_by_modality(server, store_name, stored):
    with client(server, store_name) as web:
        assert uids(web.search("series", Query(modality="MR")), "0020000E") == {MR_SERIES}
        instances = web.search("instances", study=MR_STUDY, series=MR_SERIES)
        first = web.search("instances", Query(limit=1), study=MR_STUDY)
        second = web.search("instances", Query(limit=1, offset=1), study=MR_STUDY)
        every = list(web.search_all("instances", page_size=1))
        detailed = web.search("instances", Query(include_fields=("all",)), study=CT_STUDY)
    assert len(instances) == 2
    assert len(first) == len(second) == 1
    assert uids(first + second, "00080018") == uids(instances, "00080018")
    assert len(every) == 3
    assert "00180050" in detailed[0]  # Slice Thickness, not a default attribute


def test_search_with_an_unknown_key_raises_invalid_argument(server, store_name):
    with client(server, store_name) as web, pytest.raises(ClientError) as raised:
        web.search("studies", Query(filters={"NoSuchKeyword": "1"}))
    assert raised.value.status == "INVALID_ARGUMENT"
    assert raised.value.exit_code == ExitCode.INVALID
    assert "NoSuchKeyword" in raised.value.message


@pytest.mark.parametrize(
    "path",
    [
        f"studies/{MR_STUDY}",
        f"studies/{MR_STUDY}/series/{MR_SERIES}",
        f"studies/{MR_STUDY}/series/{MR_SERIES}/instances/{MR_SECOND_INSTANCE}",
    ],
)
def test_retrieve_writes_each_instance_to_a_file_named_by_its_uids(
    server, store_name, stored, tmp_path, path
):
    with client(server, store_name) as web:
        files = web.retrieve(path, tmp_path / "out")
    folder = tmp_path / "out" / MR_STUDY / MR_SERIES
    expected = (
        {MR_SECOND_INSTANCE} if "instances" in path else {MR_FIRST_INSTANCE, MR_SECOND_INSTANCE}
    )
    assert {file.path for file in files} == {folder / f"{uid}.dcm" for uid in expected}
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == sorted(
        f"{uid}.dcm" for uid in expected
    )
    assert same_dataset(folder / f"{MR_SECOND_INSTANCE}.dcm", stored["mr2"])
    assert all(file.size == file.path.stat().st_size for file in files)


def test_retrieve_of_a_missing_study_raises_not_found_and_writes_nothing(
    server, store_name, tmp_path
):
    with client(server, store_name) as web, pytest.raises(ClientError) as raised:
        web.retrieve("studies/1.2.3", tmp_path / "out")
    assert raised.value.exit_code == ExitCode.NOT_FOUND
    assert list((tmp_path / "out").iterdir()) == []


def test_delete_instance_series_and_study(server, store_name, stored):
    with client(server, store_name) as web:
        instance = DicomPath(MR_STUDY, MR_SERIES, MR_SECOND_INSTANCE)
        assert web.delete(instance) is None  # an instance is deleted at once
        assert len(web.search("instances", study=MR_STUDY)) == 1
        assert web.delete(f"studies/{CT_STUDY}") is not None  # an operation, waited for
        assert uids(web.search("studies"), "0020000D") == {MR_STUDY}
        web.delete(f"studies/{MR_STUDY}/series/{MR_SERIES}")
        assert web.search("studies") == []
        with pytest.raises(ClientError) as raised:
            web.delete(f"studies/{CT_STUDY}")
    assert raised.value.exit_code == ExitCode.NOT_FOUND


def test_a_server_that_does_not_answer_is_unavailable(small_files):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connection = Connection(http_url=f"http://127.0.0.1:{port}")
    with DicomWebClient("projects/p/locations/l/datasets/d/dicomStores/s", connection) as web:
        for call in (lambda: web.search("studies"), lambda: web.store_files([small_files["ct"]])):
            with pytest.raises(ClientError) as raised:
                call()
            assert raised.value.exit_code == ExitCode.UNAVAILABLE
            assert f"127.0.0.1:{port}" in str(raised.value)


def test_a_store_id_takes_its_project_location_and_dataset(server, store_name):
    store_id = StoreName.parse(store_name).store
    connection = Connection(http_url=server.http_url)
    with DicomWebClient(store_id, connection, project="p", location="l", dataset="d") as web:
        assert web.search("studies") == []
    with pytest.raises(ClientError) as raised:
        DicomWebClient(store_id, connection, project="p")
    assert "--location, --dataset" in str(raised.value)


async def test_async_client_stores_searches_retrieves_and_deletes(
    server, store_name, small_files, tmp_path
):
    connection = Connection(http_url=server.http_url)
    async with AsyncDicomWebClient(store_name, connection) as web:
        report = await web.store_files(find_files([small_files["ct"].parent]), parallel=2)
        assert {r.path.name for r in report.failed} == {"notes.txt"}
        assert len(report.stored) == 3
        mr = await web.search("studies", Query(patient_id="4MR1"))
        assert uids(mr, "0020000D") == {MR_STUDY}
        assert len([r async for r in web.search_all("instances", page_size=2)]) == 3
        files = await web.retrieve(f"studies/{CT_STUDY}", tmp_path / "out")
        assert [file.path.name for file in files] == [
            "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322.dcm"
        ]
        assert same_dataset(files[0].path, small_files["ct"])
        await web.delete(f"studies/{CT_STUDY}")
        assert uids(await web.search("studies"), "0020000D") == {MR_STUDY}
        with pytest.raises(ClientError) as raised:
            await web.search("studies", Query(filters={"Nope": "1"}))
        assert raised.value.exit_code == ExitCode.INVALID


def _multipart(boundary: str, parts: list[bytes]) -> bytes:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n"
        f"Content-Location: http://h/studies/1.{n}/series/2.{n}/instances/3.{n}\r\n\r\n".encode()
        + part
        + b"\r\n"
        for n, part in enumerate(parts)
    )
    return body + f"--{boundary}--\r\n".encode()


def test_parts_are_written_as_they_arrive_whatever_the_chunking(tmp_path):
    parts = [b"\x00" * 1000 + b"--B-almost-a-boundary\r\n--", bytes(range(256)) * 50]
    body = _multipart("B-1", parts)
    reader = PartsToFiles('multipart/related; type="application/dicom"; boundary=B-1', tmp_path)
    written = []
    for index in range(0, len(body), 7):
        for part in reader.feed(body[index : index + 7]):
            written.append((part.headers["content-location"], part.path.read_bytes()))
            assert part.size == len(written[-1][1])
    reader.close()
    assert [content for _, content in written] == parts
    assert written[1][0].endswith("/instances/3.1")


def test_a_multipart_response_cut_short_is_an_error_and_leaves_no_file(tmp_path):
    body = _multipart("B", [b"x" * 5000])
    reader = PartsToFiles("multipart/related; boundary=B", tmp_path)
    assert reader.feed(body[:3000]) == []
    with pytest.raises(ClientError) as raised:
        reader.close()
    assert raised.value.exit_code == ExitCode.UNAVAILABLE
    assert list(tmp_path.iterdir()) == []


def test_store_and_retrieve_stream_a_large_instance_in_bounded_memory(server, store_name, tmp_path):
    large = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    large.Rows, large.Columns = 3072, 4096
    large.PixelData = bytes(range(256)) * (3072 * 4096 * 2 // 256)  # 24 MiB of 16-bit pixels
    path = tmp_path / "large.dcm"
    large.save_as(path, enforce_file_format=True)

    tracemalloc.start()
    try:
        with client(server, store_name) as web:
            report = web.store_files([path])
            stored_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            [retrieved] = web.retrieve(f"studies/{CT_STUDY}", tmp_path / "out")
            retrieved_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert not report.failed
    assert retrieved.path.read_bytes() == path.read_bytes()
    assert stored_peak < 4 * 2**20 and retrieved_peak < 4 * 2**20, (stored_peak, retrieved_peak)
