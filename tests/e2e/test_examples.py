"""The other-language examples of `clients/examples/`, run as a user runs them, on a server.

One `dicomstore serve` process per module, whose embedded Cloud Storage (`DATA_DIR/gcs`) holds
bucket `scans`: three of pydicom's test files under `study/` plus one text file. Each example runs
as a subprocess; the tests check its exit code, what it prints, and what it did through the
Python gRPC stubs.

- `clients/examples/node/dicomstore.mjs` (@grpc/grpc-js, @grpc/proto-loader): its packages are
  installed with `npm ci` from its package-lock.json into the example's folder (skipped when
  `node_modules` already matches the lock), and it reads `protos/` plus the googleapis protos
  that `tools/generate_protos.py --buf-include` writes into a temporary directory.
- `clients/examples/buf-curl/*.sh` (`buf curl` through server reflection): buf is
  `$DICOMSTORE_BUF`, else the copy `tools/install_buf.sh` installs from npm.

Without node, npm, the registry or buf the tests skip and say why; with the `CI` environment
variable set they fail instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
import pytest
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from tests.e2e.server import ServerProcess, base_environment, start_server
from tests.unit.dicom.dicomfiles import data_file

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "clients" / "examples" / "node"
BUF_CURL = ROOT / "clients" / "examples" / "buf-curl"
BUCKET = "scans"
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")  # three studies
NOT_DICOM = "notes.txt"
PROJECT = "examples"
LOCATION = f"projects/{PROJECT}/locations/local"
RUN_TIMEOUT = 60.0
INSTALL_TIMEOUT = 90.0
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class FailingImport:
    """An import source, and how each example ends on it (exit code, a fragment of stderr).

    buf curl exits with the gRPC code shifted left by 3 when an RPC fails (INVALID_ARGUMENT 3 ->
    24); the Node example exits 1 then, and both exit 3 when the operation ends with an error.
    """

    uri: str
    node_exit: int
    node_message: str
    script_exit: int
    script_message: str
    stored: int  # instances in the store afterwards


FAILING_IMPORTS = [
    pytest.param(
        FailingImport(
            f"gs://{BUCKET}/study/**",
            3,
            "import failed: INVALID_ARGUMENT: 1 of 4 objects failed",
            3,
            "import failed: 1 of 4 objects failed",
            stored=3,
        ),
        id="non-dicom-object",
    ),
    pytest.param(
        FailingImport(
            f"gs://{BUCKET}/study/a**b",
            1,
            "error: ImportDicomData: INVALID_ARGUMENT: gcs_source.uri:",
            24,
            "error: DicomService/ImportDicomData: invalid_argument: gcs_source.uri:",
            stored=0,
        ),
        id="malformed-uri",
    ),
    pytest.param(
        FailingImport(
            "gs://no-such-bucket/**.dcm",
            3,
            "import failed: NOT_FOUND: bucket gs://no-such-bucket not found",
            3,
            "import failed: bucket gs://no-such-bucket not found",
            stored=0,
        ),
        id="missing-bucket",
    ),
]


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason`; fail instead under CI, where nothing may be skipped silently."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the client examples", pytrace=False)
    pytest.skip(reason)


def run(
    command: list[str], env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an example with the parent's environment minus DICOMSTORE_* settings, plus `env`."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        env=base_environment(env),
        cwd=cwd,
    )


def first_lines(result: subprocess.CompletedProcess[str], count: int = 4) -> str:
    """The start of a failed installer's stderr (npm's first lines say why: ECONNREFUSED...)."""
    return " ".join(result.stderr.splitlines()[:count])


def described(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# --- the server and what the examples need ---------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("examples") / "data"
    study = data_dir / "gcs" / BUCKET / "study"
    study.mkdir(parents=True)
    for name in DICOM_FILES:
        shutil.copyfile(data_file(name), study / name)
    (study / NOT_DICOM).write_text("a report, not a DICOM file\n", encoding="utf-8")
    with start_server(data_dir) as process:
        yield process


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_address) as opened:
        yield opened


@pytest.fixture
def dataset_id() -> str:
    return f"ds-{uuid.uuid4().hex[:10]}"


def store_of(channel: grpc.Channel, name: str) -> dicom_pb2.DicomStore:
    stub = dicom_pb2_grpc.DicomServiceStub(channel)
    return stub.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=name), timeout=CALL_TIMEOUT)


def instances_in(channel: grpc.Channel, name: str) -> int:
    stub = dicom_pb2_grpc.DicomServiceStub(channel)
    request = dicom_pb2.GetDicomStoreMetricsRequest(name=name)
    return stub.GetDicomStoreMetrics(request, timeout=CALL_TIMEOUT).instance_count


def dataset_exists(channel: grpc.Channel, name: str) -> bool:
    stub = dataset_pb2_grpc.DatasetServiceStub(channel)
    got = stub.GetDataset(dataset_pb2.GetDatasetRequest(name=name), timeout=CALL_TIMEOUT)
    return got.name == name


def create_store(channel: grpc.Channel, dataset_id: str, store_id: str) -> str:
    """Create a dataset and a store in it through the Python stubs; the store's name."""
    datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
    request = dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id=dataset_id)
    datasets.CreateDataset(request, timeout=CALL_TIMEOUT)
    dataset = f"{LOCATION}/datasets/{dataset_id}"
    store = dicom_pb2.CreateDicomStoreRequest(parent=dataset, dicom_store_id=store_id)
    dicom_pb2_grpc.DicomServiceStub(channel).CreateDicomStore(store, timeout=CALL_TIMEOUT)
    return f"{dataset}/dicomStores/{store_id}"


