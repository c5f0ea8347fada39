"""Start-up checks: a server that cannot start says why in one line and creates nothing.

`App.start` calls these before it opens anything: the data directory (and the catalog and blob
folder already in it) must be usable, and both ports free. Each failure is a FAILED_PRECONDITION
whose message names the path or the address; `dicomstore serve` prints it and exits 1.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path

from dicomstore.core.errors import FailedPrecondition


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int, transport: str, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (not listening yet), else FailedPrecondition naming it.

    `reuse_port`: shared with the other sockets of this user that set it too (SO_REUSEPORT), as
    the processes of `--workers` share their ports; the kernel spreads connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio's own loop turns Nagle's algorithm off on the connections it
    # accepts only for sockets of that protocol; with Nagle on, a response written in two parts
    # waits for the client's delayed ACK (~40 ms per request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise FailedPrecondition(
            f"cannot bind {transport} to {address(host, port)}: {reason}"
        ) from exc
    return sock


def check_port(host: str, port: int, transport: str) -> None:
    """Fail now, naming the address, if `port` is taken (grpcio binds later and says less)."""
    if port != 0:
        bind(host, port, transport).close()


def check_data_dir(data_dir: Path, files: Iterable[Path], folders: Iterable[Path]) -> None:
    """The data directory exists as a writable directory or can be created; the `files`
    (catalog) and `folders` (blobs) in it that exist already can be read and written."""
    _check_folder(data_dir, "data directory")
    for folder in folders:
        if _exists(folder):
            _check_folder(folder, "folder")
    for file in files:
        if not _exists(file):
            continue
        if not file.is_file():
            raise FailedPrecondition(f"{file} is not a regular file")
        if not os.access(file, os.R_OK | os.W_OK):
            raise FailedPrecondition(f"{file} is not writable ({_refusal(file)})")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _check_folder(folder: Path, what: str) -> None:
    if _exists(folder):
        if not folder.is_dir():
            raise FailedPrecondition(f"{what} {folder} is not a directory")
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise FailedPrecondition(f"{what} {folder} is not writable ({_refusal(folder)})")
        return
    ancestor = folder.parent
    while not _exists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FailedPrecondition(
            f"{what} {folder} cannot be created: {ancestor} is not a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FailedPrecondition(
            f"{what} {folder} cannot be created in {ancestor} ({_refusal(ancestor)})"
        )


def _refusal(path: Path) -> str:
    """Why `path` refuses to be written: its file system is read-only, or its permissions."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "read-only file system" if read_only else "permission denied"
