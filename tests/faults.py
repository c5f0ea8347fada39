"""Real faults for end-to-end tests: a small tmpfs, read-only mounts, a child without root's
permission override. Each needs root (CI runs as root): outside CI a test that cannot have
them is skipped saying why; in CI (`CI` set) it fails, so that nothing is skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def unavailable(reason: str) -> None:
    """Skip, saying why; in CI, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI runs as root and must be able to run this test")
    pytest.skip(reason)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(command, 127, "", str(exc))


@contextlib.contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `where` (created), unmounted on exit."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs at {where}: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        _run("umount", str(where))


def remount_read_only(mount_point: Path) -> None:
    """Make a mounted file system read-only (nothing on it may be open for writing)."""
    done = _run("mount", "-o", "remount,ro", str(mount_point))
    if done.returncode != 0:
        unavailable(f"cannot remount {mount_point} read-only: {done.stderr.strip()}")


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[Path]:
    """`path` (a file or folder) seen read-only through a bind mount over itself."""
    bound = _run("mount", "--bind", str(path), str(path))
    if bound.returncode != 0:
        unavailable(f"cannot bind-mount {path}: {bound.stderr.strip()}")
    try:
        done = _run("mount", "-o", "remount,bind,ro", str(path))
        if done.returncode != 0:
            unavailable(f"cannot make the bind mount of {path} read-only: {done.stderr.strip()}")
        yield path
    finally:
        _run("umount", str(path))


def without_permission_override(command: list[str]) -> list[str]:
    """`command` run by util-linux's `setpriv`, which drops CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from its bounding set: the process keeps uid 0, but file permissions
    apply to it as to any owner."""
    if shutil.which("setpriv") is None:
        unavailable("setpriv (util-linux) is needed to drop root's permission override")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--", *command]


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable("this fault needs root (mount, capabilities)")


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(filler: Path, leave: int) -> None:
    """Grow `filler` until about `leave` bytes of its file system are free (never fewer)."""
    page = os.statvfs(filler.parent).f_frsize
    with filler.open("ab") as out:
        missing = free_bytes(filler.parent) - leave
        chunk = b"\0" * (1 << 20)
        while missing >= page:
            size = min(len(chunk), missing - missing % page)
            out.write(chunk[:size])
            out.flush()
            missing = free_bytes(filler.parent) - leave


def catalog_state(data_dir: Path) -> tuple[str, set[int], int]:
    """The catalog's `PRAGMA integrity_check`, its instance keys, and its invisible rows."""
    uri = f"file:{data_dir / 'catalog.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        check = "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
        keys = {int(row[0]) for row in db.execute("SELECT id FROM instances")}
        invisible = int(db.execute("SELECT COUNT(*) FROM instances WHERE state = 0").fetchone()[0])
    return check, keys, invisible


def blob_files(data_dir: Path) -> list[str]:
    """Every file under the blob folder, relative to it (partial writes included)."""
    root = data_dir / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def orphans(data_dir: Path) -> list[str]:
    """Files under the blob folder that no catalog row owns."""
    _, keys, _ = catalog_state(data_dir)
    owned = {f"{key}.dcm" for key in keys}
    return [name for name in blob_files(data_dir) if Path(name).name not in owned]
