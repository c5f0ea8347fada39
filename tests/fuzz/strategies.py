"""Hypothesis strategies for fuzzing dicomstore's inputs: mutated DICOM files (from pydicom's test
files), multipart bodies, media types, QIDO-RS parameters, AIP-160 filters, resource names, page
tokens and JSON bodies. Each mixes inputs that are nearly right with plain garbage, since the
nearly right ones reach deeper into the server."""

from __future__ import annotations

import base64
import copy
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pydicom
from hypothesis import strategies as st
from pydicom.dataelem import DataElement

from tests.unit.dicom.dicomfiles import PYDICOM_DATA

MAX_SEED_BYTES = 64 * 1024
SEEDS: dict[str, bytes] = {
    path.name: path.read_bytes()
    for path in sorted((PYDICOM_DATA / "test_files").glob("*.dcm"))
    if path.stat().st_size <= MAX_SEED_BYTES
}
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
VRS = sorted(
    LONG_VRS
    | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT"}
    | {b"PN", b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI", b"UL", b"US", b"UV"}
)
INTERESTING_TAGS = [
    (0x0002, 0x0000),
    (0x0002, 0x0010),
    (0x0008, 0x0016),
    (0x0008, 0x0018),
    (0x0020, 0x000D),
    (0x0020, 0x000E),
    (0x0028, 0x0008),
    (0x0028, 0x0010),
    (0x7FE0, 0x0010),
    (0xFFFE, 0xE000),
    (0xFFFE, 0xE00D),
    (0xFFFE, 0xE0DD),
    (0xFFFF, 0xFFFF),
    (0x0000, 0x0000),
]
INTERESTING_LENGTHS = [0, 1, 2, 3, 7, 0xFF, 0xFFFF, 0xFFFE, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFE]


@dataclass(frozen=True)
class Element:
    """Where a top-level element's tag, VR and length lie in a file."""

    tag: int
    vr: int | None  # offset of the VR, None when the VR is implicit
    length: int
    length_size: int


def elements(data: bytes) -> list[Element]:
    """The top-level elements of a little-endian file up to the first undefined length."""
    found: list[Element] = []
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data):
        vr = data[pos + 4 : pos + 6]
        if vr in VRS:
            if vr in LONG_VRS:
                element, size = Element(pos, pos + 4, pos + 8, 4), 12
            else:
                element, size = Element(pos, pos + 4, pos + 6, 2), 8
        else:
            element, size = Element(pos, None, pos + 4, 4), 8
        if element.length + element.length_size > len(data):
            break
        found.append(element)
        value = int.from_bytes(
            data[element.length : element.length + element.length_size], "little"
        )
        if value == 0xFFFFFFFF:
            break
        pos += size + value
    return found


SEED_ELEMENTS = {name: elements(data) for name, data in SEEDS.items()}

Mutation = Callable[[bytearray], None]


@st.composite
def mutations(draw: st.DrawFn, name: str, size: int) -> Mutation:
    """One change to a copy of seed `name`, of `size` bytes."""
    found = SEED_ELEMENTS[name]
    if bool(found) and draw(st.booleans()):
        return draw(element_mutation(found, size))
    return draw(byte_mutation(size))


@st.composite
def byte_mutation(draw: st.DrawFn, size: int) -> Mutation:
    """A flipped bit, a truncation, or bytes inserted, deleted or repeated."""
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"]))
    # Half of the positions fall in the first 2 KB, where the headers and short values are.
    position = draw(
        st.one_of(st.integers(0, max(0, min(size, 2048) - 1)), st.integers(0, max(0, size - 1)))
    )
    if kind == "flip":
        bit = draw(st.integers(0, 7))

        def flip(data: bytearray) -> None:
            if position < len(data):
                data[position] ^= 1 << bit

        return flip
    if kind == "truncate":
        return lambda data: data.__delitem__(slice(min(position, len(data)), None))
    if kind == "insert":
        extra = draw(st.binary(min_size=1, max_size=16))
        return lambda data: data.__setitem__(slice(position, position), extra)
    count = draw(st.integers(1, 256))
    if kind == "delete":
        return lambda data: data.__delitem__(slice(position, position + count))
    return lambda data: data.__setitem__(
        slice(position, position), bytes(data[position : position + count])
    )


