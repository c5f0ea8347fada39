"""`dicomstore serve --catalog postgresql://...`: a server whose catalog is a PostgreSQL database
(tests/postgres.py runs one) stores over STOW-RS, finds over QIDO-RS and keeps what it stored
across a restart; an unreachable database is one start-up line that creates nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from tests.e2e.server import external_target, launch, start_server
from tests.e2e.test_startup_faults import only_line
from tests.e2e.test_stow_crash import STUDY, create_store, sop_uids, store_study
from tests.postgres import (
    PostgresCluster,
    database_url,
    drop_database,
    postgres_cluster,  # noqa: F401  (the session's cluster)
)

pytestmark = pytest.mark.skipif(
    external_target() is not None, reason="starts its own servers on a PostgreSQL catalog"
)


def refusal(data_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Run `dicomstore serve` expecting it to refuse to start: its stderr lines."""
    with launch(data_dir, *args, env=env) as server:
        if server.started():
            pytest.fail(f"started serving on gRPC port {server.grpc_port}")
        assert server.wait() == 1
        return server.stderr().splitlines()


@pytest.fixture
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of the session's cluster, dropped after the test."""
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    request.addfinalizer(lambda: drop_database(tmp_path))
    assert cluster.port
    return database_url(tmp_path)


def test_serve_stores_finds_and_keeps_instances_across_a_restart(
    tmp_path: Path, catalog_url: str
) -> None:
    data_dir = tmp_path / "data"
    with start_server(data_dir, "--catalog", catalog_url) as server:
        create_store(server.http_url)
        stored = store_study(server.http_url, 3)
        assert sop_uids(server.http_url) == stored
        assert server.terminate() == 0
    # The environment twin names the same database; no SQLite catalog was ever made.
    with start_server(data_dir, env={"DICOMSTORE_CATALOG": catalog_url}) as again:
        assert sop_uids(again.http_url) == stored
        assert again.terminate() == 0
    assert not list(data_dir.glob("catalog.sqlite*"))
    assert len(stored) == 3 and all(uid.startswith(STUDY) for uid in stored)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_unreachable_database_is_one_line_without_password_and_creates_nothing(
    tmp_path: Path, how: str
) -> None:
    data_dir = tmp_path / "data"
    url = "postgresql://dicomstore:s3cret@127.0.0.1:1/catalog"
    if how == "flag":
        lines = refusal(data_dir, "--catalog", url)
    else:
        lines = refusal(data_dir, env={"DICOMSTORE_CATALOG": url})
    line = only_line(lines)
    assert line.endswith(
        "cannot open the catalog postgresql://dicomstore:***@127.0.0.1:1/catalog:"
        " connection refused"
    ), line
    assert not data_dir.exists()


def test_missing_database_is_one_line_naming_it(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    line = only_line(refusal(tmp_path / "data", "--catalog", cluster.tcp_url("absent")))
    assert line.endswith('database "absent" does not exist'), line


def test_a_catalog_url_of_another_kind_is_refused(tmp_path: Path) -> None:
    lines = refusal(tmp_path / "data", "--catalog", "mysql://host/db")
    assert lines == [
        "--catalog: must be a postgresql:// URL (or empty for the SQLite catalog),"
        " got 'mysql://host/db'"
    ]
