"""Each handler class defines exactly its service's methods, each taking the method's request.

`grpc/server.py` finds a handler by `getattr(handlers, method.name)` and answers UNIMPLEMENTED
when there is none, so a misspelt handler would silently become an unimplemented method, and a
handler typed for another request would only fail when called. The methods deliberately left
out are listed here, with their reason, and nowhere else.
"""

from __future__ import annotations

import inspect
import typing

import pytest
from google.cloud.healthcare.v1.dataset import dataset_pb2
from google.cloud.healthcare.v1.dicom import dicom_pb2
from google.longrunning import operations_pb2
from google.protobuf import descriptor, message_factory

from dicomstore.api.services.datasets import DatasetServiceHandlers
from dicomstore.api.services.dicom import DicomServiceHandlers
from dicomstore.api.services.operations import OperationsHandlers

SERVICES: list[tuple[descriptor.ServiceDescriptor, type, set[str]]] = [
    (dicom_pb2.DESCRIPTOR.services_by_name["DicomService"], DicomServiceHandlers, set()),
    (dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"], DatasetServiceHandlers, set()),
    # Google's Cloud Healthcare API offers only get, list and cancel of its operations.
    (
        operations_pb2.DESCRIPTOR.services_by_name["Operations"],
        OperationsHandlers,
        {"DeleteOperation", "WaitOperation"},
    ),
]


def public_methods(handlers: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(handlers, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("service", "handlers", "left_out"), SERVICES, ids=lambda s: getattr(s, "name", "")
)
def test_handler_class_defines_exactly_the_service_methods(
    service: descriptor.ServiceDescriptor, handlers: type, left_out: set[str]
) -> None:
    methods = {method.name for method in service.methods}
    assert left_out <= methods
    assert public_methods(handlers) == methods - left_out


@pytest.mark.parametrize(
    ("service", "handlers", "left_out"), SERVICES, ids=lambda s: getattr(s, "name", "")
)
def test_each_handler_takes_its_method_request_and_returns_its_response(
    service: descriptor.ServiceDescriptor, handlers: type, left_out: set[str]
) -> None:
    for method in service.methods:
        if method.name in left_out:
            continue
        hints = typing.get_type_hints(getattr(handlers, method.name))
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        assert hints["request"] is request, method.full_name
        assert hints["return"] is response, method.full_name
