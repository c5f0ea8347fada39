"""multipart/related (RFC 2387, framed as RFC 2046 5.1) for DICOMweb (PS3.18 8.6 and 8.7).

`parse_content_type` reads a Content-Type header; `MultipartReader` parses a body fed in chunks
into `Part`s whose bodies spool to disk past a threshold, so memory stays bounded whatever the
body size; `multipart_chunks` writes a body.

The reader is hand-written rather than python-multipart's `MultipartParser`: that parser's
`finalize()` does not check that the close delimiter arrived (its own TODO), so a body cut short
would pass as complete; it skips only CR/LF before the first boundary, not an RFC 2046 preamble;
and it walks headers byte by byte in Python. Here the delimiter is found with `bytes.find` over
a window that keeps only the last `len(delimiter)` bytes between feeds.

Framing rules (RFC 2046 5.1.1): a delimiter is CRLF "--" boundary (the first one may start the
body); after it, optional linear white space, then CRLF before a part, or "--" for the close
delimiter; anything before the first delimiter (preamble) and after the close delimiter
(epilogue) is ignored. Part headers end with an empty line (CRLF CRLF); header lines are CRLF
separated, folded lines (leading space or tab) are joined. Bare LF is not a line break.

Boundaries: liberal in what we read, strict in what we write. RFC 2046 5.1.1 allows 1 to 70
characters from a small alphabet, but real clients send longer ones (Orthanc's DICOMweb client
sends two UUIDs joined by "-", 73 characters), and other archives accept them. The reader takes
any boundary of 1 to `MAX_BOUNDARY_LENGTH` printable ASCII characters (space included) that does
not end in a space: CR, LF and other control characters would break the framing, a trailing
space cannot be told from the transport padding that may follow a delimiter, and the length
limit keeps a delimiter a small, fixed look-behind window between feeds. What we write follows
RFC 2046 (`is_rfc2046_boundary`).
"""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

#: The longest boundary the reader takes (RFC 2046 5.1.1 says 70; clients send more).
MAX_BOUNDARY_LENGTH: Final = 200
#: The rule `is_valid_boundary` applies, in words, for error messages.
BOUNDARY_RULE: Final = (
    f"1 to {MAX_BOUNDARY_LENGTH} printable ASCII characters, not ending in a space"
)
#: RFC 2046 5.1.1 bcharsnospace plus space: the boundary alphabet (1 to 70 characters).
_RFC2046_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
#: What the reader takes: printable ASCII, no trailing space, 1 to MAX_BOUNDARY_LENGTH.
_READABLE_BOUNDARY = re.compile(rf"[ -~]{{0,{MAX_BOUNDARY_LENGTH - 1}}}[!-~]")
#: RFC 9110 5.6.2 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CRLF: Final = b"\r\n"
#: Part headers larger than this are refused: they are held in memory.
MAX_HEADER_BYTES: Final = 16 * 1024


class MultipartError(ValueError):
    """Base of the multipart errors."""


class MalformedMultipart(MultipartError):
    """The body does not follow RFC 2046's multipart framing, or a header is malformed."""


class PartTooLarge(MultipartError):
    """A part's body is larger than the reader's `max_part_bytes`."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a part is larger than {limit} bytes")
        self.limit = limit


class InvalidContentType(ValueError):
    """A Content-Type header that is not `type/subtype *(; name=value)` (RFC 9110 8.3)."""


@dataclass(frozen=True)
class ContentType:
    """A parsed Content-Type: lower-cased media type and parameter names, values as sent."""

    media_type: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def boundary(self) -> str | None:
        return self.params.get("boundary")

    @property
    def type(self) -> str | None:
        """The root part's media type of multipart/related (RFC 2387 3.1), lower-cased."""
        value = self.params.get("type")
        return value.lower() if value is not None else None

    @property
    def start(self) -> str | None:
        return self.params.get("start")

    @property
    def transfer_syntax(self) -> str | None:
        """PS3.18 8.7.3.5.2 `transfer-syntax` parameter."""
        return self.params.get("transfer-syntax")


def parse_content_type(header: str) -> ContentType:
    """Parse a Content-Type header (RFC 9110 8.3.1; RFC 2387 3 for multipart/related).

    Names are case-insensitive and returned lower-cased. A value is a token or a quoted string
    (backslash escapes honoured); an unquoted value may also hold characters a token may not,
    such as the "/" of `type=application/dicom`, which clients send unquoted
    (docs/google-behaviour.md#stow-request-types). Raises
    `InvalidContentType` for a missing or malformed media type, an empty or repeated parameter
    name, or an unterminated quoted string.
    """
    media, _, rest = header.partition(";")
    media = media.strip().lower()
    kind, slash, subtype = media.partition("/")
    if not slash or not _TOKEN.fullmatch(kind) or not _TOKEN.fullmatch(subtype):
        raise InvalidContentType(f"not a media type: {header!r}")
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        name_end = rest.find("=", position)
        separator = rest.find(";", position)
        if name_end < 0 or 0 <= separator < name_end:
            # A parameter without "=": tolerate empty segments ("a/b;"), refuse others.
            segment = rest[position : separator if separator >= 0 else len(rest)]
            if segment.strip():
                raise InvalidContentType(f"parameter without a value: {segment.strip()!r}")
            position = separator + 1 if separator >= 0 else len(rest)
            continue
        name = rest[position:name_end].strip().lower()
        if not _TOKEN.fullmatch(name):
            raise InvalidContentType(f"invalid parameter name: {name!r}")
        if name in params:
            raise InvalidContentType(f"repeated parameter: {name!r}")
        value, position = _parameter_value(rest, name_end + 1)
        params[name] = value
    return ContentType(media, MappingProxyType(params))


