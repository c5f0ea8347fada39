"""A throw-away PostgreSQL server for the tests: `dicomstore_bench.postgres`'s cluster in a
temporary directory, durability off (the tests never survive a power cut). One per session
(`postgres_cluster`, stopped and removed at its end), one database per test (`database_url`,
dropped with `drop_database`).

Missing PostgreSQL (or, as root, a `postgres` user), the test skips; under the `CI` environment
variable it fails instead (`.ci/run` installs Debian's `postgresql`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomstore_bench import postgres
from dicomstore_bench.postgres import PostgresCluster

__all__ = ["PostgresCluster", "database_url", "drop_database", "postgres_cluster"]

_running: PostgresCluster | None = None
_users = 0
_databases: dict[Path, str] = {}


def start_or_skip() -> PostgresCluster:
    """A started cluster in a new temporary directory; skip (fail under CI) without one."""
    root = Path(tempfile.mkdtemp(prefix="dicomstore-pg-"))
    try:
        return postgres.start(root, durable=False)
    except postgres.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}; CI must run the PostgreSQL catalog tests", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster, stopped and removed at the end of the session.

    Each test module that imports this fixture gets a session fixture of its own: they share
    one cluster, stopped when the last of them ends."""
    global _running, _users
    if _running is None:
        _running = start_or_skip()
    _users += 1
    try:
        yield _running
    finally:
        _users -= 1
        if _users == 0:
            _running.stop()
            _running = None


def database_url(root: Path) -> str:
    """The URL of the database of a test whose storage is rooted at `root` (created empty at
    the first call; `postgres_cluster` must be running)."""
    assert _running is not None, "the postgres_cluster fixture is not active"
    if root not in _databases:
        _databases[root] = _running.create_database()
    return _running.url(_databases[root])


def drop_database(root: Path) -> None:
    """Drop the database of `root`, if any."""
    name = _databases.pop(root, None)
    if name is not None and _running is not None:
        _running.sql(f"DROP DATABASE {name} WITH (FORCE)")
