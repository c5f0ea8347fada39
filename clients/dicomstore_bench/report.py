"""What the benchmark commands print besides their figures: the machine they ran on, numbers
formatted for a table, and NaN made JSON's null."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path
from typing import Any

import httpx
import pydicom


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if unit.startswith("p") or value < 10:
        return f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def finite(value: Any) -> Any:
    """`value` with NaN as None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "pydicom": pydicom.__version__,
    }


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']},"
        f" Python {info['python']}, httpx {info['httpx']}"
    )
