"""Fuzzed DICOMweb over HTTP against a real `dicomstore serve`, in both modes: STOW-RS of mutated
DICOM files and malformed multipart bodies, odd Content-Type and Accept headers, QIDO-RS
parameters, and retrieve paths. Never a 5xx, the process alive, a refused request changes
nothing (conftest.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import WEB, Fuzzed
from tests.fuzz.strategies import (
    SEEDS,
    accept_header,
    dicom_json_request,
    media_type,
    multipart_body,
    mutated_dicom,
    qido_parameters,
    qido_path,
    uid,
    wado_path,
)

JSON = "application/dicom+json"
RETRIEVE = "application/dicom; transfer-syntax=*"


def retrieve_urls(answer: Any) -> list[str]:
    """The RetrieveURLs of the instances a STOW-RS JSON answer says it stored."""
    if not answer.headers.get("content-type", "").startswith(JSON):
        return []
    items = answer.json().get("00081199", {}).get("Value", [])
    return [item["00081190"]["Value"][0] for item in items if "00081190" in item]


def read_back(server: Fuzzed, target: str, urls: list[str]) -> None:
    """What was stored reads back (bytes, metadata, its bulk data, the first frames, rendered)
    without a 5xx."""
    for url in urls:
        server.request(target, "GET", url, headers={"Accept": RETRIEVE})
        metadata = server.request(target, "GET", f"{url}/metadata", headers={"Accept": JSON})
        for frames in ("1", "2", "1,2"):
            server.request(
                target,
                "GET",
                f"{url}/frames/{frames}",
                headers={"Accept": "multipart/related; type=application/octet-stream"},
            )
        server.request(target, "GET", f"{url}/rendered", headers={"Accept": "image/jpeg"})
        if metadata.status_code == 200:
            for uri in bulk_data_uris(metadata.json()):
                server.request(target, "GET", uri, headers={"Accept": "*/*"})


def bulk_data_uris(value: Any) -> list[str]:
    """Every BulkDataURI in a DICOM JSON document, nested ones included."""
    if isinstance(value, dict):
        found = [value["BulkDataURI"]] if isinstance(value.get("BulkDataURI"), str) else []
        return found + [uri for item in value.values() for uri in bulk_data_uris(item)]
    if isinstance(value, list):
        return [uri for item in value for uri in bulk_data_uris(item)]
    return []


@given(data=mutated_dicom())
def test_stow_of_a_mutated_dicom_file(server: Fuzzed, data: bytes) -> None:
    answer = server.request(
        "http stow application/dicom (mutated files)",
        "POST",
        f"{WEB}/studies",
        content=data,
        headers={"Content-Type": "application/dicom", "Accept": JSON},
    )
    read_back(server, "http wado of stored mutated files", retrieve_urls(answer))


@given(parts=st.lists(mutated_dicom(), min_size=1, max_size=3))
def test_stow_of_mutated_files_in_one_multipart_body(server: Fuzzed, parts: list[bytes]) -> None:
    boundary = "fuzz-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    answer = server.request(
        "http stow multipart (mutated files)",
        "POST",
        f"{WEB}/studies",
        content=body + f"--{boundary}--\r\n".encode(),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": JSON,
        },
    )
    read_back(server, "http wado of stored mutated files", retrieve_urls(answer))


@given(request=multipart_body(st.one_of(st.sampled_from(list(SEEDS.values())), mutated_dicom())))
def test_stow_of_a_malformed_multipart_body(server: Fuzzed, request: tuple[str, bytes]) -> None:
    content_type, body = request
    server.request(
        "http stow multipart (malformed bodies)",
        "POST",
        f"{WEB}/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": JSON},
    )


@given(
    content_type=media_type(),
    accept=st.one_of(st.none(), accept_header),
    study=st.one_of(st.none(), uid),
    seed=st.sampled_from(sorted(SEEDS)),
)
def test_stow_with_odd_content_type_and_accept(
    server: Fuzzed, content_type: str, accept: str | None, study: str | None, seed: str
) -> None:
    headers = {"Content-Type": content_type}
    if accept is not None:
        headers["Accept"] = accept
    path = f"{WEB}/studies" if study is None else f"{WEB}/studies/{quote(study, safe='')}"
    server.request(
        "http stow (odd Content-Type, Accept, study)",
        "POST",
        path,
        content=SEEDS[seed],
        headers=headers,
    )


@given(path=qido_path(), params=qido_parameters, accept=st.one_of(st.none(), accept_header))
def test_qido_parameters(
    server: Fuzzed, path: str, params: list[tuple[str, str]], accept: str | None
) -> None:
    server.request(
        "http qido (paths, parameters, Accept)",
        "GET",
        f"{WEB}{path}",
        params=params,
        headers={} if accept is None else {"Accept": accept},
    )


@given(path=wado_path(), accept=st.one_of(st.none(), accept_header))
def test_retrieve_paths_and_accept_headers(server: Fuzzed, path: str, accept: str | None) -> None:
    server.request(
        "http wado (paths, Accept)",
        "GET",
        f"{WEB}{path}",
        headers={} if accept is None else {"Accept": accept},
    )


@given(
    accept=accept_header,
    index=st.integers(0, 9),
    suffix=st.sampled_from(["", "/metadata", "/frames/1", "/frames/2", "/rendered"]),
    level=st.integers(0, 2),
)
def test_retrieve_of_a_stored_instance_with_odd_accept(
    server: Fuzzed, accept: str, index: int, suffix: str, level: int
) -> None:
    found = server.http.get(f"{WEB}/instances", params={"limit": "10"}, headers={"Accept": JSON})
    items = found.json()
    item = items[index % len(items)]
    study, series, sop = (item[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018"))
    path = f"{WEB}/studies/{study}"
    path += ["", f"/series/{series}", f"/series/{series}/instances/{sop}"][level]
    if level < 2 and suffix.startswith("/frames"):
        suffix = "/metadata"
    server.request(
        "http wado of stored instances (Accept)", "GET", path + suffix, headers={"Accept": accept}
    )


@given(request=dicom_json_request())
def test_stow_of_broken_dicom_json_and_bulk_data(
    server: Fuzzed, request: tuple[str, bytes]
) -> None:
    content_type, body = request
    answer = server.request(
        "http stow application/dicom+json (broken instances)",
        "POST",
        f"{WEB}/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": JSON},
    )
    read_back(server, "http wado of stored JSON instances", retrieve_urls(answer))
