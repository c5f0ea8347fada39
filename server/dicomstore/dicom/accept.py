"""The Accept header of a DICOMweb request (PS3.18 8.7.1; RFC 9110 12.5.1), parsed.

`parse_accept` splits the header into media ranges, each with its parameters (such as
`type` and `transfer-syntax`, PS3.18 8.7.3.5) and its quality value. Choosing among what a
resource can be rendered as is the caller's business; `matches` says whether a range covers a
concrete media type, wildcards (`*/*`, `image/*`) included (GOOGLE-BEHAVIOUR item 47).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from dicomstore.dicom.multipart import InvalidContentType, parse_content_type

ANY: Final = "*/*"
# RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header: a lower-cased media range, parameters, quality."""

    media_type: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    q: float = 1.0

    @property
    def type(self) -> str | None:
        """The `type` parameter of `multipart/related` (RFC 2387 3.1), lower-cased."""
        value = self.params.get("type")
        return value.strip().lower() if value is not None else None

    @property
    def transfer_syntax(self) -> str | None:
        """The PS3.18 8.7.3.5.2 `transfer-syntax` parameter (`*` or a UID)."""
        value = self.params.get("transfer-syntax")
        return value.strip() if value is not None else None


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, in the order given.

    A missing or empty header accepts anything (RFC 9110 12.5.1): one `*/*` range. Raises
    `InvalidContentType` for a malformed range or quality value.
    """
    if header is None or not header.strip():
        return [MediaRange(ANY)]
    ranges: list[MediaRange] = []
    for element in _split(header):
        if not element.strip():
            continue  # RFC 9110 5.6.1: empty list elements are ignored
        parsed = parse_content_type(element)
        params = dict(parsed.params)
        q = 1.0
        if "q" in params:
            text = params.pop("q").strip()
            if not _QVALUE.fullmatch(text):
                raise InvalidContentType(f"invalid quality value q={text!r} in {element.strip()!r}")
            q = float(text)
        ranges.append(MediaRange(parsed.media_type, MappingProxyType(params), q))
    if not ranges:
        return [MediaRange(ANY)]
    return ranges


def matches(media_range: str, media_type: str) -> bool:
    """Whether `media_range` (`*/*`, `type/*` or `type/subtype`) covers `media_type`."""
    media_range, media_type = media_range.strip().lower(), media_type.lower()
    if media_range == ANY:
        return True
    major, _, minor = media_range.partition("/")
    if minor == "*":
        return media_type.partition("/")[0] == major
    return media_range == media_type


def _split(header: str) -> list[str]:
    """Split on commas that are not inside a quoted string."""
    elements: list[str] = []
    start = 0
    quoted = False
    position = 0
    while position < len(header):
        char = header[position]
        if quoted and char == "\\":
            position += 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append(header[start:position])
            start = position + 1
        position += 1
    elements.append(header[start:])
    return elements
