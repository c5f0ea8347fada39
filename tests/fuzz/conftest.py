"""Fuzzing over the real transports: a `dicomstore serve` process per DICOMweb mode, hit over
HTTP (httpx) and gRPC (a grpcio channel) with inputs Hypothesis generates.

The property every fuzz test checks (`Fuzzed.answered` / `Fuzzed.called`): no 5xx (501
UNIMPLEMENTED aside, the documented answer for a method dicomstore does not have), the process
still alive, and a refused request (4xx) left the catalog and the blobs as they were.

Hypothesis profiles, chosen with HYPOTHESIS_PROFILE: `ci` (the default; a few dozen inputs per
test, for the suite) and `long` (DICOMSTORE_FUZZ_EXAMPLES inputs per test, 2,000 unless set). The
inputs tried per target are printed at the end of the run, and written as JSON to the file
DICOMSTORE_FUZZ_REPORT names, if set:

    HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, reject, settings

from tests.e2e.server import ServerProcess, start_server
from tests.unit.dicom.dicomfiles import data_file

LOCATION = "projects/fuzz/locations/local"
DATASET = f"{LOCATION}/datasets/fuzz"
STORE = f"{DATASET}/dicomStores/fuzz"
WEB = f"/v1/{STORE}/dicomWeb"
#: Stored before fuzzing, so that searches and retrieves find something.
SEED_FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm", "rtplan.dcm")
#: 5xx a fuzzed request may get: a method of Google's surface dicomstore does not have.
DOCUMENTED_5XX = frozenset({501})
#: gRPC codes whose HTTP status is 5xx (api/status.py), UNIMPLEMENTED aside.
SERVER_FAULT_CODES = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
_TALLY = pytest.StashKey[Counter[str]]()

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    # The servers are session fixtures reached through a function-scoped one that picks the mode.
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=25, **_COMMON)
settings.register_profile(
    "long", max_examples=int(os.environ.get("DICOMSTORE_FUZZ_EXAMPLES", "2000")), **_COMMON
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TALLY] = Counter()
    # A failing input of tens of KB makes Hypothesis warn as it prints it; the suite turns
    # warnings into errors, which would hide the failure behind the warning.
    config.addinivalue_line(
        "filterwarnings", "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A long run takes as long as it takes: no per-test timeout for the fuzz tests then."""
    if settings.get_current_profile_name() == "long":
        here = Path(__file__).parent
        for item in items:
            if item.path.is_relative_to(here):
                item.add_marker(pytest.mark.timeout(0))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, Counter())
    if not tally:
        return
    terminalreporter.section("fuzz inputs tried per target")
    for target, count in sorted(tally.items()):
        terminalreporter.write_line(f"{count:>8}  {target}")
    terminalreporter.write_line(f"{sum(tally.values()):>8}  total")
    report = os.environ.get("DICOMSTORE_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps(dict(sorted(tally.items())), indent=2))


class Fuzzed:
    """A running server and the checks every fuzzed request goes through."""

    def __init__(self, server: ServerProcess, data_dir: Path, mode: str, tally: Counter[str]):
        self.server = server
        self.data_dir = data_dir
        self.mode = mode
        self.tally = tally
        self.http = httpx.Client(base_url=server.http_url, timeout=60)
        self.channel = grpc.insecure_channel(server.grpc_address)
        self._state: str | None = None

    def close(self) -> None:
        self.http.close()
        self.channel.close()

    def state(self) -> str:
        """A digest of the catalog's rows (its AUTOINCREMENT counters and the server's own
        liveness lease, renewed every few seconds, aside) and the blob files, once no operation
        runs."""
        if self._state is None:
            self._state = self._digest()
        return self._state

    def _digest(self) -> str:
        uri = f"file:{self.data_dir / 'catalog.sqlite'}?mode=ro"
        digest = hashlib.sha256()
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            for _ in range(600):
                if not db.execute("SELECT 1 FROM operations WHERE end_time IS NULL").fetchone():
                    break
                time.sleep(0.05)
            tables = [
                row[0]
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%' AND name != 'processes' ORDER BY name"
                )
            ]
            for table in tables:
                digest.update(table.encode())
                for row in db.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                    digest.update(repr(row).encode())
        # Files only: a refused instance may leave the (empty) folder its blob was written to.
        for path in sorted((self.data_dir / "blobs").rglob("*")):
            if path.is_file():
                digest.update(f"{path.relative_to(self.data_dir)} {path.stat().st_size}".encode())
        return digest.hexdigest()

    def alive(self) -> None:
        code = self.server.process.poll()
        assert code is None, f"dicomstore exited with {code}:\n{self.server.stderr()[-4000:]}"

    def request(self, target: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a fuzzed HTTP request and check the property; return the answer."""
        headers = kwargs.pop("headers", None) or {}
        # Header values as latin-1 bytes (httpx would encode text as ASCII), without the
        # surrounding white space HTTP does not allow.
        kwargs["headers"] = {k: v.strip(" \t").encode("latin-1") for k, v in headers.items()}
        before = self.state()
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.LocalProtocolError:
            reject()  # not an HTTP request: the client refuses to send it
        except httpx.RemoteProtocolError:
            # The HTTP layer may drop a connection whose request line or headers it cannot
            # parse; the process must survive it.
            self.alive()
            self.tally[target] += 1
            return httpx.Response(400)
        self.answered(target, response, before)
        return response

    def answered(self, target: str, response: httpx.Response, before: str) -> None:
        self.tally[target] += 1
        self.alive()
        status = response.status_code
        assert status < 500 or status in DOCUMENTED_5XX, (
            f"{response.request.method} {response.request.url} answered {status}:"
            f" {response.content[:2000]!r}; the server's log ends with:\n"
            + self.server.stderr()[-6000:]
        )
        if 400 <= status < 500 and not stored_something(response):
            assert self._digest() == before, (
                f"{response.request.method} {response.request.url} was refused ({status})"
                " but changed the catalog or the blobs"
            )
        else:
            self._state = None  # it may have changed things

    def called(self, target: str, call: Any, request: Any, *, writes: bool = False) -> Any:
        """Call a gRPC method with a fuzzed request and check the property; the answer or None."""
        before = self.state()
        try:
            answer = call(request, timeout=60)
        except grpc.RpcError as error:
            code = error.code()
            self.tally[target] += 1
            self.alive()
            assert code not in SERVER_FAULT_CODES, f"{target}({request!r}) -> {code}: {error}"
            assert self._digest() == before, f"{target}({request!r}) refused but changed things"
            return None
        self.tally[target] += 1
        self.alive()
        if writes:
            self._state = None
        return answer


def stored_something(response: httpx.Response) -> bool:
    """A STOW-RS answer whose ReferencedSOPSequence has an item: a partial success (409 in
    Google's mode), which does change the store."""
    body = response.content
    return (b'"00081199"' in body and b'"00081155"' in body) or (
        b'keyword="ReferencedSOPSequence"' in body and b"ReferencedSOPInstanceUID" in body
    )


def _serve(
    tmp_path_factory: pytest.TempPathFactory, config: pytest.Config, mode: str
) -> Iterator[Fuzzed]:
    data_dir = tmp_path_factory.mktemp(f"fuzz-{mode}") / "data"
    with start_server(data_dir, "--dicomweb-mode", mode) as server:
        fuzzed = Fuzzed(server, data_dir, mode, config.stash[_TALLY])
        http = fuzzed.http
        http.post(f"/v1/{LOCATION}/datasets?datasetId=fuzz").raise_for_status()
        for store in ("fuzz", "other", "third"):
            http.post(
                f"/v1/{DATASET}/dicomStores?dicomStoreId={store}",
                json={"labels": {"kind": store}},
            ).raise_for_status()
        for name in SEED_FILES:
            http.post(
                f"{WEB}/studies",
                content=data_file(name).read_bytes(),
                headers={"Content-Type": "application/dicom"},
            ).raise_for_status()
        try:
            yield fuzzed
        finally:
            fuzzed.close()
            fuzzed.alive()


@pytest.fixture(scope="session")
def google(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Fuzzed]:
    """A server in Google's DICOMweb mode, with a dataset, three stores and a few instances."""
    yield from _serve(tmp_path_factory, pytestconfig, "google")


@pytest.fixture(scope="session")
def standard(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Fuzzed]:
    """The same in PS3.18's standard mode."""
    yield from _serve(tmp_path_factory, pytestconfig, "standard")


@pytest.fixture(params=["google", "standard"])
def server(request: pytest.FixtureRequest) -> Fuzzed:
    """Each server in turn."""
    fuzzed: Fuzzed = request.getfixturevalue(request.param)
    return fuzzed
