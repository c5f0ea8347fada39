"""House rules that keep the core swappable: it imports no transport, driver or adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dicomstore

PACKAGE = Path(dicomstore.__file__).parent
CORE_MAY_IMPORT = {"dicomstore.core", "dicomstore.dicom", "regex"}
FORBIDDEN_ROOTS = {"grpc", "google", "starlette", "uvicorn", "aiosqlite", "sqlite3", "httpx"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_transport_driver_or_adapter(module: Path) -> None:
    for name in imports_of(module):
        root = name.split(".")[0]
        assert root not in FORBIDDEN_ROOTS, f"{module.name} imports {name}"
        if root == "dicomstore":
            assert any(name.startswith(allowed) for allowed in CORE_MAY_IMPORT), (
                f"{module.name} imports {name}"
            )


def test_nothing_imports_the_composition_root() -> None:
    for module in PACKAGE.rglob("*.py"):
        if module.name in ("app.py", "cli.py"):
            continue
        assert "dicomstore.app" not in imports_of(module), f"{module} imports dicomstore.app"


def test_generated_stubs_import_without_the_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from google.cloud.healthcare.v1.dicom import dicom_pb2_grpc\n"
        "from google.cloud.healthcare.v1.dataset import dataset_pb2_grpc\n"
        "assert not [m for m in sys.modules if m.startswith('dicomstore')], 'server imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
