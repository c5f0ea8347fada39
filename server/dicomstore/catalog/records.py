"""Serialisation of domain values to the JSON and integers a SQL row holds (shared by adapters)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dicomstore.core.errors import Code
from dicomstore.core.model import (
    BigQueryDestination,
    BigQuerySchema,
    DicomStore,
    DicomStoreConfig,
    Job,
    NotificationConfig,
    Operation,
    OperationError,
    OperationLogEntry,
    OperationResponse,
    ProgressCounter,
    StreamConfig,
    WriteDisposition,
)
from dicomstore.core.names import DicomStoreName, OperationName


def micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def moment(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


def store_config_json(config: DicomStoreConfig) -> str:
    data: dict[str, Any] = {
        "labels": dict(config.labels),
        "notification_configs": list(config.notification_configs),
        "stream_configs": [
            _bigquery_json(s.bigquery_destination) if s.bigquery_destination else None
            for s in config.stream_configs
        ],
    }
    if config.notification_config is not None:
        data["notification_config"] = {
            "pubsub_topic": config.notification_config.pubsub_topic,
            "send_for_bulk_import": config.notification_config.send_for_bulk_import,
        }
    return json.dumps(data, sort_keys=True)


def _bigquery_json(dest: BigQueryDestination) -> dict[str, Any]:
    return {
        "table_uri": dest.table_uri,
        "force": dest.force,
        "write_disposition": dest.write_disposition.name,
        "include_source_store": dest.include_source_store,
        "schema": dest.schema.value,
    }


def _bigquery(data: dict[str, Any]) -> BigQueryDestination:
    return BigQueryDestination(
        table_uri=data["table_uri"],
        force=data["force"],
        write_disposition=WriteDisposition[data["write_disposition"]],
        include_source_store=data["include_source_store"],
        schema=BigQuerySchema(data["schema"]),
    )


def dicom_store(name: DicomStoreName, config_json: str) -> DicomStore:
    config = json.loads(config_json)
    legacy = config.get("notification_config")
    return DicomStore(
        name,
        DicomStoreConfig(
            labels=config["labels"],
            notification_config=NotificationConfig(**legacy) if legacy is not None else None,
            notification_configs=tuple(config["notification_configs"]),
            stream_configs=tuple(
                StreamConfig(_bigquery(s) if s is not None else None)
                for s in config["stream_configs"]
            ),
        ),
    )


def operation_columns(op: Operation) -> dict[str, Any]:
    """Every mutable column of an operation row."""
    return {
        "end_time": micros(op.end_time) if op.end_time else None,
        "cancel_requested": int(op.cancel_requested),
        "counter": json.dumps(op.counter.__dict__, sort_keys=True),
        "logs_url": op.logs_url,
        "error_code": int(op.error.code) if op.error else None,
        "error_message": op.error.message if op.error else None,
        "error_details": (
            json.dumps(
                {
                    "type": op.error.details_type,
                    "samples": [[e.resource, int(e.code), e.message] for e in op.error.samples],
                }
            )
            if op.error and op.error.samples
            else None
        ),
        "response": (
            json.dumps({"type": op.response.type_name, "fields": dict(op.response.fields)})
            if op.response
            else None
        ),
    }


def operation(name: OperationName, row: Any) -> Operation:
    """Build an Operation from a row with the columns of `operation_columns` plus the fixed ones."""
    response = json.loads(row["response"]) if row["response"] else None
    return Operation(
        name=name,
        api_method_name=row["api_method_name"],
        create_time=moment(row["create_time"]),
        job=Job(row["job_kind"], json.loads(row["job_args"])),
        end_time=moment(row["end_time"]) if row["end_time"] is not None else None,
        cancel_requested=bool(row["cancel_requested"]),
        counter=ProgressCounter(**json.loads(row["counter"])),
        logs_url=row["logs_url"],
        error=_error(row),
        response=OperationResponse(response["type"], response["fields"]) if response else None,
    )


def _error(row: Any) -> OperationError | None:
    if row["error_code"] is None:
        return None
    details = json.loads(row["error_details"]) if row["error_details"] else None
    if details is None:
        return OperationError(Code(row["error_code"]), row["error_message"])
    return OperationError(
        Code(row["error_code"]),
        row["error_message"],
        details["type"],
        tuple(OperationLogEntry(r, Code(c), m) for r, c, m in details["samples"]),
    )
