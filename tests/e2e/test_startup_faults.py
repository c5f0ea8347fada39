"""Start-up faults of `dicomstore serve`: one line on stderr naming the path or the port, exit
status 1, and nothing created (no data directory, catalog or blob folder).

Tests run as root, whom file permissions do not stop: a directory or file is made unwritable
by a read-only mount (a tmpfs remounted read-only, or a read-only bind mount of the file), or
the server runs without root's permission override (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
dropped), where a mode like 0o555 applies to it as to any owner.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.e2e.server import (
    ServerProcess,
    base_environment,
    external_target,
    serve_command,
    start_server,
)
from tests.faults import (
    read_only_bind,
    remount_read_only,
    require_root,
    tmpfs,
    without_permission_override,
)

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="starts its own servers with broken settings"
)


def refusal(
    data_dir: Path,
    *args: str,
    ports: bool = True,
    wrap: Callable[[list[str]], list[str]] = list,
) -> list[str]:
    """Run `dicomstore serve` (its command line passed through `wrap`) expecting it to refuse
    to start: its stderr lines."""
    process = subprocess.Popen(
        wrap(serve_command(data_dir, *args, ports=ports)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=base_environment(None),
    )
    with ServerProcess(process) as server:
        if server.started():
            pytest.fail(f"started serving on gRPC port {server.grpc_port}")
        assert server.wait() == 1
        return server.stderr().splitlines()


def only_line(lines: list[str]) -> str:
    assert len(lines) == 1, lines
    assert lines[0].startswith("dicomstore: cannot start: "), lines
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("transport", ["HTTP", "gRPC"])
def test_port_in_use_is_one_line_naming_it_and_creates_nothing(
    tmp_path: Path, taken_port: int, transport: str
) -> None:
    data_dir = tmp_path / "data"
    ports = {"HTTP": ("--http-port", "--grpc-port"), "gRPC": ("--grpc-port", "--http-port")}
    taken, free = ports[transport]
    lines = refusal(data_dir, taken, str(taken_port), free, "0", ports=False)
    assert only_line(lines).endswith(
        f"cannot bind {transport} to 127.0.0.1:{taken_port}: address already in use"
    )
    assert not data_dir.exists()


def test_data_dir_that_is_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_bytes(b"not a folder")
    line = only_line(refusal(data_dir))
    assert line.endswith(f"data directory {data_dir} is not a directory")
    assert data_dir.read_bytes() == b"not a folder"


def test_data_dir_under_a_file_is_one_line_naming_both(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    data_dir = tmp_path / "file" / "data"
    line = only_line(refusal(data_dir))
    assert line.endswith(f"{data_dir} cannot be created: {tmp_path / 'file'} is not a directory")


@pytest.mark.parametrize("exists", [True, False], ids=["existing", "to-create"])
def test_data_dir_on_a_read_only_file_system_is_one_line_naming_it(
    tmp_path: Path, exists: bool
) -> None:
    require_root()
    with tmpfs(tmp_path / "disk", 1 << 20) as disk:
        data_dir = disk / "data"
        if exists:
            data_dir.mkdir()
        remount_read_only(disk)
        line = only_line(refusal(data_dir))
    if exists:
        assert line.endswith(f"data directory {data_dir} is not writable (read-only file system)")
    else:
        assert line.endswith(
            f"data directory {data_dir} cannot be created in {disk} (read-only file system)"
        )


def test_data_dir_without_write_permission_is_one_line_and_creates_nothing(
    tmp_path: Path,
) -> None:
    require_root()
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o555)
    data_dir.chmod(0o555)
    line = only_line(refusal(data_dir, wrap=without_permission_override))
    assert line.endswith(f"data directory {data_dir} is not writable (permission denied)")
    assert list(data_dir.iterdir()) == []


@pytest.fixture
def stopped_catalog(tmp_path: Path) -> Path:
    """A data directory whose catalog a clean run created, without its blob folder."""
    data_dir = tmp_path / "data"
    with start_server(data_dir) as server:
        assert server.terminate() == 0
    (data_dir / "blobs").rmdir()
    assert sorted(p.name for p in data_dir.iterdir()) == ["catalog.sqlite"]
    return data_dir


def test_read_only_catalog_is_one_line_naming_it_and_creates_nothing(
    stopped_catalog: Path,
) -> None:
    require_root()
    catalog = stopped_catalog / "catalog.sqlite"
    with read_only_bind(catalog):
        line = only_line(refusal(stopped_catalog))
    assert line.endswith(f"{catalog} is not writable (read-only file system)")
    assert sorted(p.name for p in stopped_catalog.iterdir()) == ["catalog.sqlite"]


def test_catalog_without_write_permission_is_one_line_and_creates_nothing(
    stopped_catalog: Path,
) -> None:
    require_root()
    catalog = stopped_catalog / "catalog.sqlite"
    catalog.chmod(0o444)
    line = only_line(refusal(stopped_catalog, wrap=without_permission_override))
    assert line.endswith(f"{catalog} is not writable (permission denied)")
    assert sorted(p.name for p in stopped_catalog.iterdir()) == ["catalog.sqlite"]


def test_blob_folder_that_is_a_file_is_one_line_naming_it(stopped_catalog: Path) -> None:
    (stopped_catalog / "blobs").write_bytes(b"")
    line = only_line(refusal(stopped_catalog))
    assert line.endswith(f"folder {stopped_catalog / 'blobs'} is not a directory")


def test_damaged_catalog_is_one_line_naming_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    catalog = data_dir / "catalog.sqlite"
    catalog.write_bytes(b"this is not an SQLite database, " * 512)
    line = only_line(refusal(data_dir))
    assert str(catalog) in line
    assert line.endswith("the catalog file is not an SQLite database")
