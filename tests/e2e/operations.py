"""Waiting for a long-running operation of a server over a blocking gRPC channel."""

from __future__ import annotations

import time

from google.longrunning import operations_pb2, operations_pb2_grpc

CALL_TIMEOUT = 10.0


def wait_done(
    operations: operations_pb2_grpc.OperationsStub, name: str, timeout: float = 10.0
) -> operations_pb2.Operation:
    """Operation `name` once done, or as it is after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        operation = operations.GetOperation(
            operations_pb2.GetOperationRequest(name=name), timeout=CALL_TIMEOUT
        )
        if operation.done or time.monotonic() > deadline:
            return operation
        time.sleep(0.05)
