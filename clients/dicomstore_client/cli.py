"""`dicomstore-client`: the command line of the Python client, against dicomstore or Google.

Global options (each with an environment twin) say where to connect and which dataset the
commands work in; the commands are registered by `cli_manage` (datasets, stores, import,
export, operations) and `cli_dicomweb` (store, search, retrieve, delete). A failure is one line
on stderr and an exit code by kind (`errors.ExitCode`); `--debug` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from dicomstore_client import cli_dicomweb, cli_manage
from dicomstore_client.cli_options import Options, Output
from dicomstore_client.connection import GRPC_ENV, HTTP_ENV, TOKEN_ENV, Connection
from dicomstore_client.errors import ClientError, ExitCode
from dicomstore_client.names import DATASET_ENV, LOCATION_ENV, PROJECT_ENV

__all__ = ["Options", "Output", "app", "main"]

INTERRUPTED = 130  # Typer's exit code for Ctrl-C


app = typer.Typer(
    name="dicomstore-client",
    help="Manage DICOM stores and move DICOM data, against dicomstore or Google's Healthcare API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def options(
    ctx: typer.Context,
    grpc_endpoint: Annotated[
        str | None,
        typer.Option("--grpc", envvar=GRPC_ENV, help="gRPC endpoint, host:port [localhost:50051]"),
    ] = None,
    http_endpoint: Annotated[
        str | None,
        typer.Option("--http", envvar=HTTP_ENV, help="HTTP base URL [http://localhost:8080]"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar=TOKEN_ENV, help="bearer token (e.g. gcloud auth print-access-token)"),
    ] = None,
    project: Annotated[str | None, typer.Option(envvar=PROJECT_ENV, help="project id")] = None,
    location: Annotated[str | None, typer.Option(envvar=LOCATION_ENV, help="location id")] = None,
    dataset: Annotated[str | None, typer.Option(envvar=DATASET_ENV, help="dataset id")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json")] = Output.table,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    ctx.obj = Options(
        connection=Connection.from_env(
            {}, grpc_target=grpc_endpoint, http_url=http_endpoint, token=token
        ),
        project=project,
        location=location,
        dataset=dataset,
        output=output,
        debug=debug,
    )


cli_manage.register(app)
cli_dicomweb.register(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        # Typer shows its own usage errors (exit 2) and help, and ends with SystemExit.
        command.main(args=args, prog_name="dicomstore-client", standalone_mode=True)
    except ClientError as exc:
        if "--debug" in args:
            traceback.print_exc()
        errors = Console(stderr=True)
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            Console(stderr=True).print("cancelled", markup=False)
            return int(ExitCode.CANCELLED)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
