"""dicom/ is pydicom know-how only: no transport, driver, adapter or core import
(docs/architecture.md, "The layers").

Pixel work needs the arrays and images pydicom's own pixel backends use: numpy and Pillow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.unit.test_architecture import imports_of

import dicomstore.dicom

PACKAGE = Path(dicomstore.dicom.__file__).parent
ALLOWED_ROOTS = {"pydicom", "dicomstore", "numpy", "PIL"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("module", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_dicom_imports_only_the_stdlib_pydicom_its_pixel_libraries_and_itself(module: Path) -> None:
    for name in imports_of(module):
        assert name.split(".")[0] in ALLOWED_ROOTS, f"{module.name} imports {name}"
        if name.startswith("dicomstore"):
            assert name.startswith("dicomstore.dicom"), f"{module.name} imports {name}"
