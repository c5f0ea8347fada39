"""Shared by the DICOMweb client tests: one `dicomstore serve` per test module, a fresh DICOM
store per test (created through Google's REST API), and pydicom's test files."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID

from tests.e2e.server import ServerProcess, start_server

PROJECT, LOCATION, DATASET = "p", "l", "d"
DATASET_NAME = f"projects/{PROJECT}/locations/{LOCATION}/datasets/{DATASET}"
_store_ids = itertools.count(1)


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


TEST_FILES = pydicom_file("CT_small.dcm").parent


def create_store(http_url: str, store_id: str) -> str:
    """Create the dataset (once) and a store in it; the store's full name."""
    created = httpx.post(
        f"{http_url}/v1/projects/{PROJECT}/locations/{LOCATION}/datasets",
        params={"datasetId": DATASET},
    )
    assert created.status_code in (200, 409), created.text
    created = httpx.post(
        f"{http_url}/v1/{DATASET_NAME}/dicomStores", params={"dicomStoreId": store_id}
    )
    assert created.status_code == 200, created.text
    return f"{DATASET_NAME}/dicomStores/{store_id}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("dicomstore") / "data") as process:
        yield process


@pytest.fixture
def store_name(server: ServerProcess) -> str:
    """A new empty store on the module's server."""
    return create_store(server.http_url, f"s{next(_store_ids)}")


CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
MR_STUDY = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
MR_SERIES = "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457"
MR_FIRST_INSTANCE = "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"
MR_SECOND_INSTANCE = "1.3.6.1.4.1.5962.1.1.4.1.2.20040826185059.5457"


@pytest.fixture
def small_files(tmp_path: Path) -> dict[str, Path]:
    """A CT study of one instance and an MR series of two, in a folder tree, with a file that
    is no DICOM: `ct`, `mr1`, `mr2`, `junk`."""
    folder = tmp_path / "upload"
    (folder / "nested" / "deeper").mkdir(parents=True)
    files = {
        "ct": folder / "CT_small.dcm",
        "mr1": folder / "nested" / "MR_small.dcm",
        "mr2": folder / "nested" / "deeper" / "MR_small_2.dcm",
        "junk": folder / "nested" / "notes.txt",
    }
    shutil.copy(pydicom_file("CT_small.dcm"), files["ct"])
    shutil.copy(pydicom_file("MR_small.dcm"), files["mr1"])
    second = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = UID(MR_SECOND_INSTANCE)
    second.InstanceNumber = 2
    second.save_as(files["mr2"], enforce_file_format=True)
    files["junk"].write_text("not a DICOM file\n")
    return files


def same_dataset(left: Path, right: Path) -> bool:
    return bool(pydicom.dcmread(left) == pydicom.dcmread(right))
