"""Writing multipart/related bodies part by part (RFC 2387; RFC 2046 5.1.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Final

from dicomstore.api.rest.dicomweb.negotiation import MULTIPART

CRLF: Final = b"\r\n"


def part_head(boundary: str, headers: Mapping[str, str]) -> bytes:
    """The delimiter and headers of one body part (RFC 2046 5.1.1)."""
    lines = [f"--{boundary}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value:
            raise ValueError(f"invalid part header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def close_delimiter(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def multipart_media_type(part_type: str, boundary: str) -> str:
    return f'{MULTIPART}; type="{part_type}"; boundary={boundary}'


async def one_part(head: bytes, body: AsyncIterator[bytes], boundary: str) -> AsyncIterator[bytes]:
    """A multipart body of a single part: `head`, then `body`'s chunks."""
    yield head
    async for chunk in body:
        yield chunk
    yield CRLF + close_delimiter(boundary)
