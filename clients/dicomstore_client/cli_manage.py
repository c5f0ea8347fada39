"""Commands over gRPC: datasets, stores (with metrics), import, export and operations.

`import` and `export` start a long-running operation and print its name; with `--wait` they
follow it with a progress bar (success / failure / pending, from the operation's counter) and
exit 0 when every item succeeded, `ExitCode.FAILED` when some failed, or by the error's kind.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dicomstore_client import progress
from dicomstore_client.cli_options import Options, Output, options_of
from dicomstore_client.cli_output import show_list, show_one, show_text, to_json
from dicomstore_client.errors import ClientError, OperationError, status_name
from dicomstore_client.management import ManagementClient
from dicomstore_client.messages import WRITE_DISPOSITIONS
from dicomstore_client.names import short_id
from dicomstore_client.operations import Counter, counter_of, metadata_of

datasets = typer.Typer(help="Create, list, describe, update and delete datasets.")
stores = typer.Typer(help="Create, list, describe, update and delete DICOM stores; metrics.")
operations = typer.Typer(help="List, describe and cancel long-running operations.")

Store = Annotated[str, typer.Argument(help="store id (in --dataset) or full name")]
Wait = Annotated[bool, typer.Option("--wait", help="follow the operation to its end")]
Timeout = Annotated[float | None, typer.Option(help="with --wait: give up after this many seconds")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root `app`."""
    app.add_typer(datasets, name="datasets")
    app.add_typer(stores, name="stores")
    app.command("import")(import_data)
    app.command("export")(export_data)
    app.add_typer(operations, name="operations")


def _client(options: Options) -> ManagementClient:
    return ManagementClient(
        options.connection,
        project=options.project,
        location=options.location,
        dataset=options.dataset,
    )


# Datasets


def _dataset_row(dataset: Any) -> dict[str, str]:
    return {"id": short_id(dataset.name), "time zone": dataset.time_zone}


@datasets.command("create")
def create_dataset(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="dataset id or full name")],
    time_zone: Annotated[str | None, typer.Option(help="IANA time zone, e.g. Europe/Paris")] = None,
) -> None:
    """Create a dataset."""
    options = options_of(ctx)
    with _client(options) as client:
        show_one(options, client.create_dataset(dataset, time_zone=time_zone))


@datasets.command("list")
def list_datasets(ctx: typer.Context) -> None:
    """List the datasets of --project and --location."""
    options = options_of(ctx)
    with _client(options) as client:
        show_list(options, client.list_datasets(), _dataset_row)


@datasets.command("describe")
def describe_dataset(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Argument(help="dataset id or name [--dataset]")] = None,
) -> None:
    """Show a dataset."""
    options = options_of(ctx)
    with _client(options) as client:
        show_one(options, client.get_dataset(dataset))


@datasets.command("update")
def update_dataset(
    ctx: typer.Context,
    time_zone: Annotated[str, typer.Option(help="the new time zone")],
    dataset: Annotated[str | None, typer.Argument(help="dataset id or name [--dataset]")] = None,
) -> None:
    """Change a dataset's time zone."""
    options = options_of(ctx)
    with _client(options) as client:
        show_one(options, client.update_dataset(dataset, time_zone=time_zone))


@datasets.command("delete")
def delete_dataset(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="dataset id or full name")],
) -> None:
    """Delete a dataset with all its stores and their instances."""
    options = options_of(ctx)
    with _client(options) as client:
        name = client.scope.dataset_name(dataset)
        client.delete_dataset(name)
    show_text(options, f"deleted {name}", {"deleted": name})


# DICOM stores


def _labels(values: list[str] | None) -> dict[str, str]:
    labels = {}
    for value in values or []:
        key, sep, label = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = label
    return labels


def _store_row(store: Any) -> dict[str, str]:
    return {
        "id": short_id(store.name),
        "labels": ", ".join(f"{k}={v}" for k, v in sorted(store.labels.items())),
        "streams to": ", ".join(s.bigquery_destination.table_uri for s in store.stream_configs),
    }


