"""A real Orthanc for the interoperability tests: found, started and driven over its REST API.

Orthanc is started by `dicomstore_bench.servers.orthanc_server` (the benchmark's starter: private
HTTP port on loopback, remote access refused, no DICOM listener, no authentication, storage and
index in a temporary directory), with dicomstore declared as a remote server of its DICOMweb
plugin. `OrthancApi` wraps the calls a user makes: upload a file, run the DICOMweb client's
STOW / retrieve jobs and wait for them, QIDO and GET through the plugin's `/dicom-web/servers/NAME`
routes.

`orthanc_or_skip()` gives the binary and plugin, or skips the test with the reason; when the `CI`
environment variable is set a missing Orthanc fails the test instead (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from dicomstore_bench.servers import Target, find_orthanc

#: How long an Orthanc job may run before the test gives up on it.
JOB_TIMEOUT = 60.0


def orthanc_or_skip() -> tuple[str, str]:
    """(Orthanc binary, DICOMweb plugin); skip when missing, fail when missing under CI."""
    found = find_orthanc(None, None)
    if isinstance(found, tuple):
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{found}; CI must run the Orthanc interoperability tests", pytrace=False)
    pytest.skip(found)


class OrthancError(AssertionError):
    """Orthanc answered an error; the message holds its answer."""


@dataclass(frozen=True)
class OrthancApi:
    """Orthanc's REST API at `url`, with `server` the name of a remote DICOMweb server."""

    url: str
    server: str

    @classmethod
    def of(cls, target: Target, server: str) -> OrthancApi:
        # Target.root is the DICOMweb root, `/dicom-web` under the REST API's root.
        return cls(target.root.removesuffix("/dicom-web"), server)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, f"{self.url}{path}", timeout=JOB_TIMEOUT, **kwargs)
        if response.status_code != 200:
            raise OrthancError(f"{method} {path}: {response.status_code} {response.text}")
        return response

    def upload(self, data: bytes) -> str:
        """Store a DICOM file in Orthanc; its Orthanc instance id."""
        answer = self._call("POST", "/instances", content=data).json()
        assert answer["Status"] == "Success", answer
        return str(answer["ID"])

    def studies(self) -> list[str]:
        return list(self._call("GET", "/studies").json())

    def instances(self) -> list[str]:
        return list(self._call("GET", "/instances").json())

    def file(self, instance: str) -> bytes:
        """The DICOM file Orthanc stores for `instance`."""
        return self._call("GET", f"/instances/{instance}/file").content

    def sop_instance_uid(self, instance: str) -> str:
        return str(
            self._call("GET", f"/instances/{instance}/simplified-tags").json()["SOPInstanceUID"]
        )

    def lookup(self, uid: str) -> str:
        """Orthanc's id of the study, series or instance with this DICOM UID."""
        (found,) = self._call("POST", "/tools/lookup", content=uid).json()
        return str(found["ID"])

    def delete(self, level: str, resource: str) -> None:
        """Delete a resource from Orthanc's own storage (`level` is studies, series, ...)."""
        self._call("DELETE", f"/{level}/{resource}")

    def _client(self, action: str, body: Mapping[str, Any]) -> httpx.Response:
        return self._call("POST", f"/dicom-web/servers/{self.server}/{action}", json=body)

    def run_job(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit `action` (stow, retrieve) as an asynchronous job; its final state."""
        job = self._client(action, {**body, "Synchronous": False}).json()
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            state: dict[str, Any] = self._call("GET", f"/jobs/{job['ID']}").json()
            if state["State"] in ("Success", "Failure"):
                return state
            time.sleep(0.1)
        raise OrthancError(f"job {job['ID']} ({action}) did not end within {JOB_TIMEOUT} s")

    def stow(self, resources: Sequence[str]) -> dict[str, Any]:
        """Push Orthanc resources (ids of studies, series, ...) with STOW-RS; the job's state."""
        return self.run_job("stow", {"Resources": list(resources)})

    def retrieve(self, resources: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """WADO-RS retrieve into Orthanc ({"Study", "Series", "Instance"} UIDs); the job's state."""
        return self.run_job("retrieve", {"Resources": list(resources)})

    def retrieve_now(self, resources: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """The same retrieve, run synchronously; Orthanc's answer."""
        answer: dict[str, Any] = self._client(
            "retrieve", {"Resources": list(resources), "Synchronous": True}
        ).json()
        return answer

    def qido(self, uri: str, arguments: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """QIDO-RS through Orthanc's client: its answer (one object per match, keyed by tag)."""
        answer: list[dict[str, Any]] = self._client(
            "qido", {"Uri": uri, "Arguments": dict(arguments or {})}
        ).json()
        return answer

    def get(self, uri: str) -> httpx.Response:
        """GET `uri` of the remote server through Orthanc's client (body and type relayed)."""
        return self._client("get", {"Uri": uri})

    def delete_remote(self, **uids: str) -> None:
        """Delete on the remote server (`Level` and the UIDs, as the plugin's delete takes)."""
        self._client("delete", uids)


def tag_value(item: Mapping[str, Any], tag: str) -> Any:
    """The first value of `tag` in one answer of Orthanc's QIDO client.

    The client reshapes DICOM JSON: {"Name", "Group", "Element", "vr", "Value"} where `Value`
    is the plain string of a single value.
    """
    value = item[tag]["Value"]
    return value[0] if isinstance(value, list) else value
