"""The soak's traffic: one `Worker` per in-flight loop, each owning a dataset and a store, doing
a weighted mix of gRPC, REST and DICOMweb calls whose outcome it can predict exactly.

Since no two workers touch the same data, every answer is known in advance: an instance a worker
stored reads back byte-identical until the worker deletes it, a search finds exactly what the
worker stored, and so on. Anything else is an unexpected error, counted by kind. A few calls end
early on purpose, as real clients do (a deadline that expires mid-call, a download dropped
half-way): their outcome is counted as `ended early`, not as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.cloud.healthcare.v1 import operation_pb2
from google.cloud.healthcare.v1.dataset import dataset_pb2, dataset_pb2_grpc
from google.cloud.healthcare.v1.dicom import dicom_pb2, dicom_pb2_grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool, field_mask_pb2, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dicomstore_bench.corpus import MULTIPART_DICOM, Ids, Template, multipart

LOCATION = "projects/soak/locations/local"
SOAK_BUCKET = "soak"
OPERATION_WAIT_S = 60.0
KEPT_STUDIES = 6  # a worker deletes its oldest study beyond this many
TEMPLATE = Template("10 KB", 64, 80, 16)
TEMPLATE_FRAME_BYTES = 64 * 80 * 2
STUDY_ACCEPT = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


class Unexpected(Exception):
    """An answer the worker did not predict; the message is the kind counted."""


class EndedEarly(Exception):
    """A call the worker ended on purpose before its answer (deadline, dropped download)."""


@dataclass
class Stats:
    """Calls per action, latencies, unexpected errors by kind, calls that ended early."""

    calls: dict[str, int] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    ended_early: int = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def record(self, action: str, started: float) -> None:
        self.calls[action] = self.calls.get(action, 0) + 1
        self.latencies_ms.setdefault(action, []).append((time.perf_counter() - started) * 1000)

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.error_examples.setdefault(kind, example[:300])


@dataclass
class Study:
    ids: list[Ids]

    @property
    def uid(self) -> str:
        return self.ids[0].study_uid


def _status(reply: httpx.Response, expected: int, what: str) -> httpx.Response:
    if reply.status_code != expected:
        raise Unexpected(f"{what}: HTTP {reply.status_code}: {reply.text[:200]}")
    return reply


class Worker:
    """One in-flight loop: its own dataset `w<N>` and store `s`, then a weighted random mix."""

    def __init__(
        self,
        number: int,
        target: str,
        channel: grpc.aio.Channel,
        http: httpx.AsyncClient,
        seed: int,
        bucket: Path | None = None,
    ) -> None:
        """`bucket` is the folder of the server's embedded bucket `SOAK_BUCKET`, when the soak
        runs the server itself: exports and imports then move data through it."""
        self.number = number
        self.bucket = bucket
        self.target = target
        self.random = random.Random(seed * 1000 + number)
        self.dataset = f"{LOCATION}/datasets/w{number}"
        self.store = f"{self.dataset}/dicomStores/s"
        self.web = f"/v1/{self.store}/dicomWeb"
        self.http = http
        self.channel = channel
        self.dicom = dicom_pb2_grpc.DicomServiceStub(channel)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
        self.operations = operations_pb2_grpc.OperationsStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.studies: list[Study] = []
        self.next_instance = 0
        self.next_study = 0
        self.temp = 0
        actions: list[tuple[int, Callable[[], Awaitable[None]]]] = [
            (6, self.grpc_get_store),
            (3, self.grpc_list_stores),
            (3, self.grpc_update_store),
            (3, self.grpc_metrics),
            (2, self.grpc_store_lifecycle),
            (1, self.grpc_dataset_lifecycle),
            (1, self.grpc_import_export),
            (2, self.grpc_operations),
            (2, self.grpc_reflection_call),
            (2, self.grpc_fresh_channel),
            (2, self.grpc_health),
            (1, self.grpc_deadline),
            (4, self.rest_management),
            (2, self.rest_operations),
            (8, self.stow_single),
            (4, self.stow_multipart),
            (8, self.qido),
            (6, self.wado_instance),
            (3, self.wado_study),
            (4, self.wado_metadata),
            (2, self.wado_frames),
            (1, self.wado_dropped),
            (2, self.delete_instance),
            (1, self.delete_series),
            (1, self.delete_study),
        ]
        self.actions = [call for weight, call in actions for _ in range(weight)]

    # -- set-up ------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Create the worker's dataset and store (if a restart left them, keep them)."""
        with contextlib.suppress(grpc.aio.AioRpcError):  # ALREADY_EXISTS: checked below
            await self.datasets.CreateDataset(
                dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id=f"w{self.number}")
            )
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.dicom.CreateDicomStore(
                dicom_pb2.CreateDicomStoreRequest(parent=self.dataset, dicom_store_id="s")
            )
        await self.grpc_get_store()
        await self.stow_multipart()

    def pick(self) -> Callable[[], Awaitable[None]]:
        return self.random.choice(self.actions)

    # -- gRPC --------------------------------------------------------------------------------

    async def grpc_get_store(self) -> None:
        store = await self.dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=self.store))
        if store.name != self.store:
            raise Unexpected("GetDicomStore: wrong store")

    async def grpc_list_stores(self) -> None:
        reply = await self.dicom.ListDicomStores(
            dicom_pb2.ListDicomStoresRequest(parent=self.dataset, page_size=10)
        )
        if self.store not in [s.name for s in reply.dicom_stores]:
            raise Unexpected("ListDicomStores: own store missing")

    async def grpc_update_store(self) -> None:
        value = str(self.random.randrange(1_000_000))
        store = await self.dicom.UpdateDicomStore(
            dicom_pb2.UpdateDicomStoreRequest(
                dicom_store=dicom_pb2.DicomStore(name=self.store, labels={"soak": value}),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            )
        )
        if store.labels.get("soak") != value:
            raise Unexpected("UpdateDicomStore: label not set")

    async def grpc_metrics(self) -> None:
        metrics = await self.dicom.GetDicomStoreMetrics(
            dicom_pb2.GetDicomStoreMetricsRequest(name=self.store)
        )
        expected = sum(len(s.ids) for s in self.studies)
        if metrics.instance_count != expected:
            raise Unexpected(f"metrics: {metrics.instance_count} instances, expected {expected}")

    async def grpc_store_lifecycle(self) -> None:
        self.temp += 1
        store_id = f"t{self.temp}"
        name = f"{self.dataset}/dicomStores/{store_id}"
        await self.dicom.CreateDicomStore(
            dicom_pb2.CreateDicomStoreRequest(parent=self.dataset, dicom_store_id=store_id)
        )
        await self.dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=name))
        await self.dicom.DeleteDicomStore(dicom_pb2.DeleteDicomStoreRequest(name=name))
        try:
            await self.dicom.GetDicomStore(dicom_pb2.GetDicomStoreRequest(name=name))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            raise Unexpected("GetDicomStore: deleted store still found")

    async def grpc_dataset_lifecycle(self) -> None:
        self.temp += 1
        dataset_id = f"w{self.number}-t{self.temp}"
        operation = await self.datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(parent=LOCATION, dataset_id=dataset_id)
        )
        if not operation.done:
            raise Unexpected("CreateDataset: operation not done")
        name = f"{LOCATION}/datasets/{dataset_id}"
        await self.datasets.GetDataset(dataset_pb2.GetDatasetRequest(name=name))
        await self.datasets.DeleteDataset(dataset_pb2.DeleteDatasetRequest(name=name))

    async def grpc_import_export(self) -> None:
        """Export the worker's store to `gs://soak/w<N>` (emptied first), then import what was
        written back: every instance exported, every one found identical and left alone.
        Against a server of its own (`--target`) the bucket is missing: the export ends
        NOT_FOUND."""
        expected = sum(len(s.ids) for s in self.studies)
        prefix = f"gs://{SOAK_BUCKET}/w{self.number}"
        if self.bucket is not None:
            await asyncio.to_thread(shutil.rmtree, self.bucket / f"w{self.number}", True)
        exported = await self._grpc_wait(
            (
                await self.dicom.ExportDicomData(
                    dicom_pb2.ExportDicomDataRequest(
                        name=self.store,
                        gcs_destination=dicom_pb2.GcsDestination(uri_prefix=prefix),
                    )
                )
            ).name
        )
        if self.bucket is None and exported.error.code == grpc.StatusCode.NOT_FOUND.value[0]:
            return  # no such bucket on that server
        self._expect_counted("ExportDicomData", exported, expected)
        if not expected:
            return  # nothing was written: an import would match nothing
        imported = await self._grpc_wait(
            (
                await self.dicom.ImportDicomData(
                    dicom_pb2.ImportDicomDataRequest(
                        name=self.store, gcs_source=dicom_pb2.GcsSource(uri=f"{prefix}/**")
                    )
                )
            ).name
        )
        self._expect_counted("ImportDicomData", imported, expected)
        await self.grpc_metrics()  # the identical instances were left alone

    @staticmethod
    def _expect_counted(what: str, operation: operations_pb2.Operation, expected: int) -> None:
        metadata = operation_pb2.OperationMetadata()
        operation.metadata.Unpack(metadata)
        counter = metadata.counter
        if operation.HasField("error") or (counter.success, counter.failure) != (expected, 0):
            raise Unexpected(
                f"{what}: {counter.success} succeeded, {counter.failure} failed, expected"
                f" {expected}; error {operation.error.code} {operation.error.message[:200]}"
            )

    async def _grpc_wait(self, name: str) -> operations_pb2.Operation:
        deadline = time.monotonic() + OPERATION_WAIT_S
        while time.monotonic() < deadline:
            operation = await self.operations.GetOperation(
                operations_pb2.GetOperationRequest(name=name)
            )
            if operation.done:
                return operation
            await asyncio.sleep(0.05)
        raise Unexpected("operation not done within its wait")

    async def grpc_operations(self) -> None:
        reply = await self.operations.ListOperations(
            operations_pb2.ListOperationsRequest(name=self.dataset, page_size=5)
        )
        for operation in reply.operations:
            await self.operations.CancelOperation(
                operations_pb2.CancelOperationRequest(name=operation.name)
            )
            await self.operations.GetOperation(
                operations_pb2.GetOperationRequest(name=operation.name)
            )

    async def grpc_fresh_channel(self) -> None:
        """What one grpcurl invocation does: connect, reflect, call, hang up; sometimes the
        client hangs up while its call is still running."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            await self.grpc_reflection_call(channel)
            if self.random.random() < 0.3:
                stub = dicom_pb2_grpc.DicomServiceStub(channel)
                call = stub.GetDicomStoreMetrics(
                    dicom_pb2.GetDicomStoreMetricsRequest(name=self.store)
                )
                await asyncio.sleep(self.random.choice((0, 0.0005, 0.002)))
                await channel.close(grace=0)
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                    await call
                raise EndedEarly

    async def grpc_reflection_call(self, channel: grpc.aio.Channel | None = None) -> None:
        """What grpcurl does: learn the service from reflection, build the request from it."""
        channel = channel or self.channel
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="google.cloud.healthcare.v1.dataset.DatasetService"
            ),
        ]
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        async for response in stub.ServerReflectionInfo(iter(requests)):
            for raw in response.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files[proto.name] = proto
        pool = descriptor_pool.DescriptorPool()
        pending = dict(files)
        while pending:  # add files after their dependencies
            for name, proto in list(pending.items()):
                if all(d not in pending for d in proto.dependency):
                    pool.Add(proto)
                    del pending[name]
        method = pool.FindServiceByName(
            "google.cloud.healthcare.v1.dataset.DatasetService"
        ).FindMethodByName("GetDataset")
        # Classes made at run time from the descriptors: their fields are unknown to the checker.
        request_class: Any = message_factory.GetMessageClass(method.input_type)
        response_class: Any = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/google.cloud.healthcare.v1.dataset.DatasetService/GetDataset",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        dataset = await call(request_class(name=self.dataset))
        if dataset.name != self.dataset:
            raise Unexpected("reflection-built GetDataset: wrong dataset")

    async def grpc_health(self) -> None:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=""))
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unexpected("health: not SERVING")

    async def grpc_deadline(self) -> None:
        """A client whose deadline expires while the server works; the server must carry on."""
        try:
            await self.dicom.ListDicomStores(
                dicom_pb2.ListDicomStoresRequest(parent=self.dataset),
                timeout=self.random.choice((0.0005, 0.001, 0.002)),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            raise EndedEarly from None

    # -- REST management ---------------------------------------------------------------------

    async def rest_management(self) -> None:
        http = self.http
        _status(await http.get(f"/v1/{self.dataset}"), 200, "GET dataset")
        stores = _status(await http.get(f"/v1/{self.dataset}/dicomStores"), 200, "list stores")
        if self.store not in [s["name"] for s in stores.json().get("dicomStores", [])]:
            raise Unexpected("REST list stores: own store missing")
        value = str(self.random.randrange(1_000_000))
        patched = await http.patch(
            f"/v1/{self.store}", params={"updateMask": "labels"}, json={"labels": {"soak": value}}
        )
        if _status(patched, 200, "PATCH store").json().get("labels", {}).get("soak") != value:
            raise Unexpected("REST PATCH store: label not set")
        metrics = await http.get(f"/v1/{self.store}:getDICOMStoreMetrics")
        _status(metrics, 200, "store metrics")

    async def rest_operations(self) -> None:
        reply = await self.http.get(f"/v1/{self.dataset}/operations", params={"pageSize": 5})
        for operation in _status(reply, 200, "list operations").json().get("operations", []):
            _status(await self.http.get(f"/v1/{operation['name']}"), 200, "GET operation")

    async def _rest_wait(self, name: str) -> dict[str, object]:
        deadline = time.monotonic() + OPERATION_WAIT_S
        while time.monotonic() < deadline:
            operation: dict[str, object] = _status(
                await self.http.get(f"/v1/{name}"), 200, "GET operation"
            ).json()
            if operation.get("done"):
                if "error" in operation:
                    raise Unexpected(f"operation failed: {operation['error']}")
                return operation
            await asyncio.sleep(0.05)
        raise Unexpected("operation not done within its wait")

    # -- DICOMweb ----------------------------------------------------------------------------

    def _new_study(self, instances: int) -> Study:
        self.next_study += 1
        study = 100_000 * self.number + self.next_study
        ids = []
        for k in range(instances):
            self.next_instance += 1
            ids.append(Ids(study, k % 2, self.next_instance, study, "20200101", "OT"))
        return Study(ids)

    async def _stow(self, study: Study, body: bytes, content_type: str) -> None:
        reply = await self.http.post(
            f"{self.web}/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
        stored = _status(reply, 200, "STOW").json().get("00081199", {}).get("Value", [])
        if len(stored) != len(study.ids):
            raise Unexpected(f"STOW: {len(stored)} instances stored of {len(study.ids)}")
        self.studies.append(study)
        if len(self.studies) > KEPT_STUDIES:
            await self._delete_study(self.studies[0])

    async def stow_single(self) -> None:
        study = self._new_study(1)
        await self._stow(study, TEMPLATE.render(study.ids[0]), "application/dicom")

    async def stow_multipart(self) -> None:
        study = self._new_study(self.random.randrange(2, 9))
        body = multipart([TEMPLATE.render(i) for i in study.ids])
        await self._stow(study, body, MULTIPART_DICOM)

    def _pick(self) -> tuple[Study, Ids] | None:
        if not self.studies:
            return None
        study = self.random.choice(self.studies)
        return study, self.random.choice(study.ids)

    async def qido(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        study, ids = picked
        kind = self.random.randrange(3)
        if kind == 0:
            path, params = "/studies", {"PatientID": f"P{ids.patient:09d}"}
            expected = 1
        elif kind == 1:
            path, params = f"/studies/{study.uid}/series", {}
            expected = len({i.series for i in study.ids})
        else:
            path = f"/studies/{study.uid}/series/{ids.series_uid}/instances"
            params, expected = {}, sum(i.series == ids.series for i in study.ids)
        reply = await self.http.get(
            self.web + path, params=params, headers={"Accept": "application/dicom+json"}
        )
        found = len(_status(reply, 200, "QIDO").json())
        if found != expected:
            raise Unexpected(f"QIDO {path}: {found} results, expected {expected}")

    def _instance_path(self, ids: Ids) -> str:
        return f"{self.web}/studies/{ids.study_uid}/series/{ids.series_uid}/instances/{ids.sop_uid}"

    async def wado_instance(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        _, ids = picked
        reply = await self.http.get(
            self._instance_path(ids), headers={"Accept": "application/dicom; transfer-syntax=*"}
        )
        if _status(reply, 200, "WADO instance").content != TEMPLATE.render(ids):
            raise Unexpected("WADO instance: bytes differ from what was stored")

    async def wado_study(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        study, _ = picked
        reply = await self.http.get(f"{self.web}/studies/{study.uid}", headers=STUDY_ACCEPT)
        body = _status(reply, 200, "WADO study").content
        missing = [i for i in study.ids if TEMPLATE.render(i) not in body]
        if missing:
            raise Unexpected(f"WADO study: {len(missing)} instances missing or altered")

    async def wado_metadata(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        study, _ = picked
        reply = await self.http.get(
            f"{self.web}/studies/{study.uid}/metadata",
            headers={"Accept": "application/dicom+json"},
        )
        if len(_status(reply, 200, "WADO metadata").json()) != len(study.ids):
            raise Unexpected("WADO metadata: wrong number of instances")

    async def wado_frames(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        _, ids = picked
        reply = await self.http.get(
            f"{self._instance_path(ids)}/frames/1",
            headers={"Accept": "multipart/related; type=application/octet-stream"},
        )
        if len(_status(reply, 200, "WADO frames").content) < TEMPLATE_FRAME_BYTES:
            raise Unexpected("WADO frames: short frame")

    async def wado_dropped(self) -> None:
        """A viewer that closes the connection after the first bytes of a study."""
        picked = self._pick()
        if picked is None:
            return
        study, _ = picked
        async with (
            httpx.AsyncClient(base_url=self.http.base_url, timeout=30) as client,
            client.stream("GET", f"{self.web}/studies/{study.uid}", headers=STUDY_ACCEPT) as reply,
        ):
            _status(reply, 200, "WADO study (dropped)")
            async for _ in reply.aiter_raw(1024):
                break
        raise EndedEarly

    async def delete_instance(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        study, ids = picked
        _status(await self.http.delete(self._instance_path(ids)), 200, "DELETE instance")
        study.ids.remove(ids)
        if not study.ids:
            self.studies.remove(study)
        gone = await self.http.get(
            self._instance_path(ids), headers={"Accept": "application/dicom; transfer-syntax=*"}
        )
        _status(gone, 404, "WADO of a deleted instance")

    async def delete_series(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        study, ids = picked
        series = f"{self.web}/studies/{ids.study_uid}/series/{ids.series_uid}"
        reply = await self.http.delete(series)
        await self._rest_wait(str(_status(reply, 200, "DELETE series").json()["name"]))
        study.ids = [i for i in study.ids if i.series != ids.series]
        if not study.ids:
            self.studies.remove(study)

    async def delete_study(self) -> None:
        picked = self._pick()
        if picked is not None:
            await self._delete_study(picked[0])

    async def _delete_study(self, study: Study) -> None:
        reply = await self.http.delete(f"{self.web}/studies/{study.uid}")
        await self._rest_wait(str(_status(reply, 200, "DELETE study").json()["name"]))
        self.studies.remove(study)
        found = await self.http.get(f"{self.web}/studies", params={"StudyInstanceUID": study.uid})
        if found.status_code not in (200, 204) or (found.status_code == 200 and found.json()):
            raise Unexpected("QIDO finds a deleted study")
