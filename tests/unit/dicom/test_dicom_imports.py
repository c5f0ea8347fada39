"""dicom/ is pydicom know-how only: no transport, driver, adapter or core import (DESIGN.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import dicomstore.dicom

PACKAGE = Path(dicomstore.dicom.__file__).parent
ALLOWED_ROOTS = {"pydicom", "dicomstore"} | set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_dicom_imports_only_the_stdlib_pydicom_and_itself(module: Path) -> None:
    for name in _imports(module):
        assert name.split(".")[0] in ALLOWED_ROOTS, f"{module.name} imports {name}"
        if name.startswith("dicomstore"):
            assert name.startswith("dicomstore.dicom"), f"{module.name} imports {name}"
