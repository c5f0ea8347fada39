"""What the SQLite and PostgreSQL catalogs share: SQL text both run unchanged (with SQLite's `?`
placeholders, which the PostgreSQL catalog numbers, `postgres_statements.numbered`) and the
building of domain values from the rows it selects. Serialisation of the values a row holds
is `records`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from dicomstore.catalog import records
from dicomstore.core.errors import NotFound, Unavailable
from dicomstore.core.model import InstanceKey, Operation, StoredInstance
from dicomstore.core.names import DatasetName, LocationName, OperationName
from dicomstore.core.queries import Match

#: The key of a dataset, by (location, dataset id).
DATASET_KEY: Final = "SELECT id FROM datasets WHERE location = ? AND dataset_id = ?"
#: The key of a DICOM store, by (location, dataset id, store id).
STORE_KEY: Final = (
    "SELECT s.id FROM dicom_stores s JOIN datasets d ON d.id = s.dataset_key"
    " WHERE d.location = ? AND d.dataset_id = ? AND s.store_id = ?"
)
#: A store's key and configuration, by dataset (location, dataset id); add the store id.
STORE_SELECT: Final = (
    "SELECT s.id, s.store_id, s.config FROM dicom_stores s"
    " JOIN datasets d ON d.id = s.dataset_key WHERE d.location = ? AND d.dataset_id = ?"
)
#: Counts and byte totals of a store's visible instances (`DicomStoreMetrics`), by store key.
STORE_METRICS: Final = (
    "SELECT COUNT(DISTINCT se.study_key) AS studies,"
    " COUNT(DISTINCT i.series_key) AS series, COUNT(*) AS instances,"
    " COALESCE(SUM(i.structured_size), 0) AS structured,"
    " COALESCE(SUM(i.blob_size), 0) AS blob"
    " FROM instances i JOIN series se ON se.id = i.series_key"
    " WHERE i.store_key = ? AND i.state = 1"
)

#: The columns of `stored_instance`.
INSTANCE_SELECT: Final = (
    "SELECT i.id, i.store_key, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid,"
    " i.number_of_frames, i.blob_size, se.series_uid, st.study_uid FROM instances i"
    " JOIN series se ON se.id = i.series_key JOIN studies st ON st.id = se.study_key"
)
INSERT_INSTANCE: Final = (
    "INSERT INTO instances (id, series_key, store_key, sop_uid, sop_class_uid,"
    " transfer_syntax_uid, number_of_frames, metadata, structured_size,"
    " blob_size, state, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Forgetting an instance: its series and study keys, then the three deletes (an emptied series
#: and study go with their last instance), each taking (instance key) or (key, key).
FORGET_KEYS: Final = (
    "SELECT series_key, se.study_key FROM instances i JOIN series se"
    " ON se.id = i.series_key WHERE i.id = ?"
)
FORGET_INSTANCE: Final = "DELETE FROM instances WHERE id = ?"
FORGET_SERIES: Final = (
    "DELETE FROM series WHERE id = ? AND NOT EXISTS (SELECT 1 FROM instances WHERE series_key = ?)"
)
FORGET_STUDY: Final = (
    "DELETE FROM studies WHERE id = ? AND NOT EXISTS (SELECT 1 FROM series WHERE study_key = ?)"
)

#: Process liveness leases (`Catalog.heartbeat`): format with the catalog's current time.
HEARTBEAT: Final = (
    "INSERT INTO processes (owner, expiry) VALUES (?, {now} + ?)"
    " ON CONFLICT (owner) DO UPDATE SET expiry = excluded.expiry"
)
END_PROCESS: Final = "DELETE FROM processes WHERE owner = ?"
#: Every liveness lease: the owner and the microseconds it has left (negative once expired).
PROCESSES: Final = "SELECT owner, expiry - {now} AS remaining FROM processes"
#: The invisible rows no live process owns (`Catalog.recover_instances`): format with the
#: catalog's current time.
DEAD_LEFTOVERS: Final = (
    "SELECT id, store_key FROM instances WHERE state = 0 AND (owner IS NULL OR owner NOT IN"
    " (SELECT owner FROM processes WHERE expiry > {now}))"
)


def leftovers_taken() -> Unavailable:
    """A commit some of whose invisible rows are gone: recovery took their process for dead."""
    return Unavailable(
        "instances of this request were removed as the leftovers of a process that stopped"
        " renewing its liveness in time; retry the request"
    )


OPERATION_SELECT: Final = (
    "SELECT o.*, d.location, d.dataset_id FROM operations o JOIN datasets d ON d.id = o.dataset_key"
)
OPERATION_BY_NAME: Final = " WHERE d.location = ? AND d.dataset_id = ? AND o.operation_id = ?"


def mark_deleting(series: bool) -> str:
    """The update flagging a study (store key, study UID) or series (series UID, store key,
    study UID) as being deleted."""
    if not series:
        return "UPDATE studies SET deleting = 1 WHERE store_key = ? AND study_uid = ?"
    return (
        "UPDATE series SET deleting = 1 WHERE series_uid = ? AND study_key ="
        " (SELECT id FROM studies WHERE store_key = ? AND study_uid = ?)"
    )


def operation_params(name: OperationName) -> tuple[str, str, str]:
    return (str(name.dataset.location), name.dataset.dataset_id, name.operation_id)


def operation_not_found(name: OperationName) -> NotFound:
    return NotFound(f"operation {name} not found", resource=str(name))


def operation(row: Any) -> Operation:
    """The operation of a row of `OPERATION_SELECT`."""
    location = LocationName.parse(row["location"])
    name = OperationName(DatasetName(location, row["dataset_id"]), row["operation_id"])
    return records.operation(name, row)


def stored_instance(store_key: int, row: Any) -> StoredInstance:
    """The instance of a row of `INSTANCE_SELECT`."""
    return StoredInstance(
        key=InstanceKey(store_key, int(row["id"])),
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
        sop_uid=row["sop_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        number_of_frames=int(row["number_of_frames"]),
        blob_size=int(row["blob_size"]),
    )


def instance_matches(rows: Sequence[Any]) -> list[Match]:
    """Instance results of a search: rows of (study_uid, series_uid, sop_uid, metadata), the
    metadata a JSON object of the attributes picked (null for one the instance lacks)."""
    return [
        Match(
            study_uid=r["study_uid"],
            series_uid=r["series_uid"],
            sop_uid=r["sop_uid"],
            metadata={t: e for t, e in json.loads(r["metadata"]).items() if e is not None},
        )
        for r in rows
    ]
