"""fake-gcs-server for the tests: `dicomstore_bench.fake_gcs`'s emulator, with a test skipped
saying why when it cannot run (failed under CI, `CI` set, so that nothing is skipped silently).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from dicomstore_bench import fake_gcs
from dicomstore_bench.fake_gcs import create_bucket
from tests.faults import unavailable

__all__ = ["create_bucket", "fake_gcs_server"]


@contextlib.contextmanager
def fake_gcs_server(folder: Path) -> Iterator[str]:
    """A running fake-gcs-server storing under `folder`; yields its URL, stops it on exit."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(fake_gcs.fake_gcs_server(folder))
        except fake_gcs.EmulatorUnavailable as exc:
            unavailable(str(exc))
            raise
        yield url
