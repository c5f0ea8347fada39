"""Long-running operations seen from the client: their progress counter, their outcome, and
the polling schedule `wait()` follows (sync and async alike).

An operation's metadata is a `google.cloud.healthcare.v1.OperationMetadata` whose `counter`
counts the units of work that succeeded, failed and are pending
(https://cloud.google.com/healthcare-api/docs/reference/rest/v1/projects.locations.datasets.operations).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from google.cloud.healthcare.v1 import operation_pb2
from google.protobuf import message

from dicomstore_client.errors import ClientError, OperationError

INITIAL_DELAY = 0.1
MAX_DELAY = 2.0

M = TypeVar("M", bound=message.Message)


@dataclass(frozen=True)
class Counter:
    success: int = 0
    failure: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.success + self.failure + self.pending


ProgressCallback = Callable[[Counter], None]


def metadata_of(operation: Any) -> operation_pb2.OperationMetadata:
    metadata = operation_pb2.OperationMetadata()
    if operation.HasField("metadata"):
        operation.metadata.Unpack(metadata)
    return metadata


def counter_of(operation: Any) -> Counter:
    counter = metadata_of(operation).counter
    return Counter(counter.success, counter.failure, counter.pending)


def outcome(operation: Any) -> Any:
    """The done operation itself, or its error raised as an `OperationError`."""
    if operation.HasField("error"):
        raise OperationError(operation, counter_of(operation).failure)
    return operation


def response_of(operation: Any, message_type: type[M]) -> M:
    """The operation's response unpacked into `message_type` (CreateDataset's Dataset...)."""
    response = message_type()
    if not operation.response.Unpack(response):
        raise ClientError(
            f"operation {operation.name} answered a {operation.response.type_url},"
            f" not a {message_type.DESCRIPTOR.full_name}",
            "INTERNAL",
        )
    return response


def delays(initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY) -> Iterator[float]:
    """0.1, 0.2, 0.4, ... then `maximum` forever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)


class Poll:
    """The state of one `wait()`: when to ask again, and which counts were reported last."""

    def __init__(
        self, name: str, timeout: float | None, on_progress: ProgressCallback | None
    ) -> None:
        self.name = name
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        self._on_progress = on_progress
        self._last: Counter | None = None
        self._delays = delays()

    def seen(self, operation: Any) -> bool:
        """Report the operation's counts if they changed; True once it is done."""
        counter = counter_of(operation)
        if self._on_progress is not None and counter != self._last:
            self._on_progress(counter)
        self._last = counter
        return bool(operation.done)

    def next_delay(self) -> float:
        """Seconds to sleep before the next GetOperation; raises once the timeout has passed."""
        delay = next(self._delays)
        if self._deadline is None:
            return delay
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise ClientError(
                f"operation {self.name} still running after {self._timeout:g} s",
                "DEADLINE_EXCEEDED",
            )
        return min(delay, remaining)
