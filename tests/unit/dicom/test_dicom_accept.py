"""Accept header parsing and choosing among offers (RFC 9110 12.5.1; PS3.18 8.7.1)."""

from __future__ import annotations

import pytest

from dicomstore.dicom.accept import (
    ANY,
    MediaRange,
    best_offer,
    matches,
    parse_accept,
    specificity,
)
from dicomstore.dicom.multipart import InvalidContentType

pytestmark = pytest.mark.google_behaviour("accept-negotiation")

XML, JSON, PLAIN_JSON = "application/dicom+xml", "application/dicom+json", "application/json"
STOW_OFFERS = (XML, JSON, PLAIN_JSON)


def ranges(header: str | None, *, lenient: bool = False) -> list[tuple[str, float]]:
    return [(r.media_type, r.q) for r in parse_accept(header, lenient=lenient)]


@pytest.mark.parametrize("lenient", [False, True])
@pytest.mark.parametrize("header", [None, "", "  ", ",", " , "])
def test_parse_accept_without_elements_accepts_anything(header: str | None, lenient: bool) -> None:
    assert ranges(header, lenient=lenient) == [(ANY, 1.0)]


@pytest.mark.parametrize("lenient", [False, True])
def test_parse_accept_keeps_order_parameters_and_quality(lenient: bool) -> None:
    header = 'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.5, Image/JPEG'
    first, second = parse_accept(header, lenient=lenient)
    assert first == MediaRange(
        "multipart/related", {"type": "application/dicom", "transfer-syntax": "*"}, 0.5
    )
    assert (first.type, first.transfer_syntax) == ("application/dicom", "*")
    assert second == MediaRange("image/jpeg")


def test_parse_accept_splits_on_commas_outside_quoted_strings() -> None:
    (only,) = parse_accept('multipart/related; type="a/b,c"')
    assert only.type == "a/b,c"


@pytest.mark.parametrize(
    "header", ["*", "not a type", "a/b; q=2", "a/b; q=0.5000", "a/b; q=.2", "a/b, c/d; q=x"]
)
def test_parse_accept_refuses_malformed_elements(header: str) -> None:
    with pytest.raises(InvalidContentType):
        parse_accept(header)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("*", [(ANY, 1.0)]),
        ("*; q=.2, a/b", [(ANY, 0.2), ("a/b", 1.0)]),
        ("a/b; q=0.5000", [("a/b", 0.5)]),
        ("not a type, a/b; q=2, a/b; q=x, c/d", [("c/d", 1.0)]),
        ("not a type", []),
    ],
)
def test_lenient_parse_accept_skips_what_it_cannot_read(
    header: str, expected: list[tuple[str, float]]
) -> None:
    assert ranges(header, lenient=True) == expected


@pytest.mark.parametrize(
    ("media_range", "media_type", "covered", "closeness"),
    [
        ("*/*", "image/jpeg", True, 0),
        ("image/*", "image/jpeg", True, 1),
        ("IMAGE/JPEG", "image/jpeg", True, 2),
        ("image/*", "application/dicom", False, -1),
        ("image/png", "image/jpeg", False, -1),
    ],
)
def test_matches_and_specificity(
    media_range: str, media_type: str, covered: bool, closeness: int
) -> None:
    assert matches(media_range, media_type) is covered
    (parsed,) = parse_accept(media_range)
    assert specificity(parsed, media_type) == closeness


# (Accept, offer STOW-RS picks): XML first, ties to the more specific range, then to XML.
STOW_RULES: list[tuple[str | None, str | None]] = [
    (None, XML),
    ("*/*", XML),
    ("application/*", XML),
    (JSON, JSON),
    (f"{JSON}, */*", JSON),
    (f"{XML};q=0.5, {JSON}", JSON),
    (f"{JSON};q=0.2, {XML};q=0.9", XML),
    (f"*/*;q=0.1, {XML};q=0", JSON),
    (f"image/png, {JSON}; charset=utf-8", JSON),
    ("image/png", None),
    (f"{JSON};q=0, {XML};q=0", None),
    ("*/*; q=0", None),
]


@pytest.mark.parametrize(("header", "chosen"), STOW_RULES)
def test_best_offer_prefers_quality_then_specificity_then_order(
    header: str | None, chosen: str | None
) -> None:
    offers = parse_accept(header, lenient=True)
    assert best_offer(offers, STOW_OFFERS, specificity, specific_first=True) == chosen


def test_best_offer_without_specific_first_breaks_ties_by_order() -> None:
    header = f"*/*, {JSON}"
    assert best_offer(parse_accept(header), STOW_OFFERS, specificity) == XML


def test_best_offer_takes_the_quality_of_the_closest_range() -> None:
    header = f"{JSON}; q=0.1, application/*; q=0.9, */*; q=0.5"
    # JSON: 0.1 (exact); XML and application/json: 0.9 (application/*).
    assert best_offer(parse_accept(header), (JSON, XML), specificity) == XML
    assert best_offer(parse_accept(header), (JSON,), specificity) == JSON
    assert best_offer(parse_accept(f"{JSON}; q=0, */*"), (JSON,), specificity) is None