Labels = Annotated[
    list[str] | None, typer.Option("--label", help="KEY=VALUE, repeatable", show_default=False)
]
Streams = Annotated[
    list[str] | None,
    typer.Option("--stream-bigquery", help="bq://P.D.T to stream to, repeatable"),
]
Topic = Annotated[str | None, typer.Option(help="Pub/Sub topic notified of new instances")]


@stores.command("create")
def create_store(
    ctx: typer.Context,
    store: Store,
    label: Labels = None,
    pubsub_topic: Topic = None,
    stream_bigquery: Streams = None,
) -> None:
    """Create a DICOM store."""
    options = options_of(ctx)
    with _client(options) as client:
        created = client.create_store(
            store,
            labels=_labels(label),
            pubsub_topic=pubsub_topic,
            stream_tables=stream_bigquery,
        )
    show_one(options, created)


@stores.command("list")
def list_stores(
    ctx: typer.Context,
    filter: Annotated[
        str | None, typer.Option(help="Google's filter syntax, e.g. labels.modality=ct")
    ] = None,
) -> None:
    """List the DICOM stores of --dataset."""
    options = options_of(ctx)
    with _client(options) as client:
        show_list(options, client.list_stores(filter=filter), _store_row)


@stores.command("describe")
def describe_store(ctx: typer.Context, store: Store) -> None:
    """Show a DICOM store."""
    options = options_of(ctx)
    with _client(options) as client:
        show_one(options, client.get_store(store))


@stores.command("update")
def update_store(
    ctx: typer.Context,
    store: Store,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE to set, repeatable")
    ] = None,
    remove_label: Annotated[
        list[str] | None, typer.Option("--remove-label", help="KEY to remove, repeatable")
    ] = None,
    clear_labels: Annotated[bool, typer.Option(help="remove every label first")] = False,
    pubsub_topic: Topic = None,
    stream_bigquery: Streams = None,
    clear_streams: Annotated[bool, typer.Option(help="stop streaming to BigQuery")] = False,
) -> None:
    """Change a store's labels, Pub/Sub topic or BigQuery streams; the rest is kept."""
    options = options_of(ctx)
    with _client(options) as client:
        labels = None
        if label or remove_label or clear_labels:
            labels = {} if clear_labels else dict(client.get_store(store).labels)
            for key in remove_label or []:
                labels.pop(key, None)
            labels.update(_labels(label))
        streams = [] if clear_streams else stream_bigquery
        updated = client.update_store(
            store, labels=labels, pubsub_topic=pubsub_topic, stream_tables=streams
        )
    show_one(options, updated)


@stores.command("delete")
def delete_store(ctx: typer.Context, store: Store) -> None:
    """Delete a DICOM store and its instances."""
    options = options_of(ctx)
    with _client(options) as client:
        name = client.scope.store_name(store)
        client.delete_store(name)
    show_text(options, f"deleted {name}", {"deleted": name})


@stores.command("metrics")
def store_metrics(ctx: typer.Context, store: Store) -> None:
    """Count a store's studies, series and instances, and its bytes."""
    options = options_of(ctx)
    with _client(options) as client:
        show_one(options, client.store_metrics(store))


# Import and export


def import_data(
    ctx: typer.Context,
    store: Store,
    source: Annotated[str, typer.Argument(help="gs://BUCKET/PATH, with * ? or a final **")],
    wait: Wait = False,
    timeout: Timeout = None,
) -> None:
    """Import DICOM files from Cloud Storage into a store (ImportDicomData)."""
    options = options_of(ctx)
    with _client(options) as client:
        _follow(options, client, client.import_dicom(store, source), "import", wait, timeout)


