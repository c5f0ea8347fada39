"""The browser page at `/ui/` in headless Chromium, against a `dicomstore serve` process: browsing
from a location down to an instance's metadata and rendered frames, paging studies, Back, the
server's errors, unknown addresses, and a reverse proxy's path prefix.

Each test leaves a screenshot in `build/ui-screenshots/`, to look at when the page changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.e2e.server import ServerProcess, start_server
from tests.unit.dicom.dicomfiles import data_file, new_instance, part10

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"
LOCATION = "projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"
PAGED_STUDIES = 27  # more than the page's 25 per page
SLOW = 60_000  # ms: the first rendered image starts the pixel worker pool
DASH = "\N{EN DASH}"  # the page writes ranges as typeset: "Studies 1{DASH}25"


@dataclass(frozen=True)
class Site:
    http_url: str

    @property
    def page_url(self) -> str:
        return f"{self.http_url}/ui/"

    def at(self, resource: str, query: str = "") -> str:
        return f"{self.page_url}#/{resource}{query}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with start_server(tmp_path_factory.mktemp("ui") / "data") as server:
        fill(server)
        yield Site(server.http_url)


def fill(server: ServerProcess) -> None:
    """Store `images` (CT, MR, a two-frame colour image), `paged` (many studies), `doomed`."""
    with httpx.Client(base_url=f"{server.http_url}/v1/", timeout=30) as http:
        http.post(f"{LOCATION}/datasets", params={"datasetId": "d"}, json={}).raise_for_status()
        for store, bodies in [
            ("images", [data_file(n).read_bytes() for n in ("CT_small.dcm", "MR_small.dcm")]),
            ("paged", [part10(paged_study(n)) for n in range(1, PAGED_STUDIES + 1)]),
            ("doomed", [data_file("CT_small.dcm").read_bytes()]),
        ]:
            create_store(http, store)
            for body in bodies:
                stow(http, store, body)
        stow(http, "images", data_file("SC_rgb_rle_2frame.dcm").read_bytes())


def create_store(http: httpx.Client, store: str) -> None:
    response = http.post(f"{DATASET}/dicomStores", params={"dicomStoreId": store}, json={})
    response.raise_for_status()


def stow(http: httpx.Client, store: str, body: bytes) -> None:
    response = http.post(
        f"{DATASET}/dicomStores/{store}/dicomWeb/studies",
        content=body,
        headers={"Content-Type": "application/dicom"},
    )
    response.raise_for_status()


def paged_study(n: int) -> pydicom.Dataset:
    return new_instance(
        StudyInstanceUID=f"1.2.826.0.1.3.{n}",
        SeriesInstanceUID=f"1.2.826.0.1.3.{n}.1",
        SOPInstanceUID=f"1.2.826.0.1.3.{n}.1.1",
        PatientName=f"Patient^{n:02d}",
        StudyDescription=f"Paged study {n:02d}",
    )


def instance_path(name: str) -> str:
    ds = pydicom.dcmread(data_file(name), stop_before_pixels=True)
    return (
        f"{DATASET}/dicomStores/images/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=False)


@pytest.fixture
def ui(page: Page) -> Page:
    page.set_viewport_size({"width": 1280, "height": 900})
    return page


def heading(page: Page) -> Locator:
    return page.get_by_role("heading", level=1)


def open_link(page: Page, name: str) -> None:
    page.get_by_role("link", name=name, exact=True).click()


def rendered_image(page: Page, caption: str) -> dict[str, int]:
    expect(page.locator("figcaption")).to_contain_text(caption, timeout=SLOW)
    size: dict[str, int] = page.locator("figure img").evaluate(
        "img => ({width: img.naturalWidth, height: img.naturalHeight})"
    )
    return size


def test_page_browses_from_a_location_down_to_an_instance(ui: Page, site: Site):
    ui.goto(site.page_url)
    expect(heading(ui)).to_have_text("Browse DICOM stores")
    ui.get_by_label("Project").fill("p")
    ui.get_by_label("Location").fill("l")
    ui.get_by_role("button", name="Show datasets").click()
    expect(heading(ui)).to_have_text("Datasets")
    screenshot(ui, "1-datasets")

    open_link(ui, "d")
    expect(heading(ui)).to_have_text("Dataset d")
    images = ui.get_by_role("row").filter(has=ui.get_by_role("link", name="images", exact=True))
    # Columns: store, labels, studies, series, instances, size (each store's metrics).
    expect(images.get_by_role("cell").nth(2)).to_have_text("3")
    expect(images.get_by_role("cell").nth(4)).to_have_text("3")
    screenshot(ui, "2-stores")

    open_link(ui, "images")
    expect(heading(ui)).to_have_text("DICOM store images")
    metrics = ui.get_by_label("Store metrics")
    expect(metrics).to_contain_text("Studies3")
    expect(metrics).to_contain_text("Instances3")
    expect(ui.get_by_role("table", name="Studies").get_by_role("row")).to_have_count(4)
    screenshot(ui, "3-studies")

    ct = pydicom.dcmread(data_file("CT_small.dcm"), stop_before_pixels=True)
    open_link(ui, str(ct.StudyDescription))
    expect(heading(ui)).to_have_text(str(ct.StudyDescription))
    expect(ui.get_by_label("Study", exact=True)).to_contain_text("CompressedSamples, CT1")
    screenshot(ui, "4-series")

    open_link(ui, f"Series {ct.SeriesNumber}")
    expect(heading(ui)).to_have_text(f"Series {ct.SeriesNumber}")
    expect(ui.get_by_role("table", name="Instances")).to_contain_text("CT Image Storage")
    screenshot(ui, "5-instances")

    open_link(ui, f"Instance {ct.InstanceNumber}")
    expect(heading(ui)).to_have_text(f"Instance {ct.InstanceNumber}")
    name_row = ui.get_by_role("row").filter(has_text="PatientName")
    expect(name_row).to_contain_text("(0010,0010)")
    expect(name_row).to_contain_text("PN")
    expect(name_row).to_contain_text("CompressedSamples^CT1")
    size = rendered_image(ui, "Frame 1 of 1")
    assert size == {"width": ct.Columns, "height": ct.Rows}
    screenshot(ui, "6-instance")

    ui.go_back()
    expect(heading(ui)).to_have_text(f"Series {ct.SeriesNumber}")
    ui.go_back()
    expect(heading(ui)).to_have_text(str(ct.StudyDescription))


def test_link_to_an_instance_opens_it_with_its_metadata_filtered(ui: Page, site: Site):
    ui.goto(site.at(instance_path("MR_small.dcm")))
    mr = pydicom.dcmread(data_file("MR_small.dcm"), stop_before_pixels=True)
    assert rendered_image(ui, "Frame 1 of 1")["width"] == mr.Columns
    ui.get_by_label("Filter").fill("patient")
    rows = ui.locator("section.metadata tbody tr:visible")
    expect(rows.first).to_contain_text("Patient")
    for text in rows.all_inner_texts():
        assert "patient" in text.lower()
    expect(ui.get_by_role("row").filter(has_text="Modality")).to_be_hidden()


def test_multiframe_instance_shows_the_frame_chosen(ui: Page, site: Site):
    ui.goto(site.at(instance_path("SC_rgb_rle_2frame.dcm")))
    sc = pydicom.dcmread(data_file("SC_rgb_rle_2frame.dcm"), stop_before_pixels=True)
    assert rendered_image(ui, "Frame 1 of 2")["width"] == sc.Columns
    first = corner_colour(ui)

    ui.get_by_role("button", name="Next frame").click()
    assert rendered_image(ui, "Frame 2 of 2")["width"] == sc.Columns
    assert corner_colour(ui) != first
    assert "frame=2" in ui.url
    screenshot(ui, "7-multiframe")

    with ui.expect_response(re.compile(r"/frames/2/rendered$")) as answer:
        ui.get_by_label("Format").select_option("png")
    assert answer.value.headers["content-type"] == "image/png"
    rendered_image(ui, "PNG")

    ui.reload()
    expect(ui.get_by_label(re.compile(r"^Frame"))).to_have_value("2")
    assert ui.get_by_label("Format").input_value() == "png"


def corner_colour(page: Page) -> list[int]:
    colour: list[int] = page.locator("figure img").evaluate(
        """img => {
          const canvas = document.createElement("canvas");
          canvas.width = img.naturalWidth;
          canvas.height = img.naturalHeight;
          const context = canvas.getContext("2d");
          context.drawImage(img, 0, 0);
          return Array.from(context.getImageData(2, 2, 1, 1).data);
        }"""
    )
    return colour


def test_studies_come_a_page_at_a_time(ui: Page, site: Site):
    ui.goto(site.at(f"{DATASET}/dicomStores/paged"))
    studies = ui.get_by_role("table", name="Studies")
    expect(studies.get_by_role("row")).to_have_count(26)  # a header and 25 studies
    expect(ui.get_by_role("status")).to_have_text(f"Studies 1{DASH}25")
    expect(ui.get_by_text("← Previous")).to_have_attribute("aria-disabled", "true")
    first_page = studies.locator("tbody tr td:first-child").all_inner_texts()
    screenshot(ui, "8-paged")

    ui.get_by_role("link", name="Next →").click()
    expect(ui.get_by_role("status")).to_have_text(f"Studies 26{DASH}{PAGED_STUDIES}")
    expect(ui.get_by_text("Next →")).to_have_attribute("aria-disabled", "true")
    second_page = studies.locator("tbody tr td:first-child").all_inner_texts()
    assert sorted(first_page + second_page) == [
        f"Paged study {n:02d}" for n in range(1, PAGED_STUDIES + 1)
    ]

    ui.get_by_role("link", name="← Previous").click()
    expect(ui.get_by_role("status")).to_have_text(f"Studies 1{DASH}25")
    ui.go_back()
    expect(ui.get_by_role("status")).to_have_text(f"Studies 26{DASH}{PAGED_STUDIES}")


def test_datasets_come_a_page_at_a_time(ui: Page, site: Site):
    location = "projects/p/locations/many"
    with httpx.Client(base_url=f"{site.http_url}/v1/") as http:
        for n in range(1, 27):
            response = http.post(f"{location}/datasets", params={"datasetId": f"d{n:02d}"}, json={})
            response.raise_for_status()
    ui.goto(site.at(location))
    datasets = ui.get_by_role("table", name="Datasets")
    expect(datasets.get_by_role("row")).to_have_count(26)
    expect(ui.get_by_text("← First page")).to_have_attribute("aria-disabled", "true")

    ui.get_by_role("link", name="Next →").click()
    expect(datasets.get_by_role("row")).to_have_count(2)
    expect(datasets).to_contain_text("d26")
    assert "pageToken=" in ui.url
    ui.get_by_role("link", name="← First page").click()
    expect(datasets.get_by_role("row")).to_have_count(26)


def test_error_of_the_server_is_shown(ui: Page, site: Site):
    ui.goto(site.at(f"{DATASET}/dicomStores/doomed"))
    expect(heading(ui)).to_have_text("DICOM store doomed")
    httpx.delete(f"{site.http_url}/v1/{DATASET}/dicomStores/doomed").raise_for_status()

    ui.get_by_role("table", name="Studies").get_by_role("link").click()
    alert = ui.get_by_role("alert")
    expect(alert).to_contain_text("404 NOT_FOUND")
    expect(alert).to_contain_text(f"DICOM store {DATASET}/dicomStores/doomed not found")
    screenshot(ui, "9-error")


def test_unknown_address_is_shown(ui: Page, site: Site):
    ui.goto(f"{site.page_url}#/projects/p/stores/s")
    expect(ui.get_by_role("alert")).to_contain_text("Unknown address")
    ui.get_by_role("link", name="Start again").click()
    expect(heading(ui)).to_have_text("Browse DICOM stores")


def test_page_works_under_a_path_prefix(ui: Page, site: Site):
    # What a reverse proxy serving dicomstore at /dicom/ does: strip the prefix.
    asked: list[str] = []

    def proxy(route: Route) -> None:
        asked.append(route.request.url)
        route.continue_(url=route.request.url.replace("/dicom/", "/", 1))

    ui.route(f"{site.http_url}/**", proxy)
    ui.goto(f"{site.http_url}/dicom/ui/#/{DATASET}")
    expect(heading(ui)).to_have_text("Dataset d")
    expect(ui.get_by_role("link", name="images", exact=True)).to_be_visible()
    assert asked
    assert all(url.startswith(f"{site.http_url}/dicom/") for url in asked)
