"""The filter file of an export (`DicomFilterConfig.resource_paths_gcs_uri`): one resource per
line, `/studies/UID`, `/studies/UID/series/UID` or `/studies/UID/series/UID/instances/UID`,
lines ending in LF or CRLF. Blank lines are skipped; anything else is an error naming the
line, raised before anything is exported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicomstore.core.errors import invalid
from dicomstore.dicom.uids import is_valid_uid

FIELD = "filter_config.resource_paths_gcs_uri"
_PATH = re.compile(r"^/studies/([^/]+)(?:/series/([^/]+)(?:/instances/([^/]+))?)?$")


@dataclass(frozen=True)
class ResourcePath:
    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    @property
    def text(self) -> str:
        """The line as a DICOMweb path, without its leading slash."""
        path = f"studies/{self.study_uid}"
        if self.series_uid is not None:
            path += f"/series/{self.series_uid}"
        if self.sop_uid is not None:
            path += f"/instances/{self.sop_uid}"
        return path


def parse_resource_paths(text: bytes, source: str) -> list[ResourcePath]:
    """The resources a filter file names, in its order; InvalidArgument on a bad line."""
    try:
        lines = text.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise invalid(FIELD, f"{source} is not UTF-8 text (byte {exc.start})") from exc
    paths = []
    for number, line in enumerate(lines, 1):
        line = line.removesuffix("\r").strip()
        if not line:
            continue
        match = _PATH.match(line)
        if match is None:
            raise invalid(
                FIELD,
                f"{source} line {number}: {line[:200]!r} is not /studies/UID,"
                " /studies/UID/series/UID or /studies/UID/series/UID/instances/UID",
            )
        uids = [uid for uid in match.groups() if uid is not None]
        bad = next((uid for uid in uids if not is_valid_uid(uid)), None)
        if bad is not None:
            raise invalid(FIELD, f"{source} line {number}: {bad[:80]!r} is not a valid UID")
        paths.append(ResourcePath(*match.groups()))
    return paths