@st.composite
def element_mutation(draw: st.DrawFn, found: list[Element], size: int) -> Mutation:
    """A top-level element's length, tag or VR overwritten."""
    element = draw(st.sampled_from(found))
    kind = draw(st.sampled_from(["length", "length", "tag", "vr"]))
    if kind == "length":
        value = draw(
            st.one_of(
                st.sampled_from([*INTERESTING_LENGTHS, size, size - element.length]),
                st.integers(0, 2 ** (8 * element.length_size) - 1),
            )
        )
        value %= 2 ** (8 * element.length_size)
        raw = value.to_bytes(element.length_size, "little")
        return lambda data: data.__setitem__(
            slice(element.length, element.length + element.length_size), raw
        )
    if kind == "tag":
        group, number = draw(
            st.one_of(
                st.sampled_from(INTERESTING_TAGS),
                st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
            )
        )
        raw = group.to_bytes(2, "little") + number.to_bytes(2, "little")
        return lambda data: data.__setitem__(slice(element.tag, element.tag + 4), raw)
    vr_bytes = draw(st.one_of(st.sampled_from(VRS), st.binary(min_size=2, max_size=2)))
    at = element.vr if element.vr is not None else element.tag + 4
    return lambda data: data.__setitem__(slice(at, at + 2), vr_bytes)


@st.composite
def mutated_dicom(draw: st.DrawFn) -> bytes:
    """A pydicom test file with one to four random changes (bit flips, truncation, inserted,
    deleted or repeated bytes, corrupted tags, VRs and lengths)."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for change in draw(st.lists(mutations(name, len(data)), min_size=1, max_size=4)):
        change(data)
    return bytes(data)


TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
#: What a header value can carry (RFC 9110 field-content): visible latin-1, space and tab.
HEADER_TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.characters(min_codepoint=0x80, max_codepoint=0xFF),
        st.just("\t"),
    ),
    max_size=80,
)
MEDIA_TYPES = [
    "application/dicom",
    "application/dicom+json",
    "application/dicom+xml",
    "application/json",
    "application/octet-stream",
    "multipart/related",
    "multipart/mixed",
    "image/jpeg",
    "image/png",
    "image/jp2",
    "video/mpeg",
    "text/plain",
    "text/html",
    "*/*",
    "application/*",
    "multipart/*",
    "",
]
PARAMETER_NAMES = ["type", "boundary", "transfer-syntax", "charset", "q", "start", "x"]
PARAMETER_VALUES = [
    '"application/dicom"',
    "application/dicom",
    '"application/dicom+json"',
    "application/octet-stream",
    "*",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.5",
    "0.5",
    "0",
    "1.5",
    "-1",
    "utf-8",
    '""',
    '"',
    "",
]


@st.composite
def media_type(draw: st.DrawFn) -> str:
    """A Content-Type or one element of an Accept header: near-valid or garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(HEADER_TEXT)
    base = draw(
        st.one_of(st.sampled_from(MEDIA_TYPES), st.text(TOKEN_CHARS + "/", min_size=1, max_size=30))
    )
    params = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(PARAMETER_NAMES), st.text(TOKEN_CHARS, max_size=10)),
                st.one_of(st.sampled_from(PARAMETER_VALUES), st.text(PRINTABLE, max_size=20)),
            ),
            max_size=4,
        )
    )
    separator = draw(st.sampled_from([";", "; ", " ; ", ";;"]))
    return base + "".join(f"{separator}{name}={value}" for name, value in params)


