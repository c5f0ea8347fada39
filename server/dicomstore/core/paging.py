"""Page sizes and opaque, tamper-proof page tokens for the List methods.

Implements the paging contract of the Cloud Healthcare API v1 List methods (page_size,
page_token, next_page_token; e.g.
https://cloud.google.com/healthcare-api/docs/reference/rest/v1/projects.locations.datasets.dicomStores/list)
as AIP-158 (https://google.aip.dev/158) describes it: tokens are opaque, and a token is only
valid for the request that produced it.

A token is urlsafe base64 (no padding) of a version byte, the position, and an HMAC-SHA256 over
the scope and both, truncated to 16 bytes. The scope is not stored in the token; it only enters
the MAC, so a token presented with another scope (parent, filter) fails verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from dicomstore.core.errors import InvalidArgument, invalid

_VERSION = b"\x01"
_MAC_SIZE = 16
_MIN_KEY_SIZE = 16
_INVALID = "invalid or does not match the request (parent and filter must not change between pages)"


class PageTokens:
    """Encodes a list position into a page token bound to a scope, and back."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_SIZE:
            raise ValueError(f"page token key must be at least {_MIN_KEY_SIZE} bytes")
        self._key = key

    def _mac(self, scope: str, payload: bytes) -> bytes:
        scoped = scope.encode()
        # The length prefix keeps (scope, payload) pairs from running into each other.
        message = len(scoped).to_bytes(8, "big") + scoped + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_SIZE]

    def encode(self, *, scope: str, position: str) -> str:
        """A token for `position` that `decode` accepts only with the same `scope`."""
        payload = _VERSION + position.encode()
        token = base64.urlsafe_b64encode(payload + self._mac(scope, payload))
        return token.rstrip(b"=").decode("ascii")

    def decode(self, token: str, *, scope: str) -> str:
        """The position in `token`; InvalidArgument (page_token) if it was not made for `scope`."""
        raw = _unbase64(token)
        payload, mac = raw[:-_MAC_SIZE], raw[-_MAC_SIZE:]
        if (
            len(raw) <= _MAC_SIZE
            or not hmac.compare_digest(mac, self._mac(scope, payload))
            or payload[:1] != _VERSION
        ):
            raise _invalid_token()
        try:
            return payload[1:].decode()
        except UnicodeDecodeError:  # only with a leaked key; keep it a client error
            raise _invalid_token() from None


def _invalid_token() -> InvalidArgument:
    return invalid("page_token", _INVALID)


def _unbase64(token: str) -> bytes:
    # Only the canonical encoding is accepted, so that every changed character is detected:
    # the decoder itself skips stray characters and ignores the unused low bits of the last one.
    try:
        data = token.encode("ascii")
        raw = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    except ValueError:  # binascii.Error and UnicodeEncodeError among them
        raise _invalid_token() from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != data:
        raise _invalid_token()
    return raw


def page_size(requested: int, *, default: int = 100, maximum: int = 1000) -> int:
    """The page size to use: 0 means `default`, more than `maximum` is capped silently.

    Google caps an oversized page_size without an error; a negative one is INVALID_ARGUMENT.
    """
    if requested < 0:
        raise invalid("page_size", f"must not be negative (got {requested})")
    if requested == 0:
        return default
    return min(requested, maximum)
