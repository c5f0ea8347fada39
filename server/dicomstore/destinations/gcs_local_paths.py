"""Which Cloud Storage names the embedded storage can hold as files, and their path segments.

Object names in Cloud Storage are any UTF-8 of 1-1024 bytes; as files under
`DATA_DIR/gcs/BUCKET/` only those that stay inside their bucket folder whatever reads them are
taken. Besides `.`/`..` segments, backslashes and NUL (refused by `dicomstore.core.uris` too), a
name is refused when one of its segments would become such a thing once percent-decoded or
Unicode-normalized (NFKC) by some other tool (`%2e%2e`, `%2f`, fullwidth dots U+FF0E), or holds
a character that looks like a slash (U+2215 DIVISION SLASH and its kin). docs/cloud-storage.md
lists every rule.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

from dicomstore.core.errors import InvalidArgument, invalid
from dicomstore.core.uris import valid_bucket

#: Temporary files of uploads in progress start with this; no object segment may.
PARTIAL_PREFIX = ".dicomstore-partial-"
_OBJECT_MAX_BYTES = 1024  # Cloud Storage's limit
_SEGMENT_MAX_BYTES = 255  # NAME_MAX of Linux file systems
_LOOKALIKE_SLASHES = frozenset(
    "\u2044\u2215\u2216\u2571\u2572\u29f5\u29f8\u29f9\u2afb\u2afd\u3033\ufe68\uff0f\uff3c"
)
_DECODE_ROUNDS = 3  # `%252e` is `%2e` after one round, `.` after two


def _is_control(char: str) -> bool:
    return char < " " or char == "\x7f"


def _views(segment: str) -> list[str]:
    """The segment as percent-decoding and NFKC normalization could turn it."""
    views = [segment]
    decoded = segment
    for _ in range(_DECODE_ROUNDS):
        if "%" not in decoded:
            break
        decoded = unquote(decoded)
        views.append(decoded)
    views += [unicodedata.normalize("NFKC", view) for view in list(views)]
    return views


def segment_problem(segment: str) -> str | None:
    """Why `segment` cannot be one path segment of a stored object, or None when it can."""
    if not segment:
        return "has an empty path segment (a leading, trailing or doubled '/')"
    try:
        size = len(segment.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > _SEGMENT_MAX_BYTES:
        return f"has a path segment longer than {_SEGMENT_MAX_BYTES} bytes"
    if segment.startswith(PARTIAL_PREFIX):
        return f"has a path segment starting with {PARTIAL_PREFIX!r} (reserved)"
    for view in _views(segment):
        if view in (".", ".."):
            return "has a '.' or '..' segment (also when percent-decoded or NFKC-normalized)"
        if "/" in view or "\\" in view:
            return "hides a '/' or '\\' (percent-encoded or NFKC-normalized)"
        if any(_is_control(char) for char in view):
            return "contains a control character (also when percent-decoded)"
        if _LOOKALIKE_SLASHES.intersection(view):
            return "contains a character that looks like a slash (such as U+2215)"
    return None


def object_segments(bucket: str, name: str) -> list[str]:
    """The path segments of object `name` below its bucket folder.

    Raise InvalidArgument, saying which rule the bucket or object name breaks, when it cannot
    be stored as a file inside its bucket folder."""
    if not valid_bucket(bucket):
        raise invalid("bucket", f"invalid bucket name {bucket!r}")
    if not name:
        raise _refused(bucket, name, "is empty")
    segments = name.split("/")
    problem = next(filter(None, map(segment_problem, segments)), None)
    if problem is None and len(name.encode("utf-8")) > _OBJECT_MAX_BYTES:
        problem = f"is longer than {_OBJECT_MAX_BYTES} bytes"
    if problem is not None:
        raise _refused(bucket, name, problem)
    return segments


def _refused(bucket: str, name: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"object name {name!r} in gs://{bucket} {problem}: the embedded Cloud Storage cannot "
        "store it as a file inside its bucket"
    )