# --- Node.js ---------------------------------------------------------------------------------


def installed_versions(lock: Path) -> dict[str, str]:
    """{node_modules/... path: version} of an npm lock file (the root package left out)."""
    packages = json.loads(lock.read_text(encoding="utf-8")).get("packages", {})
    return {path: entry.get("version", "") for path, entry in packages.items() if path}


def node_modules_current() -> bool:
    """Whether node_modules holds exactly what package-lock.json pins (npm's hidden lockfile)."""
    hidden = NODE_EXAMPLE / "node_modules" / ".package-lock.json"
    return hidden.exists() and installed_versions(hidden) == installed_versions(
        NODE_EXAMPLE / "package-lock.json"
    )


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the example's packages installed (`npm ci`, once, under a lock)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        skip_or_fail("node and npm are needed for the Node.js example (Debian: nodejs, npm)")
    lock_path = Path(tempfile.gettempdir()) / "dicomstore-node-example.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not node_modules_current():
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"],
                cwd=NODE_EXAMPLE,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
            if result.returncode != 0:
                skip_or_fail(f"npm ci could not install the Node.js example: {first_lines(result)}")
    return node


@pytest.fixture(scope="module")
def proto_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """DICOMSTORE_PROTO_PATH for the Node example: our protos and the googleapis ones."""
    includes = tmp_path_factory.mktemp("proto-include") / "googleapis"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "generate_protos.py"),
            "--buf-include",
            str(includes),
        ],
        check=True,
        capture_output=True,
        timeout=RUN_TIMEOUT,
    )
    return os.pathsep.join([str(ROOT / "protos"), str(includes)])


def run_node(
    node: str, proto_path: str, server: ServerProcess, *args: str
) -> subprocess.CompletedProcess[str]:
    """The Node example with the endpoint and include path from the environment."""
    env = {
        "DICOMSTORE_GRPC_ENDPOINT": server.grpc_address,
        "DICOMSTORE_PROTO_PATH": proto_path,
        "DICOMSTORE_PROJECT": PROJECT,
    }
    return run([node, str(NODE_EXAMPLE / "dicomstore.mjs"), *args], env, cwd=NODE_EXAMPLE)


def test_node_example_creates_lists_and_imports(
    node: str, proto_path: str, server: ServerProcess, channel: grpc.Channel, dataset_id: str
) -> None:
    result = run_node(
        node,
        proto_path,
        server,
        "--dataset",
        dataset_id,
        "--store",
        "ct",
        f"gs://{BUCKET}/study/**.dcm",
    )
    assert result.returncode == 0, described(result)
    dataset = f"{LOCATION}/datasets/{dataset_id}"
    store = f"{dataset}/dicomStores/ct"
    lines = result.stdout.splitlines()
    assert lines[0] == f"endpoint {server.grpc_address}"
    assert f"dataset {dataset}: created" in lines
    assert f"dicom store {store}: created" in lines
    assert f"dicom stores in {dataset}: ct" in lines
    assert "metrics before import: 0 studies, 0 series, 0 instances, 0 bytes" in lines
    assert any(
        line.startswith(f"import of gs://{BUCKET}/study/**.dcm: operation {dataset}/operations/")
        for line in lines
    )
    assert "  done: success=3 failure=0 pending=0" in lines
    assert "import done: success=3 failure=0 pending=0" in lines
    assert any(
        line.startswith("metrics after import: 3 studies, 3 series, 3 instances, ")
        for line in lines
    )
    assert result.stderr == ""
    assert dataset_exists(channel, dataset)
    assert dict(store_of(channel, store).labels) == {"example": "node"}
    assert instances_in(channel, store) == 3


def test_node_example_run_again_reuses_dataset_and_store(
    node: str, proto_path: str, server: ServerProcess, channel: grpc.Channel, dataset_id: str
) -> None:
    args = ("--dataset", dataset_id, "--store", "again", f"gs://{BUCKET}/study/*.dcm")
    first = run_node(node, proto_path, server, *args)
    assert first.returncode == 0, described(first)
    again = run_node(node, proto_path, server, *args)
    assert again.returncode == 0, described(again)
    dataset = f"{LOCATION}/datasets/{dataset_id}"
    assert f"dataset {dataset}: already exists" in again.stdout.splitlines()
    assert f"dicom store {dataset}/dicomStores/again: already exists" in again.stdout.splitlines()
    # Instances already stored with the same bytes count as successes.
    assert "import done: success=3 failure=0 pending=0" in again.stdout.splitlines()
    assert instances_in(channel, f"{dataset}/dicomStores/again") == 3


@pytest.mark.parametrize("case", FAILING_IMPORTS)
def test_node_example_failed_import_exits_non_zero(
    node: str,
    proto_path: str,
    server: ServerProcess,
    channel: grpc.Channel,
    dataset_id: str,
    case: FailingImport,
) -> None:
    result = run_node(node, proto_path, server, "--dataset", dataset_id, case.uri)
    assert result.returncode == case.node_exit, described(result)
    assert case.node_message in result.stderr
    assert "    at " not in result.stderr  # clear lines, no stack trace
    assert instances_in(channel, f"{LOCATION}/datasets/{dataset_id}/dicomStores/ct") == case.stored
    if case.stored:
        # The object that failed is named with its reason; the DICOM files are stored all the same.
        assert "  done: success=3 failure=1 pending=0" in result.stdout.splitlines()
        assert f"  gs://{BUCKET}/study/{NOT_DICOM}: INVALID_ARGUMENT: not a DICOM" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--proto-path", "/nonexistent"],
            "google/cloud/healthcare/v1/dicom/dicom.proto is in none of /nonexistent",
            id="protos-not-found",
        ),
        pytest.param(["--no-such-option"], "Unknown option '--no-such-option'", id="bad-option"),
        pytest.param(
            ["--timeout", "soon"], "--timeout must be a positive number", id="bad-timeout"
        ),
        pytest.param(["gs://a/b.dcm"], "expected one gs://BUCKET/PATH argument", id="two-sources"),
    ],
)
def test_node_example_bad_usage_exits_2(
    node: str, proto_path: str, server: ServerProcess, args: list[str], message: str
) -> None:
    result = run_node(node, proto_path, server, *args, f"gs://{BUCKET}/study/**.dcm")
    assert result.returncode == 2, described(result)
    assert result.stderr.startswith(f"error: {message}")
    assert result.stdout == ""


def test_node_example_unreachable_server_exits_1(node: str, proto_path: str) -> None:
    env = {"DICOMSTORE_GRPC_ENDPOINT": "127.0.0.1:1", "DICOMSTORE_PROTO_PATH": proto_path}
    result = run([node, str(NODE_EXAMPLE / "dicomstore.mjs"), "gs://b/x.dcm"], env)
    assert result.returncode == 1, described(result)
    assert result.stderr.startswith("error: CreateDataset: UNAVAILABLE: ")


def test_node_example_endpoint_argument_wins_over_the_environment(
    node: str, proto_path: str, server: ServerProcess, channel: grpc.Channel, dataset_id: str
) -> None:
    env = {"DICOMSTORE_GRPC_ENDPOINT": "127.0.0.1:1", "DICOMSTORE_PROTO_PATH": proto_path}
    command = [
        node,
        str(NODE_EXAMPLE / "dicomstore.mjs"),
        "--endpoint",
        server.grpc_address,
        "--project",
        PROJECT,
        "--dataset",
        dataset_id,
        f"gs://{BUCKET}/study/CT_small.dcm",
    ]
    result = run(command, env)
    assert result.returncode == 0, described(result)
    assert "import done: success=1 failure=0 pending=0" in result.stdout.splitlines()
    assert instances_in(channel, f"{LOCATION}/datasets/{dataset_id}/dicomStores/ct") == 1


# --- buf curl --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def buf() -> str:
    """$DICOMSTORE_BUF, else the buf that tools/install_buf.sh installs from npm."""
    explicit = os.environ.get("DICOMSTORE_BUF")
    if explicit:
        return explicit
    if shutil.which("npm") is None:
        skip_or_fail(
            "buf curl examples: set DICOMSTORE_BUF, or install npm for tools/install_buf.sh"
        )
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "install_buf.sh")],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        skip_or_fail(f"tools/install_buf.sh could not install buf: {first_lines(result)}")
    return result.stdout.strip()


