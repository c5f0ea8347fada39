"""`dicomstore serve`: run the gRPC and HTTP servers of one store until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from dicomstore import __version__, config, logs
from dicomstore.core.errors import DicomStoreError


def run(main: Coroutine[Any, Any, None], event_loop: str = "asyncio") -> None:
    """Run on asyncio's own loop, or on uvloop when asked and installed (Linux, macOS)."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="dicomstore",
        description="Self-hosted Google Cloud Healthcare API v1 DICOM store.",
    )
    root.add_argument("--version", action="version", version=f"dicomstore {__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="serve gRPC and HTTP until SIGTERM",
        description="Serve gRPC and HTTP until SIGTERM. Every flag has a DICOMSTORE_* env twin.",
    )
    config.add_arguments(serve_parser)
    # Given by the supervisor of --workers to its workers (dicomstore.supervisor).
    serve_parser.add_argument("--worker-pipe", type=int, default=None, help=argparse.SUPPRESS)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = config.load(args)
    logs.configure(settings.log_level, settings.log_format, pid=settings.workers > 1)
    # A native crash (SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL) writes every thread's Python
    # stack to stderr before the process dies; SIGUSR1 writes them without stopping (a hang).
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    pipe: int | None = args.worker_pipe
    if settings.workers > 1 and pipe is None:
        from dicomstore import supervisor  # not imported by the workers

        return supervisor.main(settings)
    # Imported here: the supervisor of --workers serves nothing itself, and without the servers
    # (grpc, Starlette, uvicorn) its interpreter is ~20 MB smaller.
    from dicomstore.app import serve

    try:
        run(serve(settings, worker_pipe=pipe), settings.event_loop)
    except (OSError, DicomStoreError) as exc:
        print(f"dicomstore: cannot start: {exc}", file=sys.stderr)
        if pipe is not None:  # the supervisor gives the reason when it gives up
            os.write(pipe, f"failed {exc}\n".encode())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
