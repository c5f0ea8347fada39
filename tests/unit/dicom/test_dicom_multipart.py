"""multipart/related: Content-Type parsing, incremental reading, writing (RFC 2046 / 2387)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import pytest

from dicomstore.dicom.multipart import (
    MAX_BOUNDARY_LENGTH,
    MAX_HEADER_BYTES,
    InvalidContentType,
    MalformedMultipart,
    MultipartReader,
    Part,
    PartTooLarge,
    is_rfc2046_boundary,
    is_valid_boundary,
    multipart_chunks,
    new_boundary,
    parse_content_type,
)

BOUNDARY = "DICOMwebBoundary"
Parsed = list[tuple[dict[str, str], bytes]]


def read_parts(
    chunks: Iterable[bytes],
    boundary: str = BOUNDARY,
    max_part_bytes: int = 1 << 20,
    spool_threshold: int = 1024,
) -> Parsed:
    reader = MultipartReader(boundary, max_part_bytes, spool_threshold)
    parts: list[Part] = []
    for chunk in chunks:
        parts += reader.feed(chunk)
    reader.close()
    result = []
    for part in parts:
        with part:
            body = part.body.read()
            assert len(body) == part.size
            result.append((dict(part.headers), body))
    return result


def encode(parts: Iterable[tuple[Mapping[str, str], bytes]], boundary: str = BOUNDARY) -> bytes:
    return b"".join(multipart_chunks(((h, [b]) for h, b in parts), boundary))


# --- Content-Type -----------------------------------------------------------------------------


@pytest.mark.google_behaviour("stow-request-types")
@pytest.mark.parametrize(
    ("header", "media_type", "params"),
    [
        ("application/dicom", "application/dicom", {}),
        (
            'multipart/related; type="application/dicom"; boundary=abc',
            "multipart/related",
            {"type": "application/dicom", "boundary": "abc"},
        ),
        # unquoted type (OHIF's omitQuotationForMultipartRequest,
        # docs/google-behaviour.md#stow-request-types)
        (
            "multipart/related; type=application/dicom; boundary=abc",
            "multipart/related",
            {"type": "application/dicom", "boundary": "abc"},
        ),
        (
            'Multipart/Related;TYPE=application/dicom+json;Boundary="a b:c"',
            "multipart/related",
            {"type": "application/dicom+json", "boundary": "a b:c"},
        ),
        (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
            "multipart/related",
            {"type": "application/dicom", "transfer-syntax": "1.2.840.10008.1.2.1"},
        ),
        (
            'multipart/related; start="<root@x>"; boundary="q\\"uote"',
            "multipart/related",
            {"start": "<root@x>", "boundary": 'q"uote'},
        ),
        ("application/dicom+json;", "application/dicom+json", {}),
        ("text/plain ; charset = utf-8 ", "text/plain", {"charset": "utf-8"}),
    ],
)
def test_parse_content_type_reads_media_type_and_parameters(
    header: str, media_type: str, params: dict[str, str]
) -> None:
    parsed = parse_content_type(header)
    assert parsed.media_type == media_type
    assert dict(parsed.params) == params


def test_content_type_accessors() -> None:
    parsed = parse_content_type(
        'multipart/related; type="Application/DICOM"; boundary=b1; start=s; transfer-syntax=*'
    )
    assert (parsed.type, parsed.boundary, parsed.start, parsed.transfer_syntax) == (
        "application/dicom",
        "b1",
        "s",
        "*",
    )
    assert parse_content_type("application/dicom").boundary is None


@pytest.mark.parametrize(
    "header",
    [
        "",
        "application",
        "application/",
        "/dicom",
        "multipart/related; boundary",
        "multipart/related; boundary=a; boundary=b",
        "multipart/related; =a",
        'multipart/related; boundary="abc',
        'multipart/related; boundary="abc" x',
    ],
)
def test_parse_content_type_refuses_malformed_headers(header: str) -> None:
    with pytest.raises(InvalidContentType):
        parse_content_type(header)


#: Orthanc 1.10's DICOMweb client: two UUIDs joined by "-", 73 characters.
ORTHANC_BOUNDARY = "7b7a8a3c-7a4f-4b4e-9a43-1d2f0e5c9b11-0c8e6a2d-5f3b-4c1a-8e7d-2b9f4a6c3e10"


@pytest.mark.parametrize(
    ("boundary", "valid"),
    [
        ("a", True),
        ("a b", True),
        (" a", True),
        ("a" * 70, True),
        ("a" * 71, True),  # longer than RFC 2046 allows
        (ORTHANC_BOUNDARY, True),
        ("a" * MAX_BOUNDARY_LENGTH, True),
        ('!"#;<>@[\\]{|}~`', True),  # outside RFC 2046's alphabet, harmless to framing
        ("a" * (MAX_BOUNDARY_LENGTH + 1), False),
        ("a ", False),  # a trailing space looks like transport padding
        ("", False),
        ("a\r\nb", False),
        ("a\nb", False),
        ("a\tb", False),
        ("a\x00b", False),
        ("a\x7fb", False),
        ("é", False),
    ],
)
def test_reader_boundary_rule_is_wider_than_rfc_2046(boundary: str, valid: bool) -> None:
    assert is_valid_boundary(boundary) is valid


@pytest.mark.parametrize(
    ("boundary", "valid"),
    [
        ("a", True),
        ("a b", True),
        ("a" * 70, True),
        ("a" * 71, False),
        (ORTHANC_BOUNDARY, False),
        ("a;b", False),
        ("a ", False),
        ("", False),
    ],
)
def test_writer_boundary_rule_follows_rfc_2046(boundary: str, valid: bool) -> None:
    assert is_rfc2046_boundary(boundary) is valid


def test_new_boundary_is_valid_and_fresh() -> None:
    assert is_rfc2046_boundary(new_boundary())
    assert new_boundary() != new_boundary()


@pytest.mark.parametrize(
    "boundary", [ORTHANC_BOUNDARY, "a" * MAX_BOUNDARY_LENGTH, 'q"u;o=t<e>@[x]', "a b"]
)
@pytest.mark.parametrize("chunk_size", [1, 13, 1 << 30])
def test_reader_parses_bodies_framed_with_long_or_unusual_boundaries(
    boundary: str, chunk_size: int
) -> None:
    marker = f"--{boundary}".encode()
    data = (
        marker
        + b"\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n"
        + marker
        + b"\r\nContent-Type: application/dicom\r\n\r\n"
        + marker[:-1]
        + b"\r\n"
        + marker
        + b"--\r\n"
    )
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert read_parts(chunks, boundary=boundary) == [
        ({"content-type": "application/dicom"}, b"first"),
        ({"content-type": "application/dicom"}, marker[:-1]),
    ]


def test_content_type_with_a_quoted_long_boundary_reads_back_whole() -> None:
    header = f'multipart/related; type="application/dicom"; boundary="{ORTHANC_BOUNDARY}"'
    boundary = parse_content_type(header).boundary
    assert boundary == ORTHANC_BOUNDARY
    assert is_valid_boundary(boundary)


# --- round trips ------------------------------------------------------------------------------


def _body(index: int) -> bytes:
    # Bodies that look like framing: CRLFs, dashes, a partial delimiter, binary bytes.
    return (
        f"part {index}\r\n--{BOUNDARY[:-1]}\r\n--\r\n".encode()
        + bytes(range(256)) * (index % 4)
        + b"\r\n-"
    )


@pytest.mark.parametrize("count", [1, 3, 50])
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 1 << 30])
def test_round_trip_preserves_parts(count: int, chunk_size: int) -> None:
    parts = [
        ({"Content-Type": "application/dicom", "Content-Location": f"/p/{i}"}, _body(i))
        for i in range(count)
    ]
    data = encode(parts)
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    assert read_parts(chunks) == [
        ({"content-type": "application/dicom", "content-location": f"/p/{i}"}, body)
        for i, (_, body) in enumerate(parts)
    ]


def test_round_trip_of_empty_body_and_no_headers() -> None:
    assert read_parts([encode([({}, b"")])]) == [({}, b"")]


def test_writer_streams_body_chunks() -> None:
    chunks = list(multipart_chunks([({"Content-Type": "a/b"}, [b"x", b"", b"y"])], "bb"))
    assert b"".join(chunks) == b"--bb\r\nContent-Type: a/b\r\n\r\nxy\r\n--bb--\r\n"


@pytest.mark.parametrize(
    "headers", [{"Content-Type": "a/b\r\n\r\n--bb"}, {"Bad Name": "x"}, {"X": "a\nb"}]
)
def test_writer_refuses_headers_that_would_forge_framing(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="invalid part header"):
        list(multipart_chunks([(headers, [b"x"])], "bb"))


@pytest.mark.parametrize("boundary", ["bad boundary ", "a" * 71, ORTHANC_BOUNDARY, "a;b"])
def test_writer_refuses_boundaries_outside_rfc_2046(boundary: str) -> None:
    with pytest.raises(ValueError, match="invalid boundary"):
        list(multipart_chunks([], boundary))


def test_boundary_split_across_feeds_at_every_position() -> None:
    data = (
        b"preamble\r\n--"
        + BOUNDARY.encode()
        + b"  \r\nContent-Type: a/b\r\n\r\nfirst\r\n--"
        + BOUNDARY.encode()
        + b"\r\n\r\nsecond\r\n--"
        + BOUNDARY.encode()
        + b"--\r\nepilogue"
    )
    expected = [({"content-type": "a/b"}, b"first"), ({}, b"second")]
    for split in range(len(data) + 1):
        assert read_parts([data[:split], data[split:]]) == expected, split
    for first in range(0, len(data), 5):
        for second in range(first, len(data), 11):
            chunks = [data[:first], data[first:second], data[second:]]
            assert read_parts(chunks) == expected, (first, second)


def test_preamble_and_epilogue_are_ignored() -> None:
    data = b"This is a preamble.\r\nMore preamble\r\n" + encode([({"A": "1"}, b"x")])
    data += b"This is an epilogue\r\n--" + BOUNDARY.encode() + b"\r\nignored"
    assert read_parts([data]) == [({"a": "1"}, b"x")]


def test_first_delimiter_may_open_the_body() -> None:
    data = b"--" + BOUNDARY.encode() + b"\r\n\r\nbody\r\n--" + BOUNDARY.encode() + b"--"
    assert read_parts([data]) == [({}, b"body")]


def test_body_crlf_before_delimiter_belongs_to_the_delimiter() -> None:
    data = encode([({}, b"line\r\n")])
    assert read_parts([data]) == [({}, b"line\r\n")]


def test_folded_and_repeated_headers_are_joined() -> None:
    data = (
        b"--b\r\nContent-Type: multipart/related;\r\n type=a/b\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        b"z\r\n--b--"
    )
    assert read_parts([data], boundary="b") == [
        ({"content-type": "multipart/related; type=a/b", "x-a": "1, 2"}, b"z")
    ]


def test_zero_parts_is_accepted() -> None:
    assert read_parts([b"--b--\r\n"], boundary="b") == []


def test_part_bodies_spool_to_disk_past_the_threshold() -> None:
    big = os.urandom(10_000)
    reader = MultipartReader(BOUNDARY, max_part_bytes=20_000, spool_threshold=1_000)
    parts = reader.feed(encode([({}, big), ({}, b"small")]))
    reader.close()
    assert [part.size for part in parts] == [10_000, 5]
    assert parts[0].body._rolled  # type: ignore[attr-defined]
    assert not parts[1].body._rolled  # type: ignore[attr-defined]
    assert parts[0].body.read() == big
    for part in parts:
        part.close()


def test_part_accessors() -> None:
    reader = MultipartReader("b", 100, 100)
    (part,) = reader.feed(b"--b\r\nContent-Type: a/b\r\nContent-Location: loc\r\n\r\nx\r\n--b--")
    with part:
        assert (part.content_type, part.content_location) == ("a/b", "loc")


# --- errors -----------------------------------------------------------------------------------


def test_missing_close_delimiter_is_malformed() -> None:
    data = encode([({}, b"x")])
    truncated = data[: data.rindex(b"--" + BOUNDARY.encode() + b"--")]
    reader = MultipartReader(BOUNDARY, 100, 100)
    parts = reader.feed(truncated)
    for part in parts:
        part.close()
    with pytest.raises(MalformedMultipart, match="before the close delimiter"):
        reader.close()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no boundary at all",
        b"--b\r\n\r\nbody without end",
        b"--b\r\nContent-Type: a/b\r\n",  # headers never end
    ],
)
def test_body_that_ends_early_is_malformed(data: bytes) -> None:
    reader = MultipartReader("b", 100, 100)
    assert reader.feed(data) == []
    with pytest.raises(MalformedMultipart):
        reader.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"--bx\r\n\r\nbody\r\n--b--", "not followed by CRLF"),
        (b"--b\n\nbody\n--b--\n", "not followed by CRLF"),  # bare LF is not a line break
        (b"--b\r\nno colon here\r\n\r\nbody\r\n--b--", "malformed part header"),
        (b"--b\r\n folded first\r\n\r\nbody\r\n--b--", "folded header"),
        (b"--b\r\nBad Name: x\r\n\r\nbody\r\n--b--", "malformed part header"),
    ],
)
def test_malformed_framing_or_headers_raise(data: bytes, message: str) -> None:
    reader = MultipartReader("b", 100, 100)
    with pytest.raises(MalformedMultipart, match=message):
        reader.feed(data)
    with pytest.raises(MalformedMultipart, match="already failed"):
        reader.feed(b"more")


def test_oversized_headers_are_malformed() -> None:
    reader = MultipartReader("b", 100, 100)
    with pytest.raises(MalformedMultipart, match="headers exceed"):
        reader.feed(b"--b\r\nX: " + b"a" * (MAX_HEADER_BYTES + 1))


def test_part_over_the_limit_raises_part_too_large() -> None:
    reader = MultipartReader(BOUNDARY, max_part_bytes=100, spool_threshold=10)
    data = encode([({}, b"ok"), ({}, b"x" * 101)])
    completed: list[Part] = []
    with pytest.raises(PartTooLarge) as raised:
        for index in range(0, len(data), 16):
            completed += reader.feed(data[index : index + 16])
    assert [part.body.read() for part in completed] == [b"ok"]
    for part in completed:
        part.close()
    assert raised.value.limit == 100
    with pytest.raises(MalformedMultipart):
        reader.close()


def test_part_exactly_at_the_limit_is_accepted() -> None:
    assert read_parts([encode([({}, b"x" * 100)])], max_part_bytes=100) == [({}, b"x" * 100)]


@pytest.mark.parametrize("boundary", ["", "a\r\n", "a ", "a" * (MAX_BOUNDARY_LENGTH + 1)])
def test_reader_refuses_invalid_boundary(boundary: str) -> None:
    with pytest.raises(MalformedMultipart, match=r"invalid boundary .*printable ASCII"):
        MultipartReader(boundary, 1, 1)
