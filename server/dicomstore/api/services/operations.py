"""google.longrunning.Operations: GetOperation, ListOperations and CancelOperation.

DeleteOperation and WaitOperation are not offered (the server answers UNIMPLEMENTED), as in
Google's Cloud Healthcare API, whose REST surface has only get, list and cancel.
"""

from __future__ import annotations

from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from dicomstore.api import convert
from dicomstore.core.errors import invalid
from dicomstore.core.operations import Operations


class OperationsHandlers:
    def __init__(self, operations: Operations) -> None:
        self._operations = operations

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest
    ) -> operations_pb2.Operation:
        return convert.operation_to_proto(await self._operations.get(request.name))

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest
    ) -> operations_pb2.ListOperationsResponse:
        if request.return_partial_success:
            raise invalid("return_partial_success", "is only valid when listing across datasets")
        page = await self._operations.list(
            request.name, request.filter, request.page_size, request.page_token
        )
        return operations_pb2.ListOperationsResponse(
            operations=[convert.operation_to_proto(o) for o in page.items],
            next_page_token=page.next_page_token,
        )

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest
    ) -> empty_pb2.Empty:
        await self._operations.cancel(request.name)
        return empty_pb2.Empty()