accept_header = st.lists(media_type(), min_size=1, max_size=4).map(", ".join)


BOUNDARY_CHARS = string.ascii_letters + string.digits + "'()+_,-./:=? "


@st.composite
def multipart_body(draw: st.DrawFn, instances: st.SearchStrategy[bytes]) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/related request, well-formed or broken."""
    boundary = draw(
        st.one_of(
            st.text(BOUNDARY_CHARS, min_size=1, max_size=80).filter(lambda b: not b.endswith(" ")),
            st.text(PRINTABLE, max_size=100),
        )
    )
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]))
    body = draw(st.sampled_from([b"", b"preamble" + newline, newline]))
    parts = draw(
        st.lists(
            st.one_of(instances, st.binary(max_size=200), st.just(b"")),
            max_size=4,
        )
    )
    marker = draw(st.sampled_from([boundary, boundary, boundary + "x", boundary[:-1]]))
    for part in parts:
        body += b"--" + marker.encode("latin-1") + newline
        headers = draw(
            st.lists(
                st.one_of(
                    st.builds(lambda t: f"Content-Type: {t}", media_type()),
                    st.just("Content-Type: application/dicom"),
                    st.builds(lambda t: f"Content-Location: {t}", st.text(PRINTABLE, max_size=30)),
                    st.text(PRINTABLE, max_size=40),
                ),
                max_size=3,
            )
        )
        for header in headers:
            body += header.encode("latin-1") + newline
        body += newline + part + newline
    if draw(st.booleans()):
        body += b"--" + marker.encode("latin-1") + b"--" + newline
    body += draw(st.sampled_from([b"", b"epilogue", newline]))
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    kind = draw(
        st.sampled_from(
            ['"application/dicom"', "application/dicom", '"application/dicom+json"', '"x/y"', ""]
        )
    )
    quoted = draw(st.booleans())
    parameters = [f"type={kind}"] if kind else []
    if draw(st.integers(0, 9)) > 0:
        parameters.append(f'boundary="{boundary}"' if quoted else f"boundary={boundary}")
    parameters = draw(st.permutations(parameters))
    content_type = "; ".join(["multipart/related", *parameters])
    return content_type, body


#: DICOM UIDs: those of the seed files, made-up valid ones, and invalid text.
SEED_UIDS = [
    "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
    "1.2.840.113619.2.1.1.322987881.621.736170080.681",
]
uid = st.one_of(
    st.sampled_from(SEED_UIDS),
    st.lists(st.integers(0, 10**12), min_size=1, max_size=8).map(
        lambda parts: ".".join(map(str, parts))
    ),
    st.text(string.digits + ".", max_size=70),
    st.text(PRINTABLE, max_size=70),
)
QIDO_KEYS = [
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "Modality",
    "ModalitiesInStudy",
    "StudyDescription",
    "InstanceNumber",
    "SeriesNumber",
    "Rows",
    "NumberOfFrames",
    "00100010",
    "00100020",
    "0020000D",
    "00080020",
    "7FE00010",
    "includefield",
    "limit",
    "offset",
    "fuzzymatching",
    "PixelData",
    "SpecificCharacterSet",
]
qido_value = st.one_of(
    st.sampled_from(
        [
            *("", "*", "?", "CT", "CT\\MR", "Doe*", "^", "=", "all", "true", "false", "-1", "0"),
            *("5001", "99999999999999999999", "20240101-20241231", "20240101-", "-20240101"),
            *("2024-01-01", "20241301", "19000101-18000101", "1.2.3,1.2.4", "1.2.*", "00100010"),
            *("PatientName,StudyDescription", "120000-130000", "1e3", "0x10", " 1 ", "NaN"),
        ]
    ),
    st.integers(-(2**63), 2**63).map(str),
    st.text(max_size=40),
    uid,
)
qido_parameters = st.lists(
    st.tuples(st.one_of(st.sampled_from(QIDO_KEYS), st.text(max_size=20)), qido_value),
    max_size=5,
)


#: A UID as a path segment: percent-encoded, so that any text makes a valid URL.
uid_segment = uid.map(lambda text: quote(text, safe=""))


@st.composite
def qido_path(draw: st.DrawFn) -> str:
    level = draw(st.sampled_from(["studies", "series", "instances"]))
    if level == "studies" or draw(st.booleans()):
        return f"/{level}"
    study = draw(uid_segment)
    if level == "series" or draw(st.booleans()):
        return f"/studies/{study}/{level}"
    return f"/studies/{study}/series/{draw(uid_segment)}/instances"


@st.composite
def wado_path(draw: st.DrawFn) -> str:
    """A retrieve path: study, series, instance, and their metadata, frames, rendered, bulk data."""
    path = f"/studies/{draw(uid_segment)}"
    depth = draw(st.integers(0, 2))
    if depth >= 1:
        path += f"/series/{draw(uid_segment)}"
    if depth == 2:
        path += f"/instances/{draw(uid_segment)}"
    suffix = draw(
        st.sampled_from(["", "/metadata", "/rendered", "/thumbnail", "/frames", "/bulkdata"])
    )
    if suffix == "/frames":
        frames = draw(
            st.one_of(
                st.lists(st.integers(-2, 2**40), min_size=1, max_size=4).map(
                    lambda numbers: ",".join(map(str, numbers))
                ),
                st.text(PRINTABLE, max_size=10),
            )
        )
        suffix = f"/frames/{quote(frames, safe=',')}"
    if suffix == "/bulkdata":
        suffix += "/" + quote(draw(st.text(PRINTABLE, max_size=30)), safe="/")
    return path + suffix


#: AIP-160 filters: grammar-built expressions on labels and other fields, and raw text.
FILTER_FIELDS = ["labels.kind", "labels.x", "labels", "name", "done", "labels.kind.y", "x"]
FILTER_VALUES = ["fuzz", "other", '"fuzz"', "'x'", "*", '""', "true", "1", "a b", "ü"]


def _comparison() -> st.SearchStrategy[str]:
    return st.builds(
        lambda field, op, value: f"{field}{op}{value}",
        st.one_of(st.sampled_from(FILTER_FIELDS), st.text(TOKEN_CHARS + ".", max_size=15)),
        st.sampled_from(["=", ":", "!=", "<", ">=", " = ", ":*", "=*", "~", ""]),
        st.one_of(st.sampled_from(FILTER_VALUES), st.text(max_size=12)),
    )


filter_expression = st.one_of(
    st.recursive(
        _comparison(),
        lambda inner: st.one_of(
            st.builds(lambda a, b: f"{a} AND {b}", inner, inner),
            st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
            st.builds(lambda a: f"NOT {a}", inner),
            st.builds(lambda a: f"-{a}", inner),
            st.builds(lambda a: f"({a})", inner),
            st.builds(lambda a, b: f"{a} {b}", inner, inner),
        ),
        max_leaves=6,
    ),
    st.text(max_size=40),
    st.text("()=:*!\"' ANDORT-.", max_size=30),
)

#: Resource names: right shapes with odd ids, wrong shapes, and text.
ID_TEXT = st.one_of(
    st.sampled_from(["fuzz", "other", "x", "-", "_", ".", "..", "a" * 300, "", "%", "%2F", "é"]),
    st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=20),
    st.text(max_size=20),
)
COLLECTIONS = ["projects", "locations", "datasets", "dicomStores", "operations", "dicomWeb", "x"]


@st.composite
def resource_name(draw: st.DrawFn) -> str:
    segments: list[str] = []
    if draw(st.integers(0, 3)) > 0:
        segments = ["projects", "fuzz", "locations", "local", "datasets", "fuzz"]
        segments = segments[: draw(st.integers(0, len(segments)))]
    for _ in range(draw(st.integers(0, 4))):
        segments += [draw(st.sampled_from(COLLECTIONS)), draw(ID_TEXT)]
    name = "/".join(segments)
    if draw(st.integers(0, 4)) == 0:
        name += ":" + draw(st.text(string.ascii_letters, max_size=20))
    return name


@st.composite
def page_token(draw: st.DrawFn, real: str) -> str:
    """A page token: `real` mutated (bit flips, truncation, padding), or text."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.text(max_size=60))
    if choice == 1:
        return draw(st.text(string.ascii_letters + string.digits + "-_=", max_size=120))
    raw = bytearray(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    if raw and choice == 2:
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] ^= 1 << draw(st.integers(0, 7))
    else:
        raw = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=8))
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip(draw(st.sampled_from(["=", ""])))


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELD_NAMES = [
    "name",
    "labels",
    "timeZone",
    "notificationConfig",
    "pubsubTopic",
    "sendForBulkImport",
    "streamConfigs",
    "bigqueryDestination",
    "tableUri",
    "gcsSource",
    "gcsDestination",
    "uri",
    "uriPrefix",
    "mimeType",
    "filterConfig",
    "resourcePathsGcsUri",
    "blobStorageSettings",
    "encryptionSpec",
    "@type",
]


