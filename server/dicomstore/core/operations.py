"""Long-running operations (`google.longrunning.Operations` over the catalog).

An operation is written to the catalog before its job starts, so it answers GetOperation at once
and after a restart, from any process sharing the catalog. Jobs run on a bounded set of tasks; a
job checks for cancellation between units of work and reports progress through its
`JobContext`.

Exactly one process runs an unfinished operation: the one holding its lease in the catalog (an
owner id unique to this `Operations` and an expiry, `lease_s` from the last renewal). The process
that starts an operation creates it leased to itself; while the job runs (or waits for a slot)
a keeper renews the lease every `lease_s / 3` seconds and reads the operation every
`check_s`: a cancellation requested through any process stops the job (CANCELLED), and a lease
lost (this process stalled past its expiry and another claimed it) stops it without writing
anything. `resume` runs the operations nobody holds at start-up, then keeps looking every
`poll_s` for operations whose owner died (their lease expired) and claims them: jobs are
idempotent, so the work is finished by whoever claims it; a kind this build cannot run is
finished with ABORTED, so no operation stays running forever. On `close` the leases are
released, so another process (or the next start) takes the operations over at once.

Reference: google/longrunning/operations.proto; `OperationMetadata` of
google.cloud.healthcare.v1 (api_method_name, create_time, end_time, cancel_requested, counter).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dicomstore.core import paging
from dicomstore.core.errors import (
    AlreadyExists,
    Cancelled,
    Code,
    DicomStoreError,
    NotFound,
    invalid,
)
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
from dicomstore.core.processes import new_owner

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

#: How long a lease lasts without renewal: a process that died leaves its operations to the
#: others after at most this long.
LEASE_S = 10.0
#: How often a running job's operation is read for a cancellation requested elsewhere.
CHECK_S = 1.0
#: How often every process looks for operations whose lease expired.
POLL_S = 2.0


class _Lease:
    """Keeps the lease of one operation while its job waits and runs (see the module doc)."""

    def __init__(self, operations: Operations, operation: Operation, cancellable: bool) -> None:
        self._operations = operations
        self._operation = operation
        self._cancellable = cancellable
        self.job: asyncio.Future[Any] | None = None
        self.lost = False
        self.cancelled = False
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        ops = self._operations
        catalog, name = ops.catalog, self._operation.name
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(min(ops.check_s, ops.lease_s / 3))
            try:
                if time.monotonic() - renewed >= ops.lease_s / 3:
                    if not await catalog.renew_lease(name, ops.owner, ops.lease_s):
                        log.warning("operation %s: lease lost, stopping its job here", name)
                        self._stop(lost=True)
                        return
                    renewed = time.monotonic()
                watched = self.job is not None and self._cancellable
                if watched and (await catalog.get_operation(name)).cancel_requested:
                    self._stop(lost=False)
                    return
            except NotFound:  # its dataset was deleted: nothing to finish
                self._stop(lost=True)
                return
            except DicomStoreError:
                log.warning("operation %s: lease not renewed", name, exc_info=True)

    def _stop(self, *, lost: bool) -> None:
        self.lost, self.cancelled = lost, not lost
        if self.job is not None:
            self.job.cancel()

    def close(self) -> None:
        self._task.cancel()


class Operations:
    """Creates, runs, lists and cancels long-running operations."""

    def __init__(
        self,
        catalog: Catalog,
        tokens: paging.PageTokens,
        *,
        concurrency: int,
        logs_base_url: str = "",
        lease_s: float = LEASE_S,
        check_s: float = CHECK_S,
        poll_s: float = POLL_S,
        owner: str = "",
    ) -> None:
        """`logs_base_url` is the base of the logsUrl of operations that keep a log
        (`{base}/logs/{operation name}`, served by the REST gateway); `owner` is this process's
        id (`processes.new_owner`), a new one by default."""
        self.catalog = catalog
        self.owner = owner or new_owner()
        self.lease_s, self.check_s, self.poll_s = lease_s, check_s, poll_s
        self._running: set[str] = set()  # names of the operations this process holds
        self._poller: asyncio.Task[None] | None = None
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
        for attempt in range(3):  # an id taken by another process at the same microsecond
            name = OperationName(dataset, _new_operation_id())
            operation = Operation(
                name=name,
                api_method_name=api_method_name,
                create_time=now(),
                job=job,
                logs_url=f"{self._logs_base_url}/logs/{name}" if logged else "",
            )
            try:
                await self.catalog.create_operation(
                    operation, owner=self.owner, lease_seconds=self.lease_s
                )
                break
            except AlreadyExists:
                if attempt == 2:
                    raise
        self._running.add(str(operation.name))
        lease = _Lease(self, operation, job.kind not in self._uncancellable)
        if prepare is not None:
            try:
                await prepare()
            except Exception as exc:
                error = (
                    OperationError(exc.code, exc.message)
                    if isinstance(exc, DicomStoreError)
                    else OperationError(Code.INTERNAL, "internal error")
                )
                lease.close()
                self._running.discard(str(operation.name))
                await self.catalog.update_operation(
                    dataclasses.replace(operation, end_time=now(), error=error)
                )
                raise
        self._schedule(operation, lease)
        return operation

    async def record(
        self, dataset: DatasetName, api_method_name: str, response: OperationResponse
    ) -> Operation:
        """Persist an operation whose work the caller already did (e.g. CreateDataset)."""
        moment = now()
        for attempt in range(3):  # an id taken by another process at the same microsecond
            operation = Operation(
                name=OperationName(dataset, _new_operation_id()),
                api_method_name=api_method_name,
                create_time=moment,
                end_time=moment,
                job=Job("done"),
                response=response,
            )
            try:
                await self.catalog.create_operation(operation)
                break
            except AlreadyExists:
                if attempt == 2:
                    raise
        return operation

    def _schedule(self, operation: Operation, lease: _Lease | None) -> None:
        """Run `operation`'s job: under `lease`, already held, or once claimed (`None`)."""
        self._running.add(str(operation.name))
        task = asyncio.get_running_loop().create_task(self._run(operation, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, operation: Operation, lease: _Lease | None) -> None:
        try:
            async with self._slots:
                if lease is None:
                    claimed = await self._claim(operation)
                    if claimed is None:
                        return  # another process took it first, or it is gone
                    operation = claimed
                    cancellable = operation.job.kind not in self._uncancellable
                    lease = _Lease(self, operation, cancellable)
                if not lease.lost:
                    await self._execute(operation, lease)
        finally:
            if lease is not None:
                lease.close()
            self._running.discard(str(operation.name))

    async def _claim(self, operation: Operation) -> Operation | None:
        """Claim an operation nobody holds: as stored now (a cancellation asked before the
        claim counts), or None when another process has it or it is gone."""
        try:
            if not await self.catalog.claim_operation(operation.name, self.owner, self.lease_s):
                return None
            return await self.catalog.get_operation(operation.name)
        except DicomStoreError:
            log.warning("operation %s could not be claimed", operation.name, exc_info=True)
            return None

    async def _execute(self, operation: Operation, lease: _Lease) -> None:
        if operation.job.kind not in self._jobs:  # a kind this build cannot run
            aborted = OperationError(
                Code.ABORTED, "operation was interrupted by a restart and cannot resume"
            )
            await self.catalog.update_operation(
                dataclasses.replace(operation, end_time=now(), error=aborted)
            )
            return
        context = JobContext(self, operation)
        response: OperationResponse | None = None
        error: OperationError | None = None
        try:
            outcome = await self._job(context, lease)
            if outcome is None:
                return  # another process runs it now: write nothing
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

    async def _job(
        self, context: JobContext, lease: _Lease
    ) -> OperationResponse | OperationError | None:
        """Run the job under `lease`: its outcome, or None when the lease was lost. Cancelled
        when a cancellation was requested (through any process)."""
        operation = context.operation
        if operation.job.kind not in self._uncancellable:
            await context.check_cancelled()
        if operation.logs_url:  # a resumed job starts over, and writes its log anew
            await self.catalog.clear_operation_log(operation.name)
        lease.job = job = asyncio.ensure_future(self._jobs[operation.job.kind](context))
        try:
            return await job
        except asyncio.CancelledError:
            if lease.lost:
                return None
            if not lease.cancelled:
                raise  # shutting down: the operation stays unfinished and resumes later
            raise Cancelled("operation was cancelled") from None

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
        """Run the unfinished operations nobody holds (a crash or a shutdown interrupted them;
        those of a kind this build cannot run end ABORTED), then keep looking for operations
        whose owner died, every `poll_s` seconds, until `close`."""
        await self._adopt()
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _adopt(self) -> None:
        for operation in await self.catalog.unclaimed_operations():
            if str(operation.name) not in self._running:
                self._schedule(operation, None)

    async def _poll(self) -> None:
        while True:
            # Spread the processes' polls: they would otherwise claim in step.
            await asyncio.sleep(self.poll_s * random.uniform(0.75, 1.25))
            try:
                await self._adopt()
            except DicomStoreError:
                log.warning("looking for operations to resume failed", exc_info=True)

    async def idle(self) -> None:
        """Wait until no job is running (tests and graceful shutdown use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop running jobs; they stay unfinished in the catalog, their leases released, and
        resume in another process or at the next start."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        try:
            await self.catalog.release_leases(self.owner)
        except Exception:  # they expire instead; the shutdown goes on
            log.warning("releasing the operations' leases failed", exc_info=True)
