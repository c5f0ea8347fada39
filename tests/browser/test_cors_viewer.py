"""A DICOMweb viewer on another origin, in headless Chromium, through `--cors-origins`.

The page (`cors_page/`) is served from its own loopback port by a small static HTTP server; it
loads the `dicomweb-client` JavaScript package from npm (installed under `build/npm/` on first
use), stores a file of its own origin with STOW-RS (a preflighted multipart POST), then
searches, reads metadata and retrieves instances and frames from a `dicomstore serve` process
on another port, and shows what it found. Without `--cors-origins` the same page shows a failure.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pydicom
import pytest
from playwright.sync_api import Page

from tests.e2e.server import ServerProcess, start_server
from tests.rest.support import MULTIPART, MULTIPART_DICOM, MULTIPART_OCTET, multipart_body, parts_of
from tests.unit.dicom.dicomfiles import data_file

DICOMWEB_CLIENT = "dicomweb-client@0.11.3"
NPM_TIMEOUT_S = 60
NPM_DIR = Path(__file__).parents[2] / "build" / "npm" / DICOMWEB_CLIENT.replace("@", "-")
PAGE = Path(__file__).parent / "cors_page"
LOCATION = "projects/p/locations/l"
STORE = f"{LOCATION}/datasets/d/dicomStores/viewer"
STORED_BY_TEST = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")
STORED_BY_PAGE = "JPEG2000.dcm"


def npm_install_or_skip() -> Path:
    """dicomweb-client's UMD build, installed with npm when missing; skip when npm cannot
    install it (fail when CI is set)."""
    built = NPM_DIR / "node_modules" / "dicomweb-client" / "build" / "dicomweb-client.js"
    if built.is_file():
        return built
    npm = shutil.which("npm")
    command = ["install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"]
    reason = "npm is not installed"
    if npm is not None:
        try:
            # Within the test's 120 s, so that an unreachable registry skips rather than times out.
            done = subprocess.run(
                [npm, *command, "--prefix", str(NPM_DIR), DICOMWEB_CLIENT],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            reason = f"npm did not install {DICOMWEB_CLIENT} within {NPM_TIMEOUT_S} s"
        else:
            if done.returncode == 0 and built.is_file():
                return built
            reason = f"npm could not install {DICOMWEB_CLIENT}: {done.stderr.strip()[-500:]}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_origin(tmp_path: Path) -> Iterator[str]:
    """The origin of a static HTTP server of the page, dicomweb-client and the file it stores."""
    site = tmp_path / "site"
    shutil.copytree(PAGE, site)
    shutil.copy(npm_install_or_skip(), site / "dicomweb-client.js")
    shutil.copy(data_file(STORED_BY_PAGE), site / STORED_BY_PAGE)
    handler = functools.partial(_QuietHandler, directory=str(site))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


def store_files(server: ServerProcess) -> str:
    """Create the store and STOW the test's files into it; its DICOMweb root."""
    with httpx.Client(base_url=server.http_url) as http:
        created = http.post(f"/v1/{LOCATION}/datasets", params={"datasetId": "d"})
        assert created.status_code == 200, created.text
        created = http.post(f"/v1/{LOCATION}/datasets/d/dicomStores?dicomStoreId=viewer")
        assert created.status_code == 200, created.text
        parts = [
            ({"Content-Type": "application/dicom"}, data_file(n).read_bytes())
            for n in STORED_BY_TEST
        ]
        stored = http.post(
            f"/v1/{STORE}/dicomWeb/studies",
            content=multipart_body(parts),
            headers={"Content-Type": MULTIPART},
        )
        assert stored.status_code == 200, stored.text
    return f"{server.http_url}/v1/{STORE}/dicomWeb"


def show(page: Page, page_origin: str, dicomweb: str) -> tuple[str, str, list[dict[str, str]]]:
    """Open the viewer on `dicomweb`; its state, status line and a dict per instance row."""
    page.goto(f"{page_origin}/index.html?{urlencode({'url': dicomweb, 'store': STORED_BY_PAGE})}")
    status = page.wait_for_selector("#status[data-state]", timeout=30_000)
    assert status is not None
    rows = page.eval_on_selector_all(
        "#instances tr",
        "rows => rows.map(row => Object.fromEntries("
        "[...row.cells].map(cell => [cell.className, cell.textContent])))",
    )
    return str(status.get_attribute("data-state")), status.text_content() or "", rows


def expected_row(http: httpx.Client, dicomweb: str, name: str) -> dict[str, str]:
    """What the page should show for test file `name`: its UIDs and patient, and the length and
    digest of the instance and the length of frame 1 as a client reading the server gets them."""
    ds = pydicom.dcmread(data_file(name))
    path = (
        f"{dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    [(_, instance)] = parts_of(
        http.get(path, headers={"Accept": MULTIPART_DICOM}), "application/dicom"
    )
    frame_bytes = ""
    if "PixelData" in ds:
        frames = http.get(f"{path}/frames/1", headers={"Accept": MULTIPART_OCTET})
        [(_, frame)] = parts_of(frames, "application/octet-stream")
        frame_bytes = str(len(frame))
    return {
        "patient": str(ds.PatientName),
        "study": ds.StudyInstanceUID,
        "series": ds.SeriesInstanceUID,
        "instance": ds.SOPInstanceUID,
        "metadata-sop": ds.SOPInstanceUID,
        "bytes": str(len(instance)),
        "sha256": hashlib.sha256(instance).hexdigest(),
        "frame-bytes": frame_bytes,
    }


def by_instance(row: dict[str, str]) -> str:
    return row["instance"]


def test_a_viewer_on_another_origin_stores_searches_and_retrieves(
    page: Page, page_origin: str, tmp_path: Path
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    with start_server(tmp_path / "data", "--cors-origins", page_origin) as server:
        dicomweb = store_files(server)
        state, status, rows = show(page, page_origin, dicomweb)
        assert (state, status) == ("done", "4 studies, 4 series, 4 instances"), (rows, console)
        assert not [line for line in console if "CORS" in line]
        with httpx.Client() as http:
            expected = [expected_row(http, dicomweb, n) for n in (*STORED_BY_TEST, STORED_BY_PAGE)]
        assert sorted(rows, key=by_instance) == sorted(expected, key=by_instance)
        # Independent of the server's answers: frame 1 of CT_small is 128 x 128 16-bit pixels.
        [ct] = [row for row in rows if row["patient"] == "CompressedSamples^CT1"]
        assert ct["frame-bytes"] == str(128 * 128 * 2)
        # The preflights were logged, like every request.
        preflights = server.wait_for_records(lambda r: r.get("method", "").startswith("OPTIONS "))
        assert preflights and all(r["code"] == "OK" for r in preflights)


def test_without_cors_the_same_page_fails(page: Page, page_origin: str, tmp_path: Path) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    with start_server(tmp_path / "data") as server:
        dicomweb = store_files(server)
        state, status, rows = show(page, page_origin, dicomweb)
        assert (state, status, rows) == ("failed", "failed: request failed (HTTP status 0)", [])
        assert any("blocked by CORS policy" in line for line in console), console
        # The preflight was refused, so the page's STOW-RS never reached the store.
        found = httpx.get(f"{dicomweb}/instances", headers={"Accept": "application/dicom+json"})
        assert len(found.json()) == len(STORED_BY_TEST)
