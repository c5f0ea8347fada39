"""The long-running operation runner (dicomstore.core.operations) over a real SQLite catalog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dicomstore.catalog.sqlite import SqliteCatalog
from dicomstore.core.errors import (
    Aborted,
    Code,
    DicomStoreError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from dicomstore.core.model import Dataset, Job, Operation, OperationResponse, ProgressCounter
from dicomstore.core.names import DatasetName, LocationName
from dicomstore.core.operations import JobContext, Operations
from dicomstore.core.paging import PageTokens

KEY = b"k" * 32
DATASET = DatasetName(LocationName("test-project", "us-central1"), "dataset")
OTHER_DATASET = DatasetName(LocationName("test-project", "us-central1"), "other")
METHOD = "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData"
RESPONSE = OperationResponse(
    "google.cloud.healthcare.v1.dicom.ImportDicomDataResponse", {"imported": 3}
)
WAIT = 10  # seconds; a job that needs longer is stuck


async def open_catalog(path: Path) -> SqliteCatalog:
    catalog = SqliteCatalog(path)
    await catalog.open()
    return catalog


@pytest.fixture
async def catalog(catalog: SqliteCatalog) -> SqliteCatalog:
    await catalog.create_dataset(Dataset(DATASET))
    await catalog.create_dataset(Dataset(OTHER_DATASET))
    return catalog


def runner(catalog: SqliteCatalog, concurrency: int = 2) -> Operations:
    return Operations(catalog, PageTokens(KEY), concurrency=concurrency)


@pytest.fixture
async def operations(catalog: SqliteCatalog) -> AsyncIterator[Operations]:
    ops = runner(catalog)
    try:
        yield ops
    finally:
        await ops.close()


async def succeed(context: JobContext) -> OperationResponse:
    return RESPONSE


class Gate:
    """A job that announces it started, then waits to be let through."""

    def __init__(self, response: OperationResponse = RESPONSE) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.runs = 0
        self.response = response

    async def __call__(self, context: JobContext) -> OperationResponse:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        return self.response

    async def wait_started(self) -> None:
        await asyncio.wait_for(self.started.wait(), WAIT)


async def outcome(ops: Operations, operation: Operation) -> Operation:
    await asyncio.wait_for(ops.idle(), WAIT)
    return await ops.get(str(operation.name))


async def test_start_returns_unfinished_operation_readable_at_once(operations: Operations) -> None:
    gate = Gate()
    operations.register("gated", gate)
    op = await operations.start(DATASET, METHOD, Job("gated", {"uri": "gs://b/o"}))
    assert not op.done
    assert op.name.dataset == DATASET
    stored = await operations.get(str(op.name))
    assert stored.api_method_name == METHOD
    assert stored.job == Job("gated", {"uri": "gs://b/o"})
    assert not stored.done
    gate.release.set()


async def test_job_response_lands_in_operation_when_job_succeeds(operations: Operations) -> None:
    operations.register("ok", succeed)
    op = await operations.start(DATASET, METHOD, Job("ok"))
    done = await outcome(operations, op)
    assert done.done
    assert done.end_time is not None
    assert done.end_time >= done.create_time
    assert done.response == RESPONSE
    assert done.error is None


async def test_job_sees_its_arguments(operations: Operations) -> None:
    async def echo(context: JobContext) -> OperationResponse:
        return OperationResponse("echo", dict(context.args))

    operations.register("echo", echo)
    op = await operations.start(DATASET, METHOD, Job("echo", {"uri": "gs://b/o", "n": 2}))
    assert (await outcome(operations, op)).response == OperationResponse(
        "echo", {"uri": "gs://b/o", "n": 2}
    )


@pytest.mark.parametrize(
    "error",
    [
        NotFound("store projects/p/locations/l/datasets/d/dicomStores/s not found"),
        InvalidArgument("gcs_source.uri: bucket does not exist"),
        FailedPrecondition("destination table has a different schema"),
        Unimplemented("importing from Cloud Storage is not implemented yet"),
    ],
)
async def test_operation_ends_with_error_code_and_message_when_job_raises_domain_error(
    operations: Operations, error: DicomStoreError
) -> None:
    async def fail(context: JobContext) -> OperationResponse:
        raise error

    operations.register("fail", fail)
    done = await outcome(operations, await operations.start(DATASET, METHOD, Job("fail")))
    assert done.done
    assert done.error is not None
    assert done.error.code == error.code
    assert done.error.message == error.message
    assert done.response is None


async def test_operation_ends_internal_with_fixed_message_when_job_raises_plain_exception(
    operations: Operations, caplog: pytest.LogCaptureFixture
) -> None:
    async def crash(context: JobContext) -> OperationResponse:
        raise RuntimeError("secret detail /var/lib/dicomstore/catalog.sqlite3")

    operations.register("crash", crash)
    done = await outcome(operations, await operations.start(DATASET, METHOD, Job("crash")))
    assert done.done
    assert done.error is not None
    assert done.error.code == Code.INTERNAL
    assert done.error.message == "internal error"
    assert done.response is None
    assert "secret detail" in caplog.text  # the cause goes to the log, not to the client


@pytest.mark.google_behaviour("operation-cancel")
async def test_operation_cancelled_without_running_job_when_cancel_requested_before_it_runs(
    catalog: SqliteCatalog,
) -> None:
    ops = runner(catalog, concurrency=1)
    try:
        blocker, waiting = Gate(), Gate()
        ops.register("blocker", blocker)
        ops.register("waiting", waiting)
        first = await ops.start(DATASET, METHOD, Job("blocker"))
        await blocker.wait_started()
        second = await ops.start(DATASET, METHOD, Job("waiting"))
        await ops.cancel(str(second.name))
        waiting.release.set()
        blocker.release.set()
        cancelled = await outcome(ops, second)
        assert (await ops.get(str(first.name))).response == RESPONSE
    finally:
        await ops.close()
    assert waiting.runs == 0
    assert cancelled.done
    assert cancelled.cancel_requested
    assert cancelled.error is not None
    assert cancelled.error.code == Code.CANCELLED
    assert int(Code.CANCELLED) == 1
    assert cancelled.response is None


@pytest.mark.google_behaviour("operation-cancel")
async def test_operation_cancelled_when_job_checks_after_cancel(operations: Operations) -> None:
    reached = asyncio.Event()
    proceed = asyncio.Event()

    async def careful(context: JobContext) -> OperationResponse:
        reached.set()
        await proceed.wait()
        await context.check_cancelled()
        return RESPONSE

    operations.register("careful", careful)
    op = await operations.start(DATASET, METHOD, Job("careful"))
    await asyncio.wait_for(reached.wait(), WAIT)
    await operations.cancel(str(op.name))
    assert (await operations.get(str(op.name))).cancel_requested
    proceed.set()
    done = await outcome(operations, op)
    assert done.error is not None
    assert done.error.code == Code.CANCELLED
    assert done.response is None
    assert done.cancel_requested


async def test_operation_succeeds_when_job_ignores_cancel(operations: Operations) -> None:
    gate = Gate()
    operations.register("gated", gate)
    op = await operations.start(DATASET, METHOD, Job("gated"))
    await gate.wait_started()
    await operations.cancel(str(op.name))
    gate.release.set()
    done = await outcome(operations, op)
    assert done.response == RESPONSE
    assert done.error is None
    assert done.cancel_requested  # still reported: the client asked


@pytest.mark.google_behaviour("operation-metadata")
async def test_progress_counter_persisted_while_running_and_after_done(
    operations: Operations,
) -> None:
    halfway = ProgressCounter(success=3, failure=1, pending=6)
    final = ProgressCounter(success=8, failure=2, secondary_success=1, secondary_failure=1)
    reported = asyncio.Event()
    proceed = asyncio.Event()

    async def counting(context: JobContext) -> OperationResponse:
        await context.progress(halfway)
        reported.set()
        await proceed.wait()
        await context.progress(final)
        return RESPONSE

    operations.register("counting", counting)
    op = await operations.start(DATASET, METHOD, Job("counting"))
    await asyncio.wait_for(reported.wait(), WAIT)
    running = await operations.get(str(op.name))
    assert running.counter == halfway
    assert not running.done
    proceed.set()
    done = await outcome(operations, op)
    assert done.counter == final
    assert done.response == RESPONSE


async def test_progress_counter_kept_when_job_fails(operations: Operations) -> None:
    async def partial(context: JobContext) -> OperationResponse:
        await context.progress(ProgressCounter(success=2, failure=5))
        raise FailedPrecondition("source bucket vanished")

    operations.register("partial", partial)
    done = await outcome(operations, await operations.start(DATASET, METHOD, Job("partial")))
    assert done.counter == ProgressCounter(success=2, failure=5)
    assert done.error is not None
    assert done.error.code == Code.FAILED_PRECONDITION


async def test_get_not_found_when_operation_missing(operations: Operations) -> None:
    with pytest.raises(NotFound):
        await operations.get(f"{DATASET}/operations/123")


async def test_get_invalid_argument_when_name_malformed(operations: Operations) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await operations.get(f"{DATASET}/stores/123")
    assert caught.value.field == "name"


async def test_record_persists_done_operation_with_response(operations: Operations) -> None:
    op = await operations.record(DATASET, "CreateDataset", RESPONSE)
    stored = await operations.get(str(op.name))
    assert stored.done
    assert stored.response == RESPONSE
    assert stored.api_method_name == "CreateDataset"


# Listing


async def seed(ops: Operations) -> tuple[list[Operation], list[Operation], Gate]:
    """Three finished and two running operations under DATASET, one under OTHER_DATASET."""
    gate = Gate()
    ops.register("gated", gate)
    done = [await ops.record(DATASET, METHOD, RESPONSE) for _ in range(3)]
    running = [await ops.start(DATASET, METHOD, Job("gated")) for _ in range(2)]
    await ops.record(OTHER_DATASET, METHOD, RESPONSE)
    return done, running, gate


def names(ops: list[Operation]) -> list[str]:
    return [str(o.name) for o in ops]


@pytest.mark.google_behaviour("operations-list-filter")
@pytest.mark.parametrize(
    ("filter", "wanted"),
    [
        ("", "all"),
        ("   ", "all"),
        ("done=true", "done"),
        ("done = TRUE", "done"),
        (" done=True ", "done"),
        ("done=false", "running"),
        ("DONE=false", "running"),
    ],
)
async def test_list_filters_by_done(operations: Operations, filter: str, wanted: str) -> None:
    done, running, gate = await seed(operations)
    expected = {"all": done + running, "done": done, "running": running}[wanted]
    page = await operations.list(str(DATASET), filter, 0, "")
    assert names(page.items) == sorted(names(expected))
    assert page.next_page_token == ""
    gate.release.set()


async def test_list_accepts_collection_name(operations: Operations) -> None:
    done, running, gate = await seed(operations)
    page = await operations.list(f"{DATASET}/operations", "", 0, "")
    assert names(page.items) == sorted(names(done + running))
    gate.release.set()


@pytest.mark.google_behaviour("operations-list-filter")
@pytest.mark.parametrize(
    "filter",
    ["done", "done=maybe", "done=1", "name=x", "done=true AND done=false", "metadata.done=true"],
)
async def test_list_invalid_argument_when_filter_unsupported(
    operations: Operations, filter: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await operations.list(str(DATASET), filter, 0, "")
    assert caught.value.field == "filter"


async def test_list_pages_cover_every_operation_once(operations: Operations) -> None:
    created = [await operations.record(DATASET, METHOD, RESPONSE) for _ in range(7)]
    seen: list[Operation] = []
    token = ""
    pages = 0
    while True:
        page = await operations.list(str(DATASET), "done=true", 3, token)
        pages += 1
        assert len(page.items) <= 3
        seen += page.items
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert names(seen) == sorted(names(created))


@pytest.mark.parametrize(
    ("first_filter", "second_filter"),
    [("", "done=true"), ("done=true", "done=false"), ("done=false", "")],
)
async def test_list_invalid_argument_when_token_from_another_filter(
    operations: Operations, first_filter: str, second_filter: str
) -> None:
    for _ in range(3):
        await operations.record(DATASET, METHOD, RESPONSE)
    gate = Gate()
    operations.register("gated", gate)
    for _ in range(3):
        await operations.start(DATASET, METHOD, Job("gated"))
    token = (await operations.list(str(DATASET), first_filter, 1, "")).next_page_token
    assert token
    with pytest.raises(InvalidArgument) as caught:
        await operations.list(str(DATASET), second_filter, 1, token)
    assert caught.value.field == "page_token"
    gate.release.set()


async def test_list_invalid_argument_when_token_from_another_dataset(
    operations: Operations,
) -> None:
    for dataset in (DATASET, OTHER_DATASET):
        for _ in range(2):
            await operations.record(dataset, METHOD, RESPONSE)
    token = (await operations.list(str(DATASET), "", 1, "")).next_page_token
    assert token
    with pytest.raises(InvalidArgument) as caught:
        await operations.list(str(OTHER_DATASET), "", 1, token)
    assert caught.value.field == "page_token"


async def test_list_invalid_argument_when_page_size_negative(operations: Operations) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await operations.list(str(DATASET), "", -1, "")
    assert caught.value.field == "page_size"


# Cancel


@pytest.mark.google_behaviour("operation-cancel")
async def test_cancel_changes_nothing_when_operation_done(operations: Operations) -> None:
    operations.register("ok", succeed)
    op = await operations.start(DATASET, METHOD, Job("ok"))
    before = await outcome(operations, op)
    await operations.cancel(str(op.name))
    assert await operations.get(str(op.name)) == before
    assert not before.cancel_requested


async def test_cancel_not_found_when_operation_missing(operations: Operations) -> None:
    with pytest.raises(NotFound):
        await operations.cancel(f"{DATASET}/operations/123")


# Restart


async def interrupted(path: Path, kind: str, *, cancel: bool = False) -> Operation:
    """Start a `kind` job, shut down while it runs; return the operation as left behind."""
    catalog = await open_catalog(path)
    await catalog.create_dataset(Dataset(DATASET))
    ops = runner(catalog)
    gate = Gate()
    ops.register(kind, gate)
    op = await ops.start(DATASET, METHOD, Job(kind, {"uri": "gs://b/o"}))
    await gate.wait_started()
    if cancel:
        await ops.cancel(str(op.name))
    await ops.close()
    left = await catalog.get_operation(op.name)
    await catalog.close()
    assert not left.done
    return left


async def test_resume_reruns_unfinished_job_when_kind_registered(tmp_path: Path) -> None:
    left = await interrupted(tmp_path / "catalog.sqlite3", "import")
    catalog = await open_catalog(tmp_path / "catalog.sqlite3")
    ops = runner(catalog)
    try:
        seen: list[dict[str, object]] = []

        async def again(context: JobContext) -> OperationResponse:
            seen.append(dict(context.args))
            return RESPONSE

        ops.register("import", again)
        await ops.resume()
        done = await outcome(ops, left)
    finally:
        await ops.close()
        await catalog.close()
    assert seen == [{"uri": "gs://b/o"}]
    assert done.response == RESPONSE
    assert done.error is None
    assert done.create_time == left.create_time


async def test_resume_fails_unfinished_job_with_aborted_when_kind_unknown(tmp_path: Path) -> None:
    left = await interrupted(tmp_path / "catalog.sqlite3", "retired")
    catalog = await open_catalog(tmp_path / "catalog.sqlite3")
    ops = runner(catalog)
    try:
        ops.register("import", succeed)
        await ops.resume()
        done = await outcome(ops, left)
        assert list(await catalog.unfinished_operations()) == []
    finally:
        await ops.close()
        await catalog.close()
    assert done.done
    assert done.error is not None
    assert done.error.code == Code.ABORTED == Aborted.code
    assert "restart" in done.error.message
    assert done.response is None


async def test_resume_ends_cancelled_when_cancel_requested_before_restart(tmp_path: Path) -> None:
    left = await interrupted(tmp_path / "catalog.sqlite3", "import", cancel=True)
    assert left.cancel_requested
    catalog = await open_catalog(tmp_path / "catalog.sqlite3")
    ops = runner(catalog)
    try:
        gate = Gate()
        ops.register("import", gate)
        await ops.resume()
        done = await outcome(ops, left)
    finally:
        await ops.close()
        await catalog.close()
    assert gate.runs == 0
    assert done.error is not None
    assert done.error.code == Code.CANCELLED


async def test_resume_leaves_finished_operations_alone(tmp_path: Path) -> None:
    catalog = await open_catalog(tmp_path / "catalog.sqlite3")
    await catalog.create_dataset(Dataset(DATASET))
    ops = runner(catalog)
    try:
        recorded = await ops.record(DATASET, METHOD, RESPONSE)
        await ops.resume()
        await asyncio.wait_for(ops.idle(), WAIT)
        assert await ops.get(str(recorded.name)) == recorded
    finally:
        await ops.close()
        await catalog.close()


async def test_prepare_runs_after_the_operation_is_recorded_and_before_its_job(
    operations: Operations,
) -> None:
    seen: list[bool] = []

    async def prepare() -> None:
        listed = await operations.list(f"{DATASET}/operations", "", 10, "")
        seen.append(len(listed.items) == 1 and not listed.items[0].done)

    gate = Gate()
    operations.register("gated", gate)
    op = await operations.start(DATASET, METHOD, Job("gated"), prepare=prepare)
    assert seen == [True] and gate.runs == 0
    gate.release.set()
    assert (await outcome(operations, op)).error is None


async def test_failed_prepare_ends_the_operation_with_its_error_and_runs_no_job(
    operations: Operations,
) -> None:
    async def prepare() -> None:
        raise NotFound("study 1.2 not found")

    gate = Gate()
    operations.register("gated", gate)
    with pytest.raises(NotFound):
        await operations.start(DATASET, METHOD, Job("gated"), prepare=prepare)
    (recorded,) = (await operations.list(f"{DATASET}/operations", "", 10, "")).items
    assert recorded.done and recorded.error is not None
    assert (recorded.error.code, recorded.error.message) == (Code.NOT_FOUND, "study 1.2 not found")
    assert gate.runs == 0
