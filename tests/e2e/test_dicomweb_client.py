"""The `dicomweb-client` package (a real DICOMweb client) drives STOW, QIDO, WADO and delete."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from tests.e2e.server import external_target, start_server
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.app import App

PARENT = "v1/projects/p/locations/l/datasets/d"

needs_process = pytest.mark.skipif(
    external_target() is not None,
    reason="DICOMSTORE_TEST_TARGET is set: this test starts its own server with its own flags",
)


async def test_dicomweb_client_stores_searches_retrieves_and_deletes(app: App) -> None:
    url = await asyncio.to_thread(create_store, f"http://127.0.0.1:{app.http_port}")
    client = DICOMwebClient(url=url)
    datasets = [pydicom.dcmread(data_file(name)) for name in ("CT_small.dcm", "MR_small.dcm")]

    def scenario() -> None:
        stored = client.store_instances(datasets)
        assert len(stored.ReferencedSOPSequence) == 2
        ct = datasets[0]
        studies = client.search_for_studies(search_filters={"PatientID": ct.PatientID})
        assert [s["0020000D"]["Value"][0] for s in studies] == [ct.StudyInstanceUID]
        found = client.search_for_instances(study_instance_uid=ct.StudyInstanceUID)
        assert [i["00080018"]["Value"][0] for i in found] == [ct.SOPInstanceUID]
        instance = client.retrieve_instance(
            ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
        )
        assert instance.SOPInstanceUID == ct.SOPInstanceUID
        assert instance.PixelData == ct.PixelData
        metadata = client.retrieve_study_metadata(ct.StudyInstanceUID)
        assert metadata[0]["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)
        client.delete_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
        assert client.search_for_studies(search_filters={"PatientID": ct.PatientID}) == []

    await asyncio.to_thread(scenario)


async def test_dicomweb_client_renders_transcodes_and_decodes_frames(app: App) -> None:
    url = await asyncio.to_thread(create_store, f"http://127.0.0.1:{app.http_port}")
    client = DICOMwebClient(url=url)
    source = pydicom.dcmread(data_file("SC_rgb_rle_2frame.dcm"))
    uids = (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID)

    def scenario() -> None:
        client.store_instances([source])
        rendered = client.retrieve_instance_rendered(*uids, media_types=("image/png",))
        assert Image.open(io.BytesIO(rendered)).size == (source.Columns, source.Rows)
        frame = client.retrieve_instance_frames_rendered(
            *uids, frame_numbers=[2], media_types=("image/jpeg",)
        )
        assert Image.open(io.BytesIO(frame)).format == "JPEG"
        # Its default Accept asks for the instance as stored; an explicit syntax transcodes.
        instance = client.retrieve_instance(
            *uids, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),)
        )
        assert instance.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert (instance.pixel_array == source.pixel_array).all()
        (frame_two,) = client.retrieve_instance_frames(*uids, frame_numbers=[2])
        assert frame_two == source.pixel_array[1].tobytes()

    await asyncio.to_thread(scenario)


# --- absolute URLs: the BulkDataURIs and RetrieveURLs a client follows ----------------------------
#
# dicomweb-client sends `Host: 127.0.0.1` without the port (it sets the header itself, to its
# parsed host name), so every URL below is followed by a client whose Host header lacks the port
# of a server on an ephemeral, non-default port.

PROXY_HEADERS = {"X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.7"}


def free_port() -> int:
    """A port nothing listens on right now (for a server that must know its port in advance)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def create_store(http_url: str) -> str:
    """Create dataset d and store s; the store's DICOMweb URL."""
    with httpx.Client(base_url=http_url) as http:
        http.post("/v1/projects/p/locations/l/datasets?datasetId=d").raise_for_status()
        http.post(f"/{PARENT}/dicomStores?dicomStoreId=s").raise_for_status()
    return f"{http_url}/{PARENT}/dicomStores/s/dicomWeb"


def follow_urls(client: DICOMwebClient, expected_base: str) -> None:
    """Store CT_small, then follow the RetrieveURLs and BulkDataURIs the server wrote."""
    ct = pydicom.dcmread(data_file("CT_small.dcm"))
    study = f"{expected_base}/{PARENT}/dicomStores/s/dicomWeb/studies/{ct.StudyInstanceUID}"
    instance = f"{study}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
    stored = client.store_instances([ct])
    assert stored.RetrieveURL == study
    assert stored.ReferencedSOPSequence[0].RetrieveURL == instance
    metadata = client.retrieve_instance_metadata(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    )
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri == f"{instance}/bulkdata/7FE00010"
    assert client.retrieve_bulkdata(uri) == [ct.PixelData]
    with httpx.Client() as http:  # the RetrieveURL is a resource of this server too
        response = http.get(stored.RetrieveURL + "/metadata")
    assert response.status_code == 200, response.text
    assert response.json()[0]["00080018"]["Value"] == [ct.SOPInstanceUID]


@needs_process
def test_retrieve_bulkdata_on_a_non_default_port_without_public_url(tmp_path: Path) -> None:
    with start_server(tmp_path / "data") as server:
        client = DICOMwebClient(url=create_store(server.http_url))
        follow_urls(client, server.http_url)


@needs_process
def test_retrieve_bulkdata_with_public_url_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    public = f"http://localhost:{port}"  # not the 127.0.0.1 the client names: the setting wins
    with start_server(
        tmp_path / "data", "--http-port", str(port), env={"DICOMSTORE_PUBLIC_URL": public}
    ) as server:
        client = DICOMwebClient(url=create_store(server.http_url))
        follow_urls(client, public)


@needs_process
def test_forwarded_headers_of_a_trusted_proxy_are_honoured(tmp_path: Path) -> None:
    with start_server(tmp_path / "data", "--forwarded-allow-ips", "127.0.0.1") as server:
        origin = f"http://localhost:{server.http_port}"
        headers = {**PROXY_HEADERS, "X-Forwarded-Host": f"localhost:{server.http_port}"}
        client = DICOMwebClient(url=create_store(server.http_url), headers=headers)
        follow_urls(client, origin)
        peers = {r["peer"] for r in server.records() if r.get("logger") == "dicomstore.access"}
    # The access log names the client the proxy forwarded the request for.
    assert "ipv4:203.0.113.7:0" in peers


@needs_process
@pytest.mark.parametrize(
    "trusted", [(), ("--forwarded-allow-ips", "10.0.0.0/8, 192.0.2.1")], ids=["none", "others"]
)
def test_forwarded_headers_of_an_untrusted_peer_are_ignored(
    tmp_path: Path, trusted: tuple[str, ...]
) -> None:
    with start_server(tmp_path / "data", *trusted) as server:
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "attacker.example",
            "X-Forwarded-For": "203.0.113.7",
        }
        client = DICOMwebClient(url=create_store(server.http_url), headers=headers)
        follow_urls(client, server.http_url)
        peers = {r["peer"] for r in server.records() if r.get("logger") == "dicomstore.access"}
    assert {peer.rpartition(":")[0] for peer in peers} == {"ipv4:127.0.0.1"}
