"""Page tokens and page sizes (dicomstore.core.paging)."""

from __future__ import annotations

import base64

import pytest

from dicomstore.core.errors import InvalidArgument
from dicomstore.core.paging import PageTokens, page_size

KEY = b"k" * 32
SCOPE = "projects/p/locations/l/datasets/d\nlabels.env=prod"
MESSAGE = (
    "page_token: invalid or does not match the request "
    "(parent and filter must not change between pages)"
)


@pytest.mark.parametrize("position", ["", "store-1", "ünïcode/ストア", "x" * 5000])
def test_token_round_trips_position_when_scope_unchanged(position: str) -> None:
    tokens = PageTokens(KEY)
    assert tokens.decode(tokens.encode(scope=SCOPE, position=position), scope=SCOPE) == position


def test_token_is_urlsafe_without_padding() -> None:
    token = PageTokens(KEY).encode(scope=SCOPE, position="a" * 100 + "?/+")
    assert token.isascii()
    assert not set(token) - set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_token_hides_position() -> None:
    token = PageTokens(KEY).encode(scope=SCOPE, position="store-1")
    assert "store-1" not in token


def unbase64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def rebase64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def assert_rejected(tokens: PageTokens, token: str, scope: str = SCOPE) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tokens.decode(token, scope=scope)
    assert caught.value.field == "page_token"
    assert caught.value.message == MESSAGE


@pytest.mark.google_behaviour("list-paging")
@pytest.mark.parametrize(
    "scope",
    [
        "projects/p/locations/l/datasets/other\nlabels.env=prod",  # another parent
        "projects/p/locations/l/datasets/d\nlabels.env=dev",  # another filter
        "projects/p/locations/l/datasets/d\n",  # filter dropped
        "",
    ],
)
def test_token_rejected_when_scope_differs(scope: str) -> None:
    tokens = PageTokens(KEY)
    assert_rejected(tokens, tokens.encode(scope=SCOPE, position="store-1"), scope)


def test_token_rejected_when_key_differs() -> None:
    token = PageTokens(KEY).encode(scope=SCOPE, position="store-1")
    assert_rejected(PageTokens(b"o" * 32), token)


def test_token_rejected_when_any_character_changes() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode(scope=SCOPE, position="store-1")
    for index, char in enumerate(token):
        replacement = "A" if char != "A" else "B"
        assert_rejected(tokens, token[:index] + replacement + token[index + 1 :])


def test_token_rejected_when_any_byte_flipped() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode(scope=SCOPE, position="store-1")
    raw = unbase64(token)
    for index in range(len(raw)):
        flipped = raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]
        assert_rejected(tokens, rebase64(flipped))


def test_token_rejected_when_position_swapped_from_another_token() -> None:
    tokens = PageTokens(KEY)
    raw = unbase64(tokens.encode(scope=SCOPE, position="a"))
    assert_rejected(tokens, rebase64(b"\x01z" + raw[2:]))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "not base64!",
        "ñ",
        "AAAA",
        "A" * 22,  # 16 bytes: a MAC with no payload
        "====",
    ],
)
def test_token_rejected_when_garbage(token: str) -> None:
    assert_rejected(PageTokens(KEY), token)


def test_token_rejected_when_padding_or_whitespace_added() -> None:
    tokens = PageTokens(KEY)
    token = tokens.encode(scope=SCOPE, position="store-1")
    for variant in (token + "==", " " + token, token + "\n", token[:10] + "\n" + token[10:]):
        assert_rejected(tokens, variant)


def test_page_tokens_refuse_short_key() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        PageTokens(b"short")


@pytest.mark.google_behaviour("list-paging")
@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, 100), (1, 1), (100, 100), (999, 999), (1000, 1000), (1001, 1000), (10**9, 1000)],
)
def test_page_size_defaults_and_caps(requested: int, expected: int) -> None:
    assert page_size(requested) == expected


def test_page_size_uses_given_default_and_maximum() -> None:
    assert page_size(0, default=10, maximum=50) == 10
    assert page_size(60, default=10, maximum=50) == 50


@pytest.mark.parametrize("requested", [-1, -1000])
def test_page_size_rejected_when_negative(requested: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(requested)
    assert caught.value.field == "page_size"
    assert caught.value.message == f"page_size: must not be negative (got {requested})"
