"""Local files for DICOMweb: which files a command line's paths and globs name, and the SOP
Instance UID of a DICOM file read from its File Meta Information (PS3.10 7.1), without a DICOM
library."""

from __future__ import annotations

import glob
import struct
from collections.abc import Iterable
from pathlib import Path

from dicomstore_client.errors import ClientError, ExitCode

# Explicit VR Little Endian elements with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_MEDIA_STORAGE_SOP_INSTANCE_UID = (0x0002, 0x0003)
_META_MAX_BYTES = 64 * 1024


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def find_files(patterns: Iterable[str | Path]) -> list[Path]:
    """The files that paths and globs name, each once, in order: a folder's files recursively;
    `**` in a glob matches any number of folders. A pattern that names nothing is an error."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if glob.has_magic(text):
            matches = [Path(match) for match in sorted(glob.glob(text, recursive=True))]
        else:
            matches = [path] if path.exists() else []
        if not matches:
            raise ClientError(f"no file matches {text}", "INVALID_ARGUMENT", ExitCode.USAGE)
        for match in matches:
            for file in _files_under(match) if match.is_dir() else [match]:
                found.setdefault(file, None)
    return list(found)


def sop_instance_uid(path: Path) -> str | None:
    """The Media Storage SOP Instance UID (0002,0003) of a DICOM Part 10 file, or None when
    the file has no File Meta Information or does not hold it."""
    try:
        with path.open("rb") as file:
            head = file.read(_META_MAX_BYTES)
    except OSError:
        return None
    if head[128:132] != b"DICM":
        return None
    offset = 132
    while offset + 12 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return None
        vr = head[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", head, offset + 8)
            offset += 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            offset += 8
        if (group, element) == _MEDIA_STORAGE_SOP_INSTANCE_UID:
            return head[offset : offset + length].rstrip(b"\x00 ").decode("ascii", "replace")
        offset += length
    return None
