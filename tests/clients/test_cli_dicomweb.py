"""`dicomstore-client store|search|retrieve|delete` as a subprocess against a real server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dicomstore_client.connection import Connection
from dicomstore_client.dicomweb import DicomWebClient
from tests.clients.dicomweb_support import (
    CT_STUDY,
    MR_FIRST_INSTANCE,
    MR_SECOND_INSTANCE,
    MR_SERIES,
    MR_STUDY,
    TEST_FILES,
    same_dataset,
    server,
    small_files,
    store_name,
)
from tests.e2e.server import ServerProcess

__all__ = ["server", "small_files", "store_name"]  # fixtures

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def cli(http_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMSTORE_")}
    env["DICOMSTORE_HTTP_ENDPOINT"] = http_url
    return subprocess.run(
        [sys.executable, "-m", "dicomstore_client.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=100,
    )


def progress_lines(stdout: str, label: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(f"{label}: ")]


@pytest.fixture
def stored(server, store_name, small_files):
    folder = small_files["ct"].parent
    result = cli(server.http_url, "store", store_name, f"{folder}/**/*.dcm")
    assert result.returncode == 0, result.stdout + result.stderr
    return small_files


def test_store_of_pydicom_test_files_reports_the_refused_ones_and_stores_the_rest(
    server: ServerProcess, store_name
):
    result = cli(server.http_url, "store", store_name, str(TEST_FILES), "-m", "4")

    assert result.returncode == 1, result.stderr
    failed = dict(
        line.removeprefix("failed: ").split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith("failed: ")
    )
    assert "not a DICOM Part 10 file" in failed[str(TEST_FILES / "no_meta.dcm")]
    assert "not a DICOM Part 10 file" in failed[str(TEST_FILES / "test1.json")]
    assert "truncated" in failed[str(TEST_FILES / "rtplan_truncated.dcm")]
    summary = re.search(r"^stored (\d+) of (\d+) files \(.*\), (\d+) failed$", result.stdout, re.M)
    assert summary is not None, result.stdout
    stored, total, refused = map(int, summary.groups())
    assert total == sum(1 for path in TEST_FILES.rglob("*") if path.is_file())
    assert stored + refused == total and refused == len(failed)
    # Every stored file is found by search (the refused duplicates share their UIDs).
    with DicomWebClient(store_name, Connection(http_url=server.http_url)) as web:
        assert len(list(web.search_all("instances", page_size=1000))) == stored
    lines = progress_lines(result.stdout, "store")
    assert lines[-1].startswith(f"store: {stored}/{total} done, {refused} failed, 0 pending, ")
    assert not CONTROL.search(result.stdout)


def test_store_expands_a_recursive_glob_and_shows_a_progress_line_per_file(
    server, store_name, small_files
):
    folder = small_files["ct"].parent
    result = cli(server.http_url, "store", store_name, f"{folder}/**/*.dcm", "-m", "2")

    assert result.returncode == 0, result.stderr
    lines = progress_lines(result.stdout, "store")
    total_bytes = sum(small_files[key].stat().st_size for key in ("ct", "mr1", "mr2"))
    assert len(lines) == 4  # the start, then one per file
    assert [line.split(",")[0] for line in lines] == [f"store: {n}/3 done" for n in range(4)]
    assert lines[-1].endswith(f"/{total_bytes / 1000:.1f} kB")
    assert "stored 3 of 3 files" in result.stdout
    assert not CONTROL.search(result.stdout)


def test_store_with_json_output_lists_stored_and_failed_files(server, store_name, small_files):
    result = cli(server.http_url, "-o", "json", "store", store_name, str(small_files["ct"].parent))

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [entry["file"] for entry in report["failed"]] == [str(small_files["junk"])]
    assert len(report["stored"]) == 3
    assert "store: 4/4 done" not in result.stdout and "store: " in result.stderr


def test_search_shows_a_table_of_keywords(server, store_name, stored):
    result = cli(server.http_url, "search", store_name, "studies")

    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[1]
    assert re.search(r"PatientName\s.*\sStudyDate\s.*\sStudyInstanceUID", header)
    assert "CompressedSamples^MR1" in result.stdout
    assert MR_STUDY in result.stdout and CT_STUDY in result.stdout  # whole, in a pipe too


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["studies", "--filter", "PatientID=4MR1"], {MR_STUDY}),
        (["studies", "--filter", "StudyDate=20040101-20040131"], {CT_STUDY}),
        (["studies", "-f", "PatientName=compressed", "--fuzzy"], {CT_STUDY, MR_STUDY}),
        (["studies", "--limit", "1", "--offset", "5"], set()),
        (["series", "--filter", "Modality=CT"], {CT_STUDY}),
        (
            ["instances", "--study", MR_STUDY, "--series", MR_SERIES],
            {MR_FIRST_INSTANCE, MR_SECOND_INSTANCE},
        ),
    ],
)
def test_search_with_json_output_and_filters(server, store_name, stored, args, expected):
    result = cli(server.http_url, "-o", "json", "search", store_name, *args)

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    level_uid = "00080018" if args[0] == "instances" else "0020000D"
    assert {item[level_uid]["Value"][0] for item in found} == expected


def test_search_includes_asked_fields_as_columns(server, store_name, stored):
    result = cli(
        server.http_url,
        "search",
        store_name,
        "instances",
        "--include",
        "00180050",
        "--filter",
        "PatientID=1CT1",
    )

    assert result.returncode == 0, result.stderr
    assert "00180050" in result.stdout.splitlines()[1]  # Slice Thickness, by its tag


def test_retrieve_writes_the_study_into_a_folder(server, store_name, stored, tmp_path):
    out = tmp_path / "out"
    result = cli(server.http_url, "retrieve", store_name, f"studies/{MR_STUDY}", "--out", str(out))

    assert result.returncode == 0, result.stderr
    files = sorted(out.rglob("*.dcm"))
    assert [file.parent for file in files] == [out / MR_STUDY / MR_SERIES] * 2
    assert "wrote 2 files" in result.stdout
    assert progress_lines(result.stdout, "retrieve")[-1].startswith("retrieve: 2 done")
    originals = {Path(stored[key]) for key in ("mr1", "mr2")}
    for file in files:
        assert any(same_dataset(file, original) for original in originals)


def test_delete_then_search_finds_nothing(server, store_name, stored):
    deleted = cli(server.http_url, "delete", store_name, f"studies/{CT_STUDY}")
    searched = cli(
        server.http_url,
        "-o",
        "json",
        "search",
        store_name,
        "studies",
        "--filter",
        f"StudyInstanceUID={CT_STUDY}",
    )
    table = cli(server.http_url, "search", store_name, "series", "--study", CT_STUDY)

    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"deleted studies/{CT_STUDY}"
    assert json.loads(searched.stdout) == []
    assert table.stdout.strip() == "no series found"


def test_a_store_id_is_resolved_with_the_root_options(server, store_name, stored):
    store_id = store_name.rsplit("/", 1)[1]
    args = ["--project", "p", "--location", "l", "--dataset", "d", "-o", "json"]
    result = cli(server.http_url, *args, "search", store_id, "studies")

    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["search", "{missing}", "studies"], 3, "NOT_FOUND: DICOM store"),
        (["store", "{missing}", "{file}"], 3, "NOT_FOUND: DICOM store"),
        (["search", "{store}", "studies", "--filter", "Nope=1"], 5, "unknown query parameter"),
        (["search", "{store}", "studies", "--filter", "PatientID"], 2, "expected KEY=VALUE"),
        (["search", "{store}", "patients"], 2, "not one of studies, series, instances"),
        (["retrieve", "{store}", "studies/1.2.3", "--out", "{tmp}"], 3, "study 1.2.3 not found"),
        (["retrieve", "{store}", "study/1.2.3"], 2, "not a DICOMweb path"),
        (["delete", "{store}", "studies/1.2.3/series/4.5"], 3, "not found"),
        (["store", "{store}", "{tmp}/nothing/**/*.dcm"], 2, "no file matches"),
        (["search", "s", "studies"], 2, "give --project, --location, --dataset"),
    ],
)
def test_failures_are_one_line_with_an_exit_code_by_kind(
    server, store_name, small_files, tmp_path, args, exit_code, message
):
    values = {
        "store": store_name,
        "missing": store_name + "-missing",
        "file": str(small_files["ct"]),
        "tmp": str(tmp_path),
    }
    result = cli(server.http_url, *(arg.format(**values) for arg in args))

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr


def test_a_server_that_does_not_answer_exits_unavailable(small_files):
    url = f"http://127.0.0.1:{_free_port()}"
    store = "projects/p/locations/l/datasets/d/dicomStores/s"

    searched = cli(url, "search", store, "studies")
    stored = cli(url, "store", store, str(small_files["ct"]))
    debugged = cli(url, "--debug", "search", store, "studies")

    for result in (searched, stored):
        assert result.returncode == 6, result.stderr
        assert result.stderr.startswith(f"error: UNAVAILABLE: cannot reach {url}")
        assert "Traceback" not in result.stderr
    assert debugged.returncode == 6 and "Traceback" in debugged.stderr