@st.composite
def json_body(draw: st.DrawFn) -> bytes:
    """A request body: JSON with known field names and odd values, any JSON, or bytes."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=100))
    if choice == 1:
        return repr(draw(json_values)).encode()
    if choice == 2:
        return json.dumps(draw(json_values)).encode()
    value = draw(
        st.dictionaries(
            st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10)),
            st.one_of(
                json_values,
                st.dictionaries(st.text(max_size=70), st.text(max_size=70), max_size=4),
                st.fixed_dictionaries(
                    {"uri": st.one_of(st.text(max_size=40), st.just("gs://b/**.dcm"))}
                ),
            ),
            max_size=4,
        )
    )
    return json.dumps(value).encode()


JSON_SEED_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "rtplan.dcm",
    "SC_rgb_small_odd.dcm",
    "test-SR.dcm",
)


def _json_seed(name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A seed file as DICOM JSON without its File Meta Information, binary values as
    BulkDataURIs, and the bytes each URI names."""
    ds = pydicom.dcmread(PYDICOM_DATA / "test_files" / name)
    bulk: dict[str, bytes] = {}

    def handler(element: DataElement) -> str:
        uri = f"bulk/{element.tag:08X}/{len(bulk)}"
        value = element.value
        bulk[uri] = value if isinstance(value, bytes) else b""
        return uri

    metadata = ds.to_json_dict(bulk_data_threshold=64, bulk_data_element_handler=handler)
    return metadata, bulk