def export_data(
    ctx: typer.Context,
    store: Store,
    gcs: Annotated[
        str | None, typer.Option("--gcs", help="gs://BUCKET/PREFIX the instances go to")
    ] = None,
    mime_type: Annotated[
        str | None, typer.Option(help="with --gcs: e.g. application/dicom; transfer-syntax=*")
    ] = None,
    bigquery: Annotated[
        str | None, typer.Option("--bigquery", help="bq://PROJECT.DATASET.TABLE")
    ] = None,
    write_disposition: Annotated[
        str | None, typer.Option(help=f"with --bigquery: {', '.join(WRITE_DISPOSITIONS)}")
    ] = None,
    include_source_store: Annotated[
        bool, typer.Option(help="with --bigquery: add the SourceDicomStore column")
    ] = False,
    filter_uri: Annotated[
        str | None,
        typer.Option(help="gs:// file of /studies/UID[/series/UID[/instances/UID]] lines"),
    ] = None,
    wait: Wait = False,
    timeout: Timeout = None,
) -> None:
    """Export a store to Cloud Storage or to BigQuery (ExportDicomData)."""
    if (gcs is None) == (bigquery is None):
        raise typer.BadParameter("give exactly one of --gcs and --bigquery")
    if gcs is None and mime_type is not None:
        raise typer.BadParameter("--mime-type goes with --gcs")
    if bigquery is None and (write_disposition is not None or include_source_store):
        raise typer.BadParameter(
            "--write-disposition and --include-source-store go with --bigquery"
        )
    options = options_of(ctx)
    with _client(options) as client:
        if gcs is not None:
            operation = client.export_to_gcs(store, gcs, mime_type=mime_type, filter_uri=filter_uri)
        else:
            assert bigquery is not None
            operation = client.export_to_bigquery(
                store,
                bigquery,
                write_disposition=write_disposition,
                include_source_store=include_source_store,
                filter_uri=filter_uri,
            )
        _follow(options, client, operation, "export", wait, timeout)


def _follow(
    options: Options,
    client: ManagementClient,
    operation: Any,
    label: str,
    wait: bool,
    timeout: float | None,
) -> None:
    """Print the operation's name, or with `wait` show its progress until it ends."""
    if not wait:
        show_text(options, operation.name, to_json(operation))
        return
    # With -o json, stdout carries only the JSON: the progress goes to stderr.
    console = options.errors if options.output is Output.json else options.console
    with progress.progress(label, console, total=counter_of(operation).total) as shown:

        def report(counter: Counter) -> None:
            shown.update(done=counter.success, failed=counter.failure, total=counter.total)

        try:
            done = client.wait(operation, timeout=timeout, on_progress=report)
        except OperationError as error:
            if options.output is Output.json:
                show_text(options, "", to_json(error.operation))
            raise
        except KeyboardInterrupt:
            raise ClientError(
                f"stopped waiting; the operation goes on (`operations cancel {operation.name}`"
                " stops it)",
                "CANCELLED",
            ) from None
    counter = counter_of(done)
    show_text(
        options,
        f"{label} done: {counter.success} succeeded, {counter.failure} failed ({done.name})",
        to_json(done),
    )


# Operations


def _state(operation: Any) -> str:
    if not operation.done:
        return "running"
    return status_name(operation.error.code) if operation.HasField("error") else "done"


def _operation_row(operation: Any) -> dict[str, str]:
    metadata = metadata_of(operation)
    counter = metadata.counter
    return {
        "id": short_id(operation.name),
        "method": metadata.api_method_name.rsplit(".", 1)[-1],
        "state": _state(operation),
        "success": str(counter.success),
        "failure": str(counter.failure),
        "pending": str(counter.pending),
        "created": f"{metadata.create_time.ToDatetime():%Y-%m-%d %H:%M:%S}",
    }


Operation = Annotated[str, typer.Argument(help="operation id (in --dataset) or full name")]


@operations.command("list")
def list_operations(
    ctx: typer.Context,
    filter: Annotated[str | None, typer.Option(help="Google's filter, e.g. done=true")] = None,
) -> None:
    """List the operations of --dataset."""
    options = options_of(ctx)
    with _client(options) as client:
        show_list(options, client.list_operations(filter=filter), _operation_row)


@operations.command("describe")
def describe_operation(ctx: typer.Context, operation: Operation) -> None:
    """Show an operation: its counter, its end, its response or error."""
    options = options_of(ctx)
    with _client(options) as client:
        show_one(options, client.get_operation(operation))


@operations.command("cancel")
def cancel_operation(ctx: typer.Context, operation: Operation) -> None:
    """Ask a running operation to stop (it ends CANCELLED within a second or two)."""
    options = options_of(ctx)
    with _client(options) as client:
        name = client.scope.operation_name(operation)
        client.cancel_operation(name)
    show_text(options, f"cancellation requested: {name}", {"cancelled": name})
