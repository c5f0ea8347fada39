"""A throw-away PostgreSQL server, for the tests (tests/postgres.py) and for
`dicomstore-replica-bench`: a cluster in a folder of the caller's, owned by the `postgres` system
user when run as root (PostgreSQL refuses to run as root), listening on a Unix socket in that
folder and on loopback, on a free port.

Durability is the caller's choice: the tests turn fsync, synchronous_commit and full_page_writes
off (they never survive a power cut), the benchmark keeps PostgreSQL's durable defaults, since a
STOW-RS is acknowledged only after its commit is durable. initdb itself skips syncing its files
either way: a crash during set-up only means starting again.

Found: the binaries of `$DICOMSTORE_POSTGRES_BIN`, else of Debian's newest
/usr/lib/postgresql/*/bin, else `initdb` on PATH. When PostgreSQL cannot run, `PostgresUnavailable`
says why (the tests turn it into a skip, the benchmark into exit status 2).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from dicomstore_bench.load import cpu_seconds
from dicomstore_bench.servers import free_port

_NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, or cannot run as this user."""


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


def _has_postgres_user() -> bool:
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return True


class PostgresCluster:
    """A cluster under `root`; `start()` makes and starts it, `stop()` stops it and removes
    `root`."""

    def __init__(self, bin_dir: Path, root: Path, *, durable: bool = False) -> None:
        self.bin_dir, self.root, self.durable = bin_dir, root, durable
        self.port = free_port()
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
            **({} if self.durable else _NOT_DURABLE),
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "start")

    def url(self, database: str = "postgres") -> str:
        """A URL of `database` over the Unix socket."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

    def tcp_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> str:
        """Run `statement` as `postgres` in database `postgres`: what psql printed, unaligned."""
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                *("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"),
                *("-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", "postgres"),
                *("-c", statement),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip()

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database's name."""
        self._count += 1
        name = f"{prefix}_{self._count}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    @property
    def postmaster_pid(self) -> int:
        """The pid of the server process, whose children are every other process of the
        cluster (first line of postmaster.pid)."""
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def cpu_seconds(self) -> float:
        """CPU time of every process of the cluster so far, including the backends and workers
        that have exited: the postmaster reaps them, so their time is in its cutime and
        cstime (/proc/PID/stat fields 16, 17). Only differences of two calls mean anything."""
        pid = self.postmaster_pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        return cpu_seconds(pid) + reaped

    def version(self) -> str:
        return self.sql("SHOW server_version")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def runnable() -> Path | str:
    """The folder of the binaries when PostgreSQL can run here (as root: as the `postgres`
    user), else why not."""
    found = binaries()
    if isinstance(found, Path) and os.geteuid() == 0 and not _has_postgres_user():
        return "PostgreSQL refuses to run as root and no `postgres` user exists"
    return found


def start(root: Path, *, durable: bool) -> PostgresCluster:
    """A started cluster in the new or empty folder `root`, which `stop()` removes (as does a
    failed start); `PostgresUnavailable` when PostgreSQL cannot run here."""
    found = runnable()
    if isinstance(found, str):
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(found)
    cluster = PostgresCluster(found, root, durable=durable)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cluster.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster
