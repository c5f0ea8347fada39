"""`clients/pyproject.toml` builds a wheel of the client alone: `dicomstore_client`, the generated
stubs and the `dicomstore-client` command, which import none of the server's dependencies."""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
# The server's own modules and what only the server installs.
SERVER_ONLY = (
    "dicomstore", "dicomstore_bench", "pydicom", "starlette", "uvicorn", "aiosqlite", "numpy",
    "duckdb", "PIL", "regex", "httptools", "uvloop", "pylibjpeg", "libjpeg", "openjpeg",
    "jpeg_ls", "grpc_health", "grpc_reflection", "grpc_status", "google.cloud.storage",
    "google.cloud.bigquery",
)  # fmt: skip
# Imported when present, inside try: grpc tries grpc_tools, httpx its command line's click.
OPTIONAL = {"grpcio-tools", "click"}
CLIENT_REQUIREMENTS = {"grpcio", "protobuf", "googleapis-common-protos", "httpx", "typer", "rich"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout's clients/ and server/google/ (so that the
    build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("checkout")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(
        REPO / "clients" / "dicomstore_client",
        root / "clients" / "dicomstore_client",
        ignore=ignore,
    )
    shutil.copy(REPO / "clients" / "pyproject.toml", root / "clients" / "pyproject.toml")
    shutil.copytree(REPO / "server" / "google", root / "server" / "google", ignore=ignore)
    out = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(root / "clients")],
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    (built,) = out.glob("dicomstore_client-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def test_the_wheel_holds_the_client_and_the_stubs_and_nothing_of_the_server(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        headers = email.parser.Parser().parsestr(archive.read(metadata).decode())
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    client = REPO / "clients" / "dicomstore_client"
    assert {f"dicomstore_client/{p.name}" for p in client.glob("*.py")} <= names
    assert "dicomstore_client/py.typed" in names
    stubs = [
        "dicom/dicom_pb2.py", "dicom/dicom_pb2_grpc.py", "dicom/dicom_pb2.pyi",
        "dataset/dataset_pb2.py", "dataset/dataset_pb2_grpc.py", "operation_pb2.py",
    ]  # fmt: skip
    assert {f"google/cloud/healthcare/v1/{stub}" for stub in stubs} <= names
    assert "google/cloud/healthcare/py.typed" in names
    # google/ and google/cloud/ stay namespace packages, shared with googleapis-common-protos.
    assert not {"google/__init__.py", "google/cloud/__init__.py"} & names
    assert not [n for n in names if n.startswith(("dicomstore/", "dicomstore_bench/"))]
    requirements = {
        r.split(">")[0].split("=")[0].strip() for r in headers.get_all("Requires-Dist", [])
    }
    assert requirements >= CLIENT_REQUIREMENTS
    assert not requirements & {"pydicom", "starlette", "aiosqlite", "numpy", "duckdb", "uvicorn"}
    assert "dicomstore-client = dicomstore_client.cli:main" in entry_points


def test_the_installed_client_imports_without_any_server_module(
    installed: Path, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import importlib, importlib.abc, importlib.metadata, json, pathlib, pkgutil, sys, sysconfig

        BLOCKED = {SERVER_ONLY!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"server-only module imported: {{name}}")
                return None

        at_start = set(sys.modules)  # what site.py loaded (.pth files) is not the client's
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(installed)!r})
        import dicomstore_client
        assert dicomstore_client.__file__.startswith({str(installed)!r}), dicomstore_client.__file__
        for module in pkgutil.iter_modules(dicomstore_client.__path__):
            importlib.import_module(f"dicomstore_client.{{module.name}}")
        import google.cloud.healthcare.v1.dicom.dicom_pb2 as stubs
        assert stubs.__file__.startswith({str(installed)!r}), stubs.__file__
        from dicomstore_client.cli import main
        assert main(["--help"]) == 0
        code = main(["--grpc", "127.0.0.1:1", "--project", "p", "--location", "l",
                     "datasets", "list"])
        owners = {{
            str(dist.locate_file(file).resolve()): dist.metadata["Name"]
            for dist in importlib.metadata.distributions()
            for file in dist.files or ()
        }}
        by_top = importlib.metadata.packages_distributions()
        stdlib = sysconfig.get_paths()["stdlib"]
        found = set()
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if name in at_start or not file or file.startswith(stdlib + "/"):
                continue
            # A distribution whose RECORD misses its files is found by its top-level name.
            owner = owners.get(str(pathlib.Path(file).resolve()))
            found.update([owner] if owner else by_top.get(name.split(".")[0], ["?" + name]))
        print(json.dumps(sorted(found)))
        sys.exit(code)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DICOMSTORE_", "PYTHON"))}
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert "server-only module" not in ran.stderr, ran.stderr
    assert ran.returncode == 6, ran.stderr  # ExitCode.UNAVAILABLE: it went as far as gRPC
    assert "Usage: dicomstore-client" in ran.stdout
    assert ran.stderr.startswith("error: UNAVAILABLE: ")
    # Every distribution the client loaded is one its requirements bring.
    loaded = {canonicalize_name(name) for name in json.loads(ran.stdout.splitlines()[-1])}
    brought = _required_closure(_requirements_of(installed)) | {"dicomstore-client", *OPTIONAL}
    assert loaded <= brought, f"not required by dicomstore-client: {loaded - brought}"


def _requirements_of(installed: Path) -> set[str]:
    (dist,) = importlib.metadata.distributions(path=[str(installed)])
    return {Requirement(r).name for r in dist.requires or []}


def _required_closure(names: set[str]) -> set[str]:
    """The distributions `names` need, with what they need in turn (extras aside)."""
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def test_the_installed_command_runs(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMSTORE_")}
    env["PYTHONPATH"] = str(installed)
    ran = subprocess.run(
        [str(installed / "bin" / "dicomstore-client"), "stores", "--help"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "metrics" in ran.stdout