def run_script(
    buf: str, server: ServerProcess, script: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    variables = {
        "DICOMSTORE_GRPC_ENDPOINT": server.grpc_address,
        "DICOMSTORE_BUF": buf,
        "DICOMSTORE_PROJECT": PROJECT,
        **env,
    }
    return run(["bash", str(BUF_CURL / script), *args], variables)


def test_list_services_shows_the_api_through_reflection(buf: str, server: ServerProcess) -> None:
    result = run_script(buf, server, "list-services.sh")
    assert result.returncode == 0, described(result)
    lines = result.stdout.splitlines()
    services = lines[lines.index("services:") + 1 : lines.index("methods:")]
    assert [line.strip() for line in services] == [
        "google.cloud.healthcare.v1.dataset.DatasetService",
        "google.cloud.healthcare.v1.dicom.DicomService",
        "google.longrunning.Operations",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    methods = {line.strip() for line in lines[lines.index("methods:") + 1 :]}
    assert {
        "google.cloud.healthcare.v1.dicom.DicomService/ImportDicomData",
        "google.cloud.healthcare.v1.dataset.DatasetService/CreateDataset",
        "google.longrunning.Operations/GetOperation",
    } <= methods


def test_create_store_creates_dataset_and_store(
    buf: str, server: ServerProcess, channel: grpc.Channel, dataset_id: str
) -> None:
    result = run_script(buf, server, "create-store.sh", dataset_id, "ct")
    assert result.returncode == 0, described(result)
    dataset = f"{LOCATION}/datasets/{dataset_id}"
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"dataset {dataset}: created (operation {dataset}/operations/")
    assert lines[1:] == [
        f"dicom store {dataset}/dicomStores/ct: created",
        f"dicom stores in {dataset}:",
        f"  {dataset}/dicomStores/ct",
    ]
    assert dataset_exists(channel, dataset)
    assert dict(store_of(channel, f"{dataset}/dicomStores/ct").labels) == {"example": "buf-curl"}


def test_create_store_reuses_the_dataset_but_not_the_store(
    buf: str, server: ServerProcess, dataset_id: str
) -> None:
    assert run_script(buf, server, "create-store.sh", dataset_id, "ct").returncode == 0
    second = run_script(buf, server, "create-store.sh", dataset_id, "mr")
    assert second.returncode == 0, described(second)
    dataset = f"{LOCATION}/datasets/{dataset_id}"
    assert second.stdout.splitlines()[0] == f"dataset {dataset}: already exists"
    assert second.stdout.splitlines()[-2:] == [
        f"  {dataset}/dicomStores/ct",
        f"  {dataset}/dicomStores/mr",
    ]
    again = run_script(buf, server, "create-store.sh", dataset_id, "mr")
    assert again.returncode == 6 << 3, described(again)  # ALREADY_EXISTS
    assert again.stderr == (
        "error: DicomService/CreateDicomStore: already_exists: "
        f"DICOM store {dataset}/dicomStores/mr already exists\n"
    )


def test_import_counts_the_files_and_metrics_show_them(
    buf: str, server: ServerProcess, channel: grpc.Channel, dataset_id: str
) -> None:
    store = create_store(channel, dataset_id, "ct")
    before = run_script(buf, server, "metrics.sh", dataset_id, "ct")
    assert before.returncode == 0, described(before)
    assert before.stdout.splitlines()[-1] == f"{store}: 0 studies, 0 series, 0 instances, 0 bytes"

    result = run_script(buf, server, "import.sh", dataset_id, "ct", f"gs://{BUCKET}/study/**.dcm")
    assert result.returncode == 0, described(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"import of gs://{BUCKET}/study/**.dcm: operation ")
    assert "  done: success=3 failure=0 pending=0" in lines
    assert lines[-1] == "import done: success=3 failure=0 pending=0"
    assert instances_in(channel, store) == 3

    after = run_script(buf, server, "metrics.sh", dataset_id, "ct")
    assert after.returncode == 0, described(after)
    assert after.stdout.splitlines()[-1].startswith(f"{store}: 3 studies, 3 series, 3 instances, ")
    metrics = json.loads(after.stdout[: after.stdout.rindex("}") + 1])
    assert metrics["instanceCount"] == "3"


@pytest.mark.parametrize("case", FAILING_IMPORTS)
def test_failed_import_script_exits_non_zero(
    buf: str, server: ServerProcess, channel: grpc.Channel, dataset_id: str, case: FailingImport
) -> None:
    store = create_store(channel, dataset_id, "ct")
    result = run_script(buf, server, "import.sh", dataset_id, "ct", case.uri)
    assert result.returncode == case.script_exit, described(result)
    assert case.script_message in result.stderr
    assert instances_in(channel, store) == case.stored
    if case.stored:
        assert "  done: success=3 failure=1 pending=0" in result.stdout.splitlines()
        assert f"  gs://{BUCKET}/study/{NOT_DICOM}: not a DICOM" in result.stderr


def test_scripts_without_buf_exit_2_saying_so(server: ServerProcess) -> None:
    result = run_script("/nonexistent/buf", server, "list-services.sh")
    assert result.returncode == 2, described(result)
    assert result.stderr.startswith("error: buf not found ('/nonexistent/buf')")


@pytest.mark.parametrize("script", ["create-store.sh", "metrics.sh", "import.sh"])
def test_scripts_with_missing_arguments_exit_2(
    buf: str, server: ServerProcess, script: str
) -> None:
    result = run_script(buf, server, script)
    assert result.returncode == 2, described(result)
    assert result.stderr.startswith("usage: ")
