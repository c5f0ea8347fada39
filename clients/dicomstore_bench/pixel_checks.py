"""The one-time check of an answer of `dicomstore-pixel-bench`, outside the clock: status, media
type, a JPEG of 512x512 (and how far it is from the instance's window), an Explicit VR Little
Endian instance whose pixels equal the original, frame bytes equal to the original's.

An error status raises `Unavailable` (the server does not do this: reported, not timed); a 200
with a wrong body raises `WrongAnswer` (a problem).
"""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
from PIL import Image as PilImage
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dicomstore_bench.pixel_images import SIZE, Image, window_reference
from dicomstore_bench.pixel_workloads import EXPLICIT_LE, JPEG, Case

#: Mean |difference| (of 255) from the reference rendering below which the window was applied.
WINDOWED = 5.0


class Unavailable(Exception):
    """The server answered an error status: it does not do this."""


class WrongAnswer(Exception):
    """The server answered 200 with something else than asked."""


def parts(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart/related body (PS3.18 8.6.1.2)."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        raise WrongAnswer(f"multipart answer without a boundary: {content_type}")
    out = []
    for chunk in (b"\r\n" + body).split(b"\r\n--" + boundary[1].encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^content-type:[ \t]*(.*?)[ \t]*\r?$", head)
        out.append((found[1].decode() if found else "", payload))
    return out


def payload(reply: httpx.Response, accept: str, part_type: str) -> bytes:
    """The one body asked for: the whole answer, or its single part when multipart."""
    content_type = reply.headers.get("content-type", "")
    if not accept.startswith("multipart/"):
        if not content_type.startswith(part_type):
            raise WrongAnswer(f"Content-Type {content_type}, not {part_type}")
        return reply.content
    if not content_type.startswith("multipart/related"):
        raise WrongAnswer(f"Content-Type {content_type}, not multipart/related")
    found = parts(reply.content, content_type)
    if len(found) != 1:
        raise WrongAnswer(f"{len(found)} parts, not 1")
    if not found[0][0].startswith(part_type):
        raise WrongAnswer(f"part of Content-Type {found[0][0]!r}, not {part_type}")
    return found[0][1]


def reason(reply: httpx.Response) -> str:
    """The message of an error answer: Google's `error.message`, Orthanc's `Details`, or the
    start of the body."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        found = error.get("message") if isinstance(error, dict) else body.get("Details")
        if isinstance(found, str):
            return found
    return " ".join(reply.text.split())[:160]


def check(case: Case, image: Image, reply: httpx.Response, accept: str) -> str:
    """What the answer is, for the notes; raises when it is not the one asked for."""
    if reply.status_code != 200:
        raise Unavailable(f"HTTP {reply.status_code} {reason(reply)}")
    if case.workload == "rendered":
        return _rendered(payload(reply, accept, JPEG), image)
    if case.workload == "transcode":
        return _transcoded(payload(reply, accept, "application/dicom"), image)
    body = payload(reply, accept, "application/octet-stream")
    number = int(str(reply.url).rsplit("/", 1)[1])
    if body != image.frame(number):
        raise WrongAnswer(f"frame {number}: {len(body):,} B that differ from the original frame")
    return f"{len(body):,} B, the original frame"


def _rendered(body: bytes, image: Image) -> str:
    with PilImage.open(io.BytesIO(body)) as picture:
        if picture.format != "JPEG" or picture.size != (SIZE, SIZE):
            raise WrongAnswer(f"a {picture.format} of {picture.size}, not a JPEG of {SIZE}^2")
        grey = np.asarray(picture.convert("L"), dtype=np.float32)
    off = float(np.abs(grey - window_reference(image.hu)).mean())
    applied = "" if off < WINDOWED else ", not the instance's window"
    return f"{len(body):,} B JPEG, {off:.1f}/255 from window 40/400{applied}"


def _transcoded(body: bytes, image: Image) -> str:
    ds = dcmread(io.BytesIO(body))
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax != ExplicitVRLittleEndian:
        raise WrongAnswer(f"transfer syntax {syntax}, not {EXPLICIT_LE}")
    if not np.array_equal(ds.pixel_array, image.pixels[0]):
        raise WrongAnswer("the transcoded pixels differ from the original's")
    return f"{len(body):,} B, {syntax}, pixels equal"
