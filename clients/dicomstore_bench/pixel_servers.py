"""The servers `dicomstore-pixel-bench` measures, started with `servers.py`'s starters: `dicomstore
serve`, and Orthanc with its DICOMweb plugin and, when installed (Debian `orthanc-gdcm`), its GDCM
plugin, without which Orthanc decodes no JPEG 2000. Each runs on fresh storage in a folder of its
own, and again on fresh storage when it died (Orthanc 1.10 with GDCM 1.5 segfaults now and then
decoding JPEG 2000).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from dicomstore_bench.pixel_report import OURS, THEIRS
from dicomstore_bench.servers import Target, dicomstore_server, find_orthanc, orthanc_server

ORTHANC_GDCM = "/usr/share/orthanc/plugins/libOrthancGdcm.so"

Starter = Callable[[Path], contextlib.AbstractContextManager[Target]]


def how_ended(pid: int) -> str | None:
    """None while `pid` runs, else how it ended ("signal SIGSEGV", "an exit"): /proc/PID/stat
    field 52 of the zombie (a server is our child, so it stays one until its context ends)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "an exit"
    if fields[0] not in ("Z", "X"):
        return None
    ended = int(fields[49]) & 0x7F if len(fields) > 49 else 0
    return f"signal {signal.Signals(ended).name}" if ended else "an exit"


class Servers:
    """The servers measured, each from a starter, started on fresh storage in a folder of its own
    under `tmp` and again when one died (`restart`); stopped when `stack` closes."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.starters: dict[str, Starter] = {}
        self.starts: dict[str, int] = {}

    def start(self, name: str, starter: Starter) -> Target:
        self.starters[name] = starter
        return self.restart(name)

    def restart(self, name: str) -> Target:
        self.starts[name] = self.starts.get(name, 0) + 1
        folder = self.tmp / f"{name}-{self.starts[name]}"
        folder.mkdir()
        return self.stack.enter_context(self.starters[name](folder))


def orthanc_plugins(tmp: Path, dicomweb: str, gdcm: str) -> tuple[str, str]:
    """A folder of Orthanc plugins (its `Plugins` setting takes folders) with the DICOMweb
    plugin, and GDCM's when present; and what it holds, for the header."""
    folder = tmp / "orthanc-plugins"
    folder.mkdir()
    (folder / Path(dicomweb).name).symlink_to(dicomweb)
    if gdcm and Path(gdcm).is_file():
        (folder / Path(gdcm).name).symlink_to(gdcm)
        return str(folder), "with GDCM"
    return str(folder), f"without GDCM ({gdcm or 'none'} missing: no JPEG 2000)"


def start_servers(
    servers: Servers,
    versions: dict[str, str],
    *,
    dicomstore: bool,
    orthanc: bool,
    orthanc_bin: str | None,
    orthanc_plugin: str | None,
    orthanc_gdcm: str,
) -> list[Target]:
    """The servers asked for, started; `versions` gets each one's version or why it is absent."""
    targets = []
    if not dicomstore:
        versions[OURS] = "skipped (--no-dicomstore)"
    else:
        targets.append(servers.start(OURS, dicomstore_server))
        versions[OURS] = targets[-1].version
    found = "skipped (--no-orthanc)" if not orthanc else find_orthanc(orthanc_bin, orthanc_plugin)
    if isinstance(found, str):
        versions[THEIRS] = found
        print(f"Orthanc {found}", file=sys.stderr)
    else:
        binary = found[0]
        plugins, gdcm = orthanc_plugins(servers.tmp, found[1], orthanc_gdcm)
        targets.append(servers.start(THEIRS, lambda tmp: orthanc_server(tmp, binary, plugins)))
        versions[THEIRS] = f"{targets[-1].version} {gdcm}"
    if not targets:
        raise RuntimeError("no server to measure")
    return targets