def _parameter_value(text: str, position: int) -> tuple[str, int]:
    while position < len(text) and text[position] in " \t":
        position += 1
    if position < len(text) and text[position] == '"':
        chars: list[str] = []
        position += 1
        while position < len(text):
            char = text[position]
            if char == "\\" and position + 1 < len(text):
                chars.append(text[position + 1])
                position += 2
                continue
            if char == '"':
                end = text.find(";", position + 1)
                trailing = text[position + 1 : end if end >= 0 else len(text)]
                if trailing.strip():
                    raise InvalidContentType(f"text after a quoted value: {trailing.strip()!r}")
                return "".join(chars), end + 1 if end >= 0 else len(text)
            chars.append(char)
            position += 1
        raise InvalidContentType("unterminated quoted string")
    end = text.find(";", position)
    value = text[position : end if end >= 0 else len(text)].strip()
    return value, end + 1 if end >= 0 else len(text)


def is_valid_boundary(boundary: str) -> bool:
    """Whether the reader takes `boundary` (`BOUNDARY_RULE`, wider than RFC 2046 5.1.1).

    Accepts the longer boundaries real clients send (Orthanc's are 73 characters); refuses what
    cannot frame a body: empty, longer than `MAX_BOUNDARY_LENGTH`, a control or non-ASCII
    character, or a trailing space.
    """
    return _READABLE_BOUNDARY.fullmatch(boundary) is not None


def is_rfc2046_boundary(boundary: str) -> bool:
    """Whether `boundary` follows RFC 2046 5.1.1 (1 to 70 characters of its alphabet, no
    trailing space): the rule for the boundaries we write."""
    return _RFC2046_BOUNDARY.fullmatch(boundary) is not None


def new_boundary() -> str:
    """A fresh random boundary (32 hex digits), unlikely to occur in any body."""
    return secrets.token_hex(16)


