"""Fixtures for the client tests: a real `dicomstore serve` process, datasets in it, files in its
embedded Cloud Storage, and the command line run as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicomstore_client.connection import Connection
from dicomstore_client.management import ManagementClient
from tests.e2e.server import ServerProcess, start_server
from tests.unit.dicom.dicomfiles import data_file

PROJECT, LOCATION = "demo", "local"
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm")


@dataclass
class LiveServer:
    process: ServerProcess
    data_dir: Path

    @property
    def grpc_address(self) -> str:
        return self.process.target.grpc_address

    @property
    def http_url(self) -> str:
        return self.process.target.http_url

    def connection(self, token: str | None = None) -> Connection:
        return Connection(grpc_target=self.grpc_address, http_url=self.http_url, token=token)

    def client(self, dataset: str | None = None) -> ManagementClient:
        return ManagementClient(
            self.connection(), project=PROJECT, location=LOCATION, dataset=dataset
        )

    def bucket(self, name: str) -> Path:
        """A bucket of the embedded Cloud Storage: the folder DATA_DIR/gcs/NAME."""
        path = self.data_dir / "gcs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, dataset: str | None = None) -> dict[str, str]:
        """The environment of a `dicomstore-client` child process aimed at this server."""
        # No DICOMSTORE_* settings of the caller's, and no colours forced on a pipe.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("DICOMSTORE_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")
        }
        env |= {
            "DICOMSTORE_GRPC_ENDPOINT": self.grpc_address,
            "DICOMSTORE_HTTP_ENDPOINT": self.http_url,
            "DICOMSTORE_PROJECT": PROJECT,
            "DICOMSTORE_LOCATION": LOCATION,
        }
        if dataset is not None:
            env["DICOMSTORE_DATASET"] = dataset
        return env


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("clients") / "data"
    with start_server(data_dir) as process:
        yield LiveServer(process, data_dir)


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dataset(live_server: LiveServer) -> str:
    """The id of a new, empty dataset of the live server."""
    dataset_id = unique_id("ds")
    with live_server.client() as client:
        client.create_dataset(dataset_id)
    return dataset_id


@pytest.fixture
def scans(live_server: LiveServer) -> str:
    """A new bucket holding two DICOM files of pydicom's and one text file: `gs://BUCKET`."""
    name = unique_id("scans")
    folder = live_server.bucket(name) / "study"
    folder.mkdir()
    for file in DICOM_FILES:
        (folder / file).write_bytes(data_file(file).read_bytes())
    (folder / "notes.txt").write_text("not a DICOM file\n")
    return f"gs://{name}"


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`dicomstore-client ARGS` as a child process whose stdout and stderr are pipes."""
    return subprocess.run(
        [sys.executable, "-m", "dicomstore_client.cli", *args],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
    )
