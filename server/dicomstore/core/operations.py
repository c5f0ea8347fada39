"""Long-running operations (`google.longrunning.Operations` over the catalog).

An operation is written to the catalog before its job starts, so it answers GetOperation at once
and after a restart. Jobs run on a bounded set of tasks; a job checks for cancellation between
units of work and reports progress through its `JobContext`. At start-up `resume` re-runs the jobs
a crash interrupted (jobs are idempotent) or, for a kind this build cannot run, finishes them with
ABORTED, so no operation stays running forever.

Reference: google/longrunning/operations.proto; `OperationMetadata` of
google.cloud.healthcare.v1 (api_method_name, create_time, end_time, cancel_requested, counter).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dicomstore.core import paging
from dicomstore.core.errors import Cancelled, Code, DicomStoreError, invalid
from dicomstore.core.model import (
    Job,
    Operation,
    OperationError,
    OperationLogEntry,
    OperationResponse,
    Page,
    ProgressCounter,
)
from dicomstore.core.names import DatasetName, OperationName
from dicomstore.core.ports import Catalog

log = logging.getLogger(__name__)

EMPTY = OperationResponse("google.protobuf.Empty")

#: Item errors an operation's error carries (`details`); its logsUrl lists them all.
SAMPLE_ERRORS = 10

_DONE_FILTER = re.compile(r"^\s*done\s*=\s*(true|false)\s*$", re.IGNORECASE)


def now() -> datetime:
    return datetime.now(UTC)


def _new_operation_id() -> str:
    # 19 digits, ordered by creation time (microseconds) with three random digits against ties.
    return f"{int(now().timestamp() * 1_000_000) * 1000 + random.randrange(1000):019d}"


class JobContext:
    """What a running job sees of its operation: arguments, progress and cancellation."""

    def __init__(self, operations: Operations, operation: Operation) -> None:
        self._operations = operations
        self.operation = operation
        self.samples: list[OperationLogEntry] = []

    @property
    def args(self) -> Mapping[str, Any]:
        return self.operation.job.args

    async def progress(self, counter: ProgressCounter) -> None:
        """Persist the progress counter (OperationMetadata.counter)."""
        self.operation = dataclasses.replace(self.operation, counter=counter)
        await self._operations.catalog.update_operation(self.operation)

    async def log(self, entries: Sequence[OperationLogEntry]) -> None:
        """Append error entries to the operation's log (what its logsUrl lists), keeping the
        first `SAMPLE_ERRORS` for the operation's error."""
        if entries:
            await self._operations.catalog.add_operation_log(self.operation.name, entries)
            room = SAMPLE_ERRORS - len(self.samples)
            self.samples.extend(entries[:room])

    def item_errors(self, failed: int, total: int, what: str, details_type: str) -> OperationError:
        """The error of an operation `failed` of whose `total` items (`what`) failed: how many,
        where to look, and a sample."""
        first = self.samples[0].code if self.samples else Code.UNKNOWN
        return OperationError(
            first,
            f"{failed} of {total} {what} failed; {self.operation.logs_url} lists each one"
            " with its error",
            details_type,
            tuple(self.samples),
        )

    async def check_cancelled(self) -> None:
        """Raise Cancelled if CancelOperation was called since the job started."""
        stored = await self._operations.catalog.get_operation(self.operation.name)
        if stored.cancel_requested:
            raise Cancelled("operation was cancelled")


#: A job ends with its response, or with the error of an operation some of whose items failed.
JobFunction = Callable[[JobContext], Awaitable[OperationResponse | OperationError]]


