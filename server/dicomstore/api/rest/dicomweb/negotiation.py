"""Accept negotiation for WADO-RS resources (PS3.18 8.7.3, 8.7.4; RFC 9110 12.5.1).

The Accept header's media ranges, wildcards and `q` values are weighed against what a resource
can be returned as right now (its `Offer`s); the most specific range that covers an offer gives
its quality, the best quality wins and ties go to the first in the server's order. A media range
without a `transfer-syntax` parameter means the media type's default syntax, given by the
resource (Explicit VR Little Endian for `application/dicom` and frames, PS3.18 8.7.3.5.2;
`*` for bulk data). When nothing is acceptable the answer is 406 with a message in Google's
words listing what is (healthcare-api-dicomweb-cli #22).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomstore.core.errors import invalid
from dicomstore.dicom.accept import MediaRange, best_offer, matches, parse_accept
from dicomstore.dicom.multipart import InvalidContentType

EXPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2.1"
ANY_TRANSFER_SYNTAX: Final = "*"
DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
DICOM_XML: Final = "application/dicom+xml"
JSON: Final = "application/json"
OCTET_STREAM: Final = "application/octet-stream"
MULTIPART: Final = "multipart/related"


@dataclass(frozen=True)
class Offer:
    """One representation a resource can be returned as."""

    part_type: str
    transfer_syntax: str = ""
    """`*`, a UID, or "" where the media type takes none (DICOM JSON)."""
    multipart: bool = True

    def __str__(self) -> str:
        syntax = f"; transfer-syntax={self.transfer_syntax}" if self.transfer_syntax else ""
        if self.multipart:
            return f'{MULTIPART}; type="{self.part_type}"{syntax}'
        return f"{self.part_type}{syntax}"


DefaultSyntax = Callable[[str], str]


def _specificity(media_range: MediaRange, offer: Offer, default_syntax: DefaultSyntax) -> int:
    """How specifically `media_range` names `offer` (higher is more specific), -1 if not."""
    score = 0
    if offer.multipart:
        if media_range.media_type not in ("*/*", "multipart/*", MULTIPART):
            return -1
        score += media_range.media_type == MULTIPART
        part_range = media_range.type or "*/*"
        if not matches(part_range, offer.part_type):
            return -1
        score += "*" not in part_range
    else:
        if not matches(media_range.media_type, offer.part_type):
            return -1
        score += 2 * ("*" not in media_range.media_type)
    if offer.transfer_syntax:
        wanted = media_range.transfer_syntax
        if wanted is None:
            wanted = default_syntax(offer.part_type)
        else:
            score += 1
        if wanted != offer.transfer_syntax:
            return -1
    return score


def negotiate(
    ranges: Sequence[MediaRange],
    offers: Sequence[Offer],
    default_syntax: DefaultSyntax,
    *,
    specific_first: bool = False,
) -> Offer | None:
    """The offer the Accept ranges prefer (RFC 9110 12.5.1), None when none is acceptable.

    A tie in quality goes to the offer named more closely when `specific_first`, then to the
    first offer.
    """
    return best_offer(
        ranges,
        offers,
        lambda media_range, offer: _specificity(media_range, offer, default_syntax),
        specific_first=specific_first,
    )


def accept_ranges(request: Request) -> list[MediaRange]:
    try:
        return parse_accept(request.headers.get("accept"))
    except InvalidContentType as exc:
        raise invalid("Accept", str(exc)) from exc


def not_acceptable(request: Request, offers: Sequence[Offer], reason: str = "") -> HTTPException:
    """406 in Google's words: what was asked for, then what would have been acceptable."""
    asked = request.headers.get("accept", "*/*")
    message = f"no supported media type found in [{asked}]"
    if reason:
        message += f"; {reason}"
    if offers:
        message += ", accept-header must include one of " + ",".join(str(o) for o in offers)
    return HTTPException(406, message)


def explicit_le(part_type: str) -> str:
    return EXPLICIT_VR_LITTLE_ENDIAN


def any_syntax(part_type: str) -> str:
    return ANY_TRANSFER_SYNTAX
