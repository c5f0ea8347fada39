"""The Accept header of a DICOMweb request (PS3.18 8.7.1; RFC 9110 12.5.1), parsed and weighed.

`parse_accept` splits the header into media ranges, each with its parameters (such as `type` and
`transfer-syntax`, PS3.18 8.7.3.5) and its quality value. `matches` says whether a range covers a
concrete media type, wildcards (`*/*`, `image/*`) included
(docs/google-behaviour.md#accept-negotiation); `specificity` says how closely. `best_offer` picks,
among what a resource can be rendered as, the one the ranges prefer; how closely a range names an
offer is the caller's `score`, since WADO weighs `type` and `transfer-syntax` parameters and STOW-RS
does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

from dicomstore.dicom.multipart import InvalidContentType, parse_content_type

ANY: Final = "*/*"
# RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")

OfferT = TypeVar("OfferT")


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


def parse_accept(header: str | None, *, lenient: bool = False) -> list[MediaRange]:
    """The media ranges of an Accept header, in the order given.

    A missing or empty header accepts anything (RFC 9110 12.5.1): one `*/*` range. Raises
    `InvalidContentType` for a malformed range or quality value; `lenient` skips such an
    element instead, reads a bare `*` as `*/*` (as some HTTP stacks send it) and takes any
    decimal quality from 0 to 1 (`q=.2`), so a header of malformed elements only accepts nothing.
    """
    ranges: list[MediaRange] = []
    given = False
    for element in _split(header or ""):
        if not element.strip():
            continue  # RFC 9110 5.6.1: empty list elements are ignored
        given = True
        try:
            ranges.append(_media_range(element.strip(), lenient=lenient))
        except InvalidContentType:
            if not lenient:
                raise
    return ranges if given else [MediaRange(ANY)]


def matches(media_range: str, media_type: str) -> bool:
    """Whether `media_range` (`*/*`, `type/*` or `type/subtype`) covers `media_type`."""
    media_range, media_type = media_range.strip().lower(), media_type.lower()
    if media_range == ANY:
        return True
    major, _, minor = media_range.partition("/")
    if minor == "*":
        return media_type.partition("/")[0] == major
    return media_range == media_type


def specificity(media_range: MediaRange, media_type: str) -> int:
    """How closely a range names `media_type`, its parameters aside: 2 exactly, 1 as `type/*`,
    0 as `*/*`, -1 not at all."""
    if not matches(media_range.media_type, media_type):
        return -1
    if media_range.media_type == ANY:
        return 0
    return 1 if media_range.media_type.endswith("/*") else 2


def best_offer(
    ranges: Sequence[MediaRange],
    offers: Sequence[OfferT],
    score: Callable[[MediaRange, OfferT], int],
    *,
    specific_first: bool = False,
) -> OfferT | None:
    """The offer the ranges prefer (RFC 9110 12.5.1), None when none is acceptable.

    `score` says how closely a range names an offer (higher is closer, negative for a range that
    does not cover it). Each offer takes the highest q of the ranges that name it most closely;
    q 0 is "not acceptable". The highest q wins; a tie goes to the offer named more closely when
    `specific_first`, then to the first offer.
    """
    best: tuple[float, int, int] | None = None
    chosen: OfferT | None = None
    for order, offer in enumerate(offers):
        ranked = [
            (closeness, media_range.q)
            for media_range in ranges
            if (closeness := score(media_range, offer)) >= 0
        ]
        if not ranked:
            continue
        top = max(closeness for closeness, _ in ranked)
        q = max(q for closeness, q in ranked if closeness == top)
        rank = (q, top if specific_first else 0, -order)
        if q > 0 and (best is None or rank > best):
            best, chosen = rank, offer
    return chosen


def _media_range(element: str, *, lenient: bool) -> MediaRange:
    if lenient and element.split(";", 1)[0].strip() == "*":
        element = ANY + element[1:]
    parsed = parse_content_type(element)
    params = dict(parsed.params)
    text = params.pop("q", "1").strip()
    q = _lenient_quality(text) if lenient else float(text) if _QVALUE.fullmatch(text) else None
    if q is None:
        raise InvalidContentType(f"invalid quality value q={text!r} in {element!r}")
    return MediaRange(parsed.media_type, MappingProxyType(params), q)


def _lenient_quality(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None


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
