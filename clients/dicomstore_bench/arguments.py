"""Command-line argument types the benchmark commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def workload_list(known: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argument type for a comma-separated choice among `known`, kept in `known`'s order."""

    def parse(text: str) -> tuple[str, ...]:
        named = [name.strip() for name in text.split(",") if name.strip()]
        unknown = sorted(set(named) - set(known))
        if unknown or not named:
            what = f"unknown workload {', '.join(unknown)}" if unknown else "no workload named"
            raise argparse.ArgumentTypeError(f"{what}: choose from {','.join(known)}")
        return tuple(name for name in known if name in named)

    return parse
