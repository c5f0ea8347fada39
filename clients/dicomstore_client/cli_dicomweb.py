"""Commands over DICOMweb, after Google's `dcmweb`: `store`, `search`, `retrieve`, `delete`.

STORE is a store id (with the root `--project`, `--location`, `--dataset`) or a full
`projects/P/locations/L/datasets/D/dicomStores/S` name; a study, series or instance is named
`studies/UID[/series/UID[/instances/UID]]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dicomstore_client.cli_options import Output, options_of
from dicomstore_client.dicomweb import (
    AS_STORED,
    DicomWebClient,
    StoreResult,
)
from dicomstore_client.dicomweb_files import find_files
from dicomstore_client.dicomweb_names import DicomPath, StoreName
from dicomstore_client.dicomweb_query import COLUMNS, LEVELS, Level, Query, keyword_row
from dicomstore_client.errors import ClientError, ExitCode
from dicomstore_client.progress import progress

StoreArgument = Annotated[
    str, typer.Argument(help="store id, or projects/P/locations/L/datasets/D/dicomStores/S")
]
PathArgument = Annotated[str, typer.Argument(help="studies/UID[/series/UID[/instances/UID]]")]


def _client(ctx: typer.Context, store: str) -> DicomWebClient:
    options = options_of(ctx)
    name = StoreName.resolve(
        store, project=options.project, location=options.location, dataset=options.dataset
    )
    return DicomWebClient(name, options.connection)


def _wants_json(ctx: typer.Context) -> bool:
    return options_of(ctx).output is Output.json


def _print(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _print_json(ctx: typer.Context, value: Any) -> None:
    _print(options_of(ctx).console, json.dumps(value, indent=2))


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count} B"


def store(
    ctx: typer.Context,
    store: StoreArgument,
    paths: Annotated[
        list[str], typer.Argument(help='files, folders (recursed) or globs ("./**/*.dcm")')
    ],
    parallel: Annotated[int, typer.Option("--parallel", "-m", min=1, help="requests at once")] = 4,
    per_request: Annotated[
        int, typer.Option("--per-request", min=1, help="files in one STOW-RS request")
    ] = 1,
) -> None:
    """Store DICOM files (STOW-RS); exit code 1 when some file was refused."""
    files = find_files(paths)
    total_bytes = sum(path.stat().st_size for path in files)
    as_json = _wants_json(ctx)
    # With JSON on stdout, the progress lines go to stderr.
    console = options_of(ctx).errors if as_json else options_of(ctx).console
    with (
        _client(ctx, store) as client,
        progress("store", console, total=len(files), bytes_total=total_bytes) as shown,
    ):

        def count(result: StoreResult) -> None:
            shown.advance(done=int(result.ok), failed=int(not result.ok), nbytes=result.size)

        report = client.store_files(
            files, parallel=parallel, per_request=per_request, on_result=count
        )
    failed = sorted(report.failed, key=lambda result: str(result.path))
    if as_json:
        _print_json(
            ctx,
            {
                "stored": [
                    {
                        "file": str(r.path),
                        "sopInstanceUid": r.sop_instance_uid,
                        "url": r.retrieve_url,
                    }
                    for r in report.stored
                ],
                "failed": [{"file": str(r.path), "error": r.error} for r in failed],
            },
        )
    else:
        stored_bytes = sum(result.size for result in report.stored)
        _print(
            console,
            f"stored {len(report.stored)} of {_files(len(files))} "
            f"({_size(stored_bytes)}), {len(failed)} failed",
        )
        for result in failed:
            _print(console, f"failed: {result.path}: {result.error}")
    if failed:
        raise typer.Exit(int(ExitCode.FAILED))


def _filters(values: list[str]) -> dict[str, str]:
    filters = {}
    for value in values:
        key, equals, wanted = value.partition("=")
        if not equals or not key:
            raise ClientError(
                f"--filter {value!r}: expected KEY=VALUE (PatientID=P1, StudyDate=20240101-)",
                "INVALID_ARGUMENT",
                ExitCode.USAGE,
            )
        filters[key] = wanted
    return filters


def _table(level: Level, results: list[dict[str, Any]], include: list[str]) -> Table:
    rows = [keyword_row(result) for result in results]
    columns = list(COLUMNS[level])
    for name in include:
        extra = (
            [key for row in rows for key in row if key not in columns] if name == "all" else [name]
        )
        columns += [key for key in dict.fromkeys(extra) if key not in columns]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(row.get(column, "") for column in columns))
    return table


def search(
    ctx: typer.Context,
    store: StoreArgument,
    level: Annotated[str, typer.Argument(help="studies, series or instances")],
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="KEY=VALUE, repeatable (PatientID=P1, StudyDate=20240101-20240331, Modality=CT)",
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", "-i", help="a field to add to the results, or all"),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="results at most")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="results to skip")] = None,
    fuzzy: Annotated[bool, typer.Option("--fuzzy", help="fuzzy matching of names")] = False,
    study: Annotated[str | None, typer.Option(help="search within this study")] = None,
    series: Annotated[str | None, typer.Option(help="search within this series")] = None,
) -> None:
    """Search studies, series or instances (QIDO-RS)."""
    if level not in LEVELS:
        raise ClientError(
            f"search what? {level!r} is not one of {', '.join(LEVELS)}",
            "INVALID_ARGUMENT",
            ExitCode.USAGE,
        )
    if series is not None and study is None:
        raise ClientError("--series needs --study", "INVALID_ARGUMENT", ExitCode.USAGE)
    query = Query(
        filters=_filters(filters or []),
        include_fields=tuple(include or ()),
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
    )
    typed_level: Level = level
    with _client(ctx, store) as client:
        results = client.search(typed_level, query, study=study, series=series)
    if _wants_json(ctx):
        _print_json(ctx, results)
        return
    console: Console = options_of(ctx).console
    if not results:
        _print(console, f"no {level} found")
        return
    table = _table(typed_level, results, include or [])
    if not console.is_terminal:
        # In a pipe, rows keep their full width rather than wrapping at 80 columns.
        console = Console(file=console.file, width=100_000, no_color=True)
    console.print(table)


def retrieve(
    ctx: typer.Context,
    store: StoreArgument,
    path: PathArgument,
    out: Annotated[Path, typer.Option("--out", "-O", help="folder to write into")] = Path("."),
    transfer_syntax: Annotated[
        str, typer.Option(help="transfer syntax UID to transcode to; * keeps them as stored")
    ] = AS_STORED,
) -> None:
    """Retrieve a study, series or instance into a folder (WADO-RS), streamed: files are
    named OUT/STUDY/SERIES/INSTANCE.dcm."""
    dicom_path = DicomPath.parse(path)
    as_json = _wants_json(ctx)
    console = options_of(ctx).errors if as_json else options_of(ctx).console
    with _client(ctx, store) as client, progress("retrieve", console) as shown:
        files = client.retrieve(
            dicom_path,
            out,
            transfer_syntax=transfer_syntax,
            on_file=lambda file: shown.advance(done=1, nbytes=file.size),
        )
    if as_json:
        _print_json(ctx, [{"file": str(f.path), "bytes": f.size} for f in files])
    else:
        written = sum(file.size for file in files)
        _print(console, f"wrote {_files(len(files))} ({_size(written)}) to {out}")


def delete(
    ctx: typer.Context,
    store: StoreArgument,
    path: PathArgument,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait for a study's or series' deletion")
    ] = True,
) -> None:
    """Delete a study, series or instance."""
    dicom_path = DicomPath.parse(path)
    with _client(ctx, store) as client:
        operation = client.delete(dicom_path, wait=wait)
    if _wants_json(ctx):
        _print_json(ctx, {"deleted": str(dicom_path), "operation": operation, "done": wait})
    elif operation is not None and not wait:
        _print(options_of(ctx).console, f"deleting {dicom_path}: operation {operation}")
    else:
        _print(options_of(ctx).console, f"deleted {dicom_path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root `app`."""
    for command in (store, search, retrieve, delete):
        app.command()(command)
