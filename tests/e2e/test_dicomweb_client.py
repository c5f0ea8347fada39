"""The `dicomweb-client` package (a real DICOMweb client) drives STOW, QIDO, WADO and delete."""

from __future__ import annotations

import asyncio

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient
from tests.unit.dicom.dicomfiles import data_file

from dicomstore.app import App

PARENT = "v1/projects/p/locations/l/datasets/d"


async def test_dicomweb_client_stores_searches_retrieves_and_deletes(app: App) -> None:
    base = f"http://127.0.0.1:{app.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        (await http.post("/v1/projects/p/locations/l/datasets?datasetId=d")).raise_for_status()
        (await http.post(f"/{PARENT}/dicomStores?dicomStoreId=s")).raise_for_status()
    client = DICOMwebClient(url=f"{base}/{PARENT}/dicomStores/s/dicomWeb")
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
