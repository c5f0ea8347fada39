"""multipart/related bodies (RFC 2387) as DICOMweb uses them (PS3.18 8.6.1.2): the STOW-RS
request body written from files as it is sent, and a WADO-RS response read part after part.

Reading uses python-multipart's `MultipartParser`, the push parser under Starlette's form
parsing: fed chunks as they arrive, it reports each part's headers and slices of its data,
so a part goes to disk without the response being held in memory.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from dicomstore_client.errors import ClientError

CHUNK_BYTES = 256 * 1024


class StowBody:
    """`multipart/related; type="application/dicom"` with one part per file, read in chunks
    as it is sent; its length is known beforehand, so it goes with a Content-Length."""

    def __init__(self, files: Sequence[Path], sizes: Sequence[int]) -> None:
        self.files = files
        self.sizes = sizes
        self.boundary = secrets.token_hex(16)
        self._head = f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        self._tail = f"--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    @property
    def length(self) -> int:
        framing = len(self._head) + len(b"\r\n")
        return sum(self.sizes) + framing * len(self.files) + len(self._tail)

    def chunks(self) -> Iterator[bytes]:
        for path in self.files:
            yield self._head
            with path.open("rb") as file:
                while chunk := file.read(CHUNK_BYTES):
                    yield chunk
            yield b"\r\n"
        yield self._tail

    async def achunks(self) -> AsyncIterator[bytes]:
        # Local reads of a chunk are short; they are not worth a thread each.
        for chunk in self.chunks():
            yield chunk


def boundary_of(content_type: str) -> str:
    """The boundary of a multipart/related media type; ClientError if it is not one."""
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    if message.get_content_type() != "multipart/related" or not isinstance(boundary, str):
        raise ClientError(
            f"expected a multipart/related response, got {content_type!r}", "INTERNAL"
        )
    return boundary


@dataclass
class ReceivedPart:
    """A part written to disk: its headers (lower-case names), where, and how many bytes."""

    headers: dict[str, str]
    path: Path
    size: int = 0


@dataclass
class _PartState:
    headers: dict[str, str] = field(default_factory=dict)
    field_name: bytearray = field(default_factory=bytearray)
    field_value: bytearray = field(default_factory=bytearray)


class PartsToFiles:
    """Feed a multipart/related body chunk by chunk; each part is written to a new temporary
    file in `folder` as it arrives, and returned once complete (to be renamed by the caller)."""

    def __init__(self, content_type: str, folder: Path) -> None:
        self._folder = folder
        self._state = _PartState()
        self._fd: int | None = None
        self._current: ReceivedPart | None = None
        self._completed: list[ReceivedPart] = []
        self._ended = False
        self._counter = 0
        self._parser = MultipartParser(
            boundary_of(content_type),
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_end": self._finish,
            },
        )

    def feed(self, chunk: bytes) -> list[ReceivedPart]:
        """The parts completed by this chunk."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.abort()
            raise ClientError(f"malformed multipart response: {exc}", "INTERNAL") from exc
        completed, self._completed = self._completed, []
        return completed

    def close(self) -> None:
        """The body has ended: it must have ended with its closing boundary."""
        if not self._ended:
            self.abort()
            raise ClientError("the multipart response ended before its last part", "UNAVAILABLE")

    def abort(self) -> None:
        """Remove the part being written, if any."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._current is not None:
            self._current.path.unlink(missing_ok=True)
            self._current = None

    def _begin(self) -> None:
        self._state = _PartState()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._state.field_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._state.field_value += data[start:end]

    def _header_end(self) -> None:
        name = self._state.field_name.decode("latin-1").strip().lower()
        self._state.headers[name] = self._state.field_value.decode("latin-1").strip()
        self._state.field_name.clear()
        self._state.field_value.clear()

    def _headers_finished(self) -> None:
        self._counter += 1
        path = self._folder / f".part-{os.getpid()}-{id(self)}-{self._counter}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._current = ReceivedPart(self._state.headers, path)

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None and self._current is not None
        view = memoryview(data)[start:end]
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._current.size += end - start

    def _end(self) -> None:
        assert self._fd is not None and self._current is not None
        os.close(self._fd)
        self._fd = None
        self._completed.append(self._current)
        self._current = None

    def _finish(self) -> None:
        self._ended = True
