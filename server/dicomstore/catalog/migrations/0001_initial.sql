-- Datasets, DICOM stores, instances (counted by store metrics; filled by DICOMweb) and operations.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE datasets (
    id INTEGER PRIMARY KEY,
    location TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    UNIQUE (location, dataset_id)
);

-- AUTOINCREMENT: a store key names its blob folder, so a deleted store's key is never reused.
CREATE TABLE dicom_stores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_key INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    store_id TEXT NOT NULL,
    config TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    UNIQUE (dataset_key, store_id)
);

-- state: 0 = invisible (its request has not committed), 1 = visible.
CREATE TABLE instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    store_key INTEGER NOT NULL REFERENCES dicom_stores (id) ON DELETE CASCADE,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    structured_size INTEGER NOT NULL DEFAULT 0,
    blob_size INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX instances_by_uid ON instances (store_key, study_uid, series_uid, sop_uid);

CREATE TABLE operations (
    id INTEGER PRIMARY KEY,
    dataset_key INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    operation_id TEXT NOT NULL,
    api_method_name TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    end_time INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    counter TEXT NOT NULL,
    logs_url TEXT NOT NULL DEFAULT '',
    error_code INTEGER,
    error_message TEXT,
    response TEXT,
    job_kind TEXT NOT NULL,
    job_args TEXT NOT NULL,
    UNIQUE (dataset_key, operation_id)
);
CREATE INDEX operations_unfinished ON operations (create_time) WHERE end_time IS NULL;