class Operations:
    """Creates, runs, lists and cancels long-running operations."""

    def __init__(
        self,
        catalog: Catalog,
        tokens: paging.PageTokens,
        *,
        concurrency: int,
        logs_base_url: str = "",
    ) -> None:
        """`logs_base_url` is the base of the logsUrl of operations that keep a log
        (`{base}/logs/{operation name}`, served by the REST gateway)."""
        self.catalog = catalog
        self._logs_base_url = logs_base_url.rstrip("/")
        self._tokens = tokens
        self._jobs: dict[str, JobFunction] = {}
        self._uncancellable: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, kind: str, job: JobFunction, *, cancellable: bool = True) -> None:
        """Run operations of `kind` with `job`. A job that is not `cancellable` runs to its
        end whatever CancelOperation asks (Google's cancellation is best effort): a study
        delete, whose study refuses new instances from the start, must finish to release it."""
        self._jobs[kind] = job
        if not cancellable:
            self._uncancellable.add(kind)

    async def start(
        self,
        dataset: DatasetName,
        api_method_name: str,
        job: Job,
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
        logged: bool = False,
    ) -> Operation:
        """Persist a new operation, schedule its job and return it (not yet done).

        `prepare` runs once the operation is persisted, before its job is scheduled: what it
        sets (a study marked as being deleted) then never outlives a crash without the
        unfinished operation that resumes at start-up and finishes the work. When `prepare`
        fails, the operation ends with that error and the error propagates.
        """
        if job.kind not in self._jobs:
            raise ValueError(f"no job registered for {job.kind!r}")
        name = OperationName(dataset, _new_operation_id())
        operation = Operation(
            name=name,
            api_method_name=api_method_name,
            create_time=now(),
            job=job,
            logs_url=f"{self._logs_base_url}/logs/{name}" if logged else "",
        )
        await self.catalog.create_operation(operation)
        if prepare is not None:
            try:
                await prepare()
            except Exception as exc:
                error = (
                    OperationError(exc.code, exc.message)
                    if isinstance(exc, DicomStoreError)
                    else OperationError(Code.INTERNAL, "internal error")
                )
                await self.catalog.update_operation(
                    dataclasses.replace(operation, end_time=now(), error=error)
                )
                raise
        self._schedule(operation)
        return operation

    async def record(
        self, dataset: DatasetName, api_method_name: str, response: OperationResponse
    ) -> Operation:
        """Persist an operation whose work the caller already did (e.g. CreateDataset)."""
        moment = now()
        operation = Operation(
            name=OperationName(dataset, _new_operation_id()),
            api_method_name=api_method_name,
            create_time=moment,
            end_time=moment,
            job=Job("done"),
            response=response,
        )
        await self.catalog.create_operation(operation)
        return operation

    def _schedule(self, operation: Operation) -> None:
        task = asyncio.get_running_loop().create_task(self._run(operation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, operation: Operation) -> None:
        async with self._slots:
            context = JobContext(self, operation)
            response: OperationResponse | None = None
            error: OperationError | None = None
            try:
                if operation.job.kind not in self._uncancellable:
                    await context.check_cancelled()
                if operation.logs_url:  # a resumed job starts over, and writes its log anew
                    await self.catalog.clear_operation_log(operation.name)
                outcome = await self._jobs[operation.job.kind](context)
                if isinstance(outcome, OperationError):
                    error = outcome
                else:
                    response = outcome
            except DicomStoreError as exc:
                error = OperationError(exc.code, exc.message)
            except asyncio.CancelledError:
                raise  # server shutting down: the operation stays unfinished and resumes later
            except Exception:
                log.exception("operation %s failed", operation.name)
                error = OperationError(Code.INTERNAL, "internal error")
            finished = dataclasses.replace(
                context.operation, end_time=now(), error=error, response=response
            )
            stored = await self.catalog.get_operation(operation.name)
            await self.catalog.update_operation(
                dataclasses.replace(finished, cancel_requested=stored.cancel_requested)
            )

    async def get(self, name: str) -> Operation:
        return await self.catalog.get_operation(OperationName.parse(name))

    async def list(
        self, name: str, filter: str, page_size: int, page_token: str
    ) -> Page[Operation]:
        """ListOperations under a dataset; `filter` is empty, `done=true` or `done=false`."""
        dataset = DatasetName.parse(name.removesuffix("/operations"))
        done: bool | None = None
        if filter.strip():
            match = _DONE_FILTER.match(filter)
            if match is None:
                raise invalid(
                    "filter", f"only done=true and done=false are supported, got {filter!r}"
                )
            done = match.group(1).lower() == "true"
        scope = f"{dataset}\n{done}"
        size = paging.page_size(page_size)
        after = self._tokens.decode(page_token, scope=scope) if page_token else ""
        items = list(
            await self.catalog.list_operations(dataset, done=done, after=after, limit=size + 1)
        )
        token = ""
        if len(items) > size:
            items = items[:size]
            token = self._tokens.encode(scope=scope, position=items[-1].name.operation_id)
        return Page(items, token)

    async def log_entries(
        self, name: str, page_size: int, page_token: str
    ) -> Page[OperationLogEntry]:
        """A page of an operation's error entries, in the order they were written."""
        operation = OperationName.parse(name)
        scope = f"{operation}\nlog"
        size = paging.page_size(page_size)
        after = int(self._tokens.decode(page_token, scope=scope)) if page_token else 0
        items = list(await self.catalog.operation_log(operation, after=after, limit=size + 1))
        token = ""
        if len(items) > size:
            items = items[:size]
            token = self._tokens.encode(scope=scope, position=str(items[-1].seq))
        return Page(items, token)

    async def cancel(self, name: str) -> None:
        """Request cancellation; the job ends with CANCELLED at its next check. No-op once done."""
        await self.catalog.request_cancel(OperationName.parse(name))

    async def resume(self) -> None:
        """Re-run the jobs a crash or shutdown interrupted; fail those this build cannot run."""
        for operation in await self.catalog.unfinished_operations():
            if operation.job.kind in self._jobs:
                self._schedule(operation)
            else:
                await self.catalog.update_operation(
                    dataclasses.replace(
                        operation,
                        end_time=now(),
                        error=OperationError(
                            Code.ABORTED, "operation was interrupted by a restart and cannot resume"
                        ),
                    )
                )

    async def idle(self) -> None:
        """Wait until no job is running (tests and graceful shutdown use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop running jobs; they stay unfinished in the catalog and resume at the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