JSON_SEEDS = {name: _json_seed(name) for name in JSON_SEED_FILES}
BULK_MEDIA_TYPES = [
    "application/octet-stream",
    "image/jpeg",
    "image/jp2",
    "image/dicom-rle",
    "image/jls",
    "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
    "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.2",
    "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
    "text/plain",
]
JSON_VRS = [vr.decode() for vr in VRS] + ["", "XX", "sq", "P", "PNN"]


@st.composite
def json_attribute(draw: st.DrawFn, keys: list[str], uris: list[str]) -> Any:
    """A broken or odd DICOM JSON attribute (PS3.18 F.2)."""
    vr = draw(st.sampled_from(JSON_VRS))
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return draw(json_values)
    if choice == 1:
        return {"vr": vr}
    if choice == 2:
        return {"vr": vr, "Value": draw(st.lists(json_values, max_size=3))}
    if choice == 3:
        return {"vr": vr, "InlineBinary": draw(st.one_of(st.text(max_size=20), json_values))}
    if choice == 4:
        uri = draw(st.one_of(st.sampled_from(uris or ["x"]), st.text(max_size=20)))
        return {"vr": vr, "BulkDataURI": uri}
    if choice == 5:
        name = draw(st.one_of(st.text(max_size=20), json_values))
        return {
            "vr": "PN",
            "Value": [{draw(st.sampled_from(["Alphabetic", "Ideographic", "x"])): name}],
        }
    return {
        "vr": "SQ",
        "Value": [draw(st.dictionaries(st.sampled_from(keys), json_values, max_size=3))],
    }