@dataclass
class Part:
    """One body part: its headers (names lower-cased) and its body, rewound to the start.

    The body is a SpooledTemporaryFile: in memory up to the reader's spool threshold, on disk
    past it. The receiver owns it and closes it (`close()` or `with part:`).
    """

    headers: Mapping[str, str]
    body: tempfile.SpooledTemporaryFile[bytes]
    size: int

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def content_location(self) -> str | None:
        return self.headers.get("content-location")

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Part:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class MultipartReader:
    """Incremental multipart/related parser (RFC 2046 5.1.1) with bounded memory.

    Feed the body with `feed(chunk)` as it arrives; each call returns the parts completed by
    that chunk. `close()` checks that the close delimiter was seen. Raises `MalformedMultipart`
    for bad framing or headers and `PartTooLarge` once a body exceeds `max_part_bytes`; after an
    error the reader is closed and the unfinished part discarded. Memory held by the reader is
    at most `spool_threshold` plus `MAX_HEADER_BYTES` plus one delimiter.
    """

    _PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _EPILOGUE, _FAILED = range(6)

    def __init__(self, boundary: str, max_part_bytes: int, spool_threshold: int) -> None:
        if not is_valid_boundary(boundary):
            raise MalformedMultipart(f"invalid boundary {boundary!r}: {BOUNDARY_RULE}")
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._max_part_bytes = max_part_bytes
        self._spool_threshold = spool_threshold
        # The body starts as if after a CRLF, so a delimiter may open it (RFC 2046 5.1.1).
        self._buffer = bytearray(_CRLF)
        self._state = self._PREAMBLE
        self._headers: dict[str, str] = {}
        self._body: tempfile.SpooledTemporaryFile[bytes] | None = None
        self._size = 0

    def feed(self, chunk: bytes) -> list[Part]:
        """Parse `chunk`; return the parts it completes, in order."""
        if self._state == self._FAILED:
            raise MalformedMultipart("the reader already failed")
        self._buffer += chunk
        parts: list[Part] = []
        try:
            while self._step(parts):
                pass
        except MultipartError:
            self._fail(parts)
            raise
        return parts

    def close(self) -> None:
        """End of body: raise `MalformedMultipart` unless the close delimiter was seen."""
        if self._state == self._EPILOGUE:
            return
        state = self._state
        self._fail([])
        if state == self._FAILED:
            raise MalformedMultipart("the reader already failed")
        raise MalformedMultipart("the body ends before the close delimiter")

    def _fail(self, parts: list[Part]) -> None:
        self._state = self._FAILED
        self._buffer = bytearray()
        if self._body is not None:
            self._body.close()
            self._body = None
        for part in parts:
            part.close()

    def _step(self, parts: list[Part]) -> bool:
        """Advance one state; False when more input is needed."""
        buffer = self._buffer
        if self._state == self._PREAMBLE:
            index = buffer.find(self._delimiter)
            if index < 0:
                # Keep what could still be the start of a delimiter.
                del buffer[: max(0, len(buffer) - len(self._delimiter) + 1)]
                return False
            del buffer[: index + len(self._delimiter)]
            self._state = self._AFTER_DELIMITER
            return True
        if self._state == self._AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state == self._HEADERS:
            return self._read_headers()
        if self._state == self._BODY:
            return self._read_body(parts)
        if self._state == self._EPILOGUE:
            buffer.clear()
        return False

    def _after_delimiter(self) -> bool:
        buffer = self._buffer
        if buffer[:2] == b"--":
            self._state = self._EPILOGUE
            buffer.clear()
            return False
        padding = len(buffer) - len(buffer.lstrip(b" \t"))
        if padding == len(buffer) or (len(buffer) - padding < 2 and buffer[padding:] == b"\r"):
            if padding > MAX_HEADER_BYTES:
                raise MalformedMultipart("too much white space after a boundary")
            return False  # need more input
        if len(buffer) < 2 and buffer == b"-":
            return False
        if buffer[padding : padding + 2] != _CRLF:
            raise MalformedMultipart("a boundary is not followed by CRLF or '--'")
        del buffer[: padding + 2]
        self._state = self._HEADERS
        self._headers = {}
        return True

    def _read_headers(self) -> bool:
        buffer = self._buffer
        if buffer[:2] == _CRLF:
            end = 0  # no headers at all
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise MalformedMultipart(f"part headers exceed {MAX_HEADER_BYTES} bytes")
                return False
            end += 2
        if end > MAX_HEADER_BYTES:
            raise MalformedMultipart(f"part headers exceed {MAX_HEADER_BYTES} bytes")
        self._headers = _parse_headers(bytes(buffer[:end]))
        del buffer[: end + 2]
        # Handed to the Part, whose receiver closes it; a failure closes it in _fail.
        self._body = tempfile.SpooledTemporaryFile(max_size=self._spool_threshold)  # noqa: SIM115
        self._size = 0
        self._state = self._BODY
        return True

    def _read_body(self, parts: list[Part]) -> bool:
        buffer = self._buffer
        assert self._body is not None
        index = buffer.find(self._delimiter)
        if index < 0:
            keep = len(self._delimiter) - 1
            self._write(buffer[: max(0, len(buffer) - keep)])
            del buffer[: max(0, len(buffer) - keep)]
            return False
        self._write(buffer[:index])
        del buffer[: index + len(self._delimiter)]
        body, self._body = self._body, None
        body.seek(0)
        parts.append(Part(MappingProxyType(self._headers), body, self._size))
        self._state = self._AFTER_DELIMITER
        return True

    def _write(self, data: bytearray) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self._max_part_bytes:
            raise PartTooLarge(self._max_part_bytes)
        assert self._body is not None
        self._body.write(data)


def _parse_headers(block: bytes) -> dict[str, str]:
    """RFC 5322-style header lines (RFC 2046 5.1.1 body part headers), names lower-cased."""
    headers: dict[str, str] = {}
    name = ""
    for line in block.split(_CRLF):
        if not line:
            continue
        text = line.decode("utf-8", "replace")
        if text[0] in " \t":
            if not name:
                raise MalformedMultipart("a folded header line has nothing to continue")
            headers[name] += " " + text.strip()
            continue
        field_name, colon, value = text.partition(":")
        field_name = field_name.strip().lower()
        if not colon or not _TOKEN.fullmatch(field_name):
            raise MalformedMultipart(f"malformed part header line: {text[:80]!r}")
        name = field_name
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def multipart_chunks(
    parts: Iterable[tuple[Mapping[str, str], Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    """Encode `parts` (headers, body chunks) as a multipart body with `boundary`.

    Streams: each body chunk is yielded as given. The caller picks a boundary that does not
    occur in any body (`new_boundary()` is random for that reason). A header name or value
    holding CR or LF raises ValueError: it would forge framing.
    """
    if not is_rfc2046_boundary(boundary):
        raise ValueError(f"invalid boundary {boundary!r} (RFC 2046 5.1.1)")
    marker = b"--" + boundary.encode("ascii")
    for headers, body in parts:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
                raise ValueError(f"invalid part header {name!r}: {value!r}")
        head = b"".join(f"{name}: {value}".encode() + _CRLF for name, value in headers.items())
        yield marker + _CRLF + head + _CRLF
        yield from (chunk for chunk in body if chunk)
        yield _CRLF
    yield marker + b"--" + _CRLF
