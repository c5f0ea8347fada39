-- Study-level QIDO-RS: the values of the study-level search keys (study_values.STUDY_KEYWORDS)
-- once per study, so that a studies search reads one index entry per study, not one per
-- instance, and can walk a store's studies in key order: a page of a common name prefix stops
-- after its `limit` studies, a date range reads its few studies. Written by `add_instance` with
-- the instance's index rows; rows of invisible instances are written too and rows of deleted
-- instances stay until their study goes (ON DELETE CASCADE): the table holds every value a
-- study's visible instances have, maybe more, and a study found here is then tested against
-- its visible instances' `instance_attributes`, as before.
--
-- The primary key serves the cascade and the writes; study_values_walk a store's studies in
-- key order with their values (the walk), study_values_by_value a value or range (the drive).
CREATE TABLE study_values (
    study_key INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    keyword TEXT NOT NULL,
    value TEXT NOT NULL,
    store_key INTEGER NOT NULL,
    PRIMARY KEY (study_key, keyword, value)
) WITHOUT ROWID;
CREATE INDEX study_values_walk ON study_values (store_key, keyword, study_key, value);
CREATE INDEX study_values_by_value ON study_values (store_key, keyword, value, study_key);

INSERT OR IGNORE INTO study_values (study_key, keyword, value, store_key)
SELECT se.study_key, a.keyword, a.value, i.store_key
FROM instance_attributes a
JOIN instances i ON i.id = a.instance_key
JOIN series se ON se.id = i.series_key
WHERE a.keyword IN
    ('PatientName', 'PatientID', 'AccessionNumber', 'ReferringPhysicianName', 'StudyDate');

-- A series' instances by visibility, without reading their rows (which carry the metadata):
-- the walks test a study's or a series' visible instances through it.
CREATE INDEX instances_by_series ON instances (series_key, state);