@st.composite
def dicom_json_request(draw: st.DrawFn) -> tuple[str, bytes]:
    """(Content-Type, body) of a `type="application/dicom+json"` STOW-RS request: a pydicom
    test file as DICOM JSON with attributes broken, and its bulk data parts, some missing."""
    name = draw(st.sampled_from(JSON_SEED_FILES))
    seed, bulk = JSON_SEEDS[name]
    metadata = copy.deepcopy(seed)
    # A new SOP Instance UID, mostly, so that what passes is stored and read back.
    number = draw(st.integers(0, 10**15))
    metadata["00080018"] = {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.10.543.{number}"]}
    keys = sorted(metadata)
    uris = sorted(bulk)
    tag = st.one_of(
        st.sampled_from(keys),
        st.text("0123456789ABCDEFabcdef", min_size=7, max_size=9),
        st.text(max_size=10),
    )
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 4)) == 0:
            metadata.pop(draw(st.sampled_from(keys)), None)
        else:
            metadata[draw(tag)] = draw(json_attribute(keys, uris))
    document: Any = [metadata]
    shape = draw(st.integers(0, 9))
    if shape == 0:
        document = metadata
    elif shape == 1:
        document = [metadata, copy.deepcopy(seed)]
    elif shape == 2:
        document = draw(json_values)
    boundary = "fuzz-json-boundary"
    metadata_type = draw(
        st.sampled_from(
            [
                "application/dicom+json",
                "application/dicom+json; transfer-syntax=1.2.840.10008.1.2.4.50",
                "application/json",
                "application/dicom",
            ]
        )
    )
    body = f"--{boundary}\r\nContent-Type: {metadata_type}\r\n\r\n".encode()
    body += json.dumps(document).encode() + b"\r\n"
    sent = uris
    if uris and draw(st.integers(0, 2)) == 0:
        sent = draw(st.lists(st.sampled_from(uris), unique=True))
    for uri in sent:
        media = draw(st.sampled_from(BULK_MEDIA_TYPES[:1] * 6 + BULK_MEDIA_TYPES))
        data = bulk[uri]
        if draw(st.integers(0, 3)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
        body += (
            f"--{boundary}\r\nContent-Type: {media}\r\nContent-Location: {uri}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom+json"; boundary={boundary}'
    return content_type, body


@st.composite
def encoded_path(draw: st.DrawFn) -> str:
    """A resource name as a URL path: each segment percent-encoded from text or from any bytes
    (so invalid UTF-8 too), with an encoded or a bare `:verb` now and then."""
    name = draw(resource_name())
    segments = []
    for segment in name.split("/"):
        if draw(st.integers(0, 5)) == 0:
            segment_bytes = draw(st.binary(min_size=1, max_size=12))
            segments.append(quote(segment_bytes, safe=""))
        else:
            segments.append(quote(segment, safe=draw(st.sampled_from(["", ":", ":@"]))))
    return "/".join(segments)


#: A query string from any bytes, percent-encoded: invalid UTF-8, empty names, repeated keys.
raw_query = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(["filter", "pageToken", "pageSize", "updateMask", ""]),
            st.binary(max_size=8),
        ),
        st.binary(max_size=20),
    ),
    max_size=4,
).map(
    lambda pairs: "&".join(
        f"{quote(k if isinstance(k, bytes) else k.encode(), safe='')}={quote(v, safe='')}"
        for k, v in pairs
    )
)
