"""A throw-away PostgreSQL server for the tests: a cluster in a temporary directory, owned by the
`postgres` system user when the tests run as root (PostgreSQL refuses to run as root), listening
on a Unix socket in that directory and on loopback, on a free port; durability off (the tests
never survive a power cut). One per session (`postgres_cluster`, stopped and removed at its
end), one database per test (`database_url`, dropped with `drop_database`).

Found: the binaries of `$DICOMSTORE_POSTGRES_BIN`, else of Debian's newest
/usr/lib/postgresql/*/bin, else `initdb` on PATH. Missing, the test skips; under the `CI`
environment variable it fails instead (`.ci/run` installs Debian's `postgresql`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT_SKIPS = "PostgreSQL refuses to run as root and no `postgres` user exists"


def binaries() -> Path | str:
    """The folder of initdb, pg_ctl and psql, or why none was found."""
    named = os.environ.get("DICOMSTORE_POSTGRES_BIN")
    candidates = [Path(named)] if named else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return folder
    return "PostgreSQL is not installed (initdb, pg_ctl and psql not found)"


def _version(folder: Path) -> int:
    name = folder.parent.name
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A running cluster under `root`; `stop()` stops it and removes `root`."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir, self.root = bin_dir, root
        self.port = _free_port()
        self._user: pwd.struct_passwd | None = (
            pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        )
        self._count = 0

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.root / "data"
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "start")

    def url(self, database: str = "postgres") -> str:
        """A URL of `database` over the Unix socket."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

    def tcp_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> None:
        subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                statement,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def create_database(self) -> str:
        """A new, empty database's name."""
        self._count += 1
        name = f"test_{self._count}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_running: PostgresCluster | None = None
_users = 0
_databases: dict[Path, str] = {}


def start_or_skip() -> PostgresCluster:
    """A started cluster in a new temporary directory; skip (fail under CI) without one."""
    found = binaries()
    if isinstance(found, str) or (os.geteuid() == 0 and not _has_postgres_user()):
        reason = found if isinstance(found, str) else _ROOT_SKIPS
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the PostgreSQL catalog tests", pytrace=False)
        pytest.skip(reason)
    cluster = PostgresCluster(found, Path(tempfile.mkdtemp(prefix="dicomstore-pg-")))
    try:
        cluster.start()
    except BaseException:
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    return cluster


def _has_postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


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
