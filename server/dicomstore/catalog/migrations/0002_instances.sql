-- Studies, series and instances of a store. A row is added once its blob is durable, visible
-- (state 1) or, when it waits for the rest of its request, invisible (state 0) until the request
-- commits; recovery at start-up removes rows still at state 0. A study or series
-- whose delete operation runs has `deleting` set and takes no new instances.
DROP TABLE instances;

CREATE TABLE studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    store_key INTEGER NOT NULL REFERENCES dicom_stores (id) ON DELETE CASCADE,
    study_uid TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    deleting INTEGER NOT NULL DEFAULT 0,
    UNIQUE (store_key, study_uid)
);

CREATE TABLE series (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_key INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    series_uid TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    deleting INTEGER NOT NULL DEFAULT 0,
    UNIQUE (study_key, series_uid)
);

CREATE TABLE instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_key INTEGER NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    store_key INTEGER NOT NULL REFERENCES dicom_stores (id) ON DELETE CASCADE,
    sop_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    number_of_frames INTEGER NOT NULL DEFAULT 1,
    metadata TEXT NOT NULL,
    structured_size INTEGER NOT NULL,
    blob_size INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    UNIQUE (series_key, sop_uid)
);
CREATE INDEX instances_by_store ON instances (store_key, state);
CREATE INDEX instances_creating ON instances (state) WHERE state = 0;
