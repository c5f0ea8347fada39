-- Study-level QIDO-RS (SQLite's migration 0008): the values of the study-level search keys
-- (study_values.STUDY_KEYWORDS) once per study, written by `add_instance` with the instance's
-- index rows, kept until their study goes: every value a study's visible instances have, maybe
-- more; a study found here is then tested against its visible instances' `instance_attributes`.
-- study_values_walk serves a walk of a store's studies in key order, study_values_by_value a
-- value or range.
CREATE TABLE study_values (
    study_key BIGINT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    keyword TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    store_key BIGINT NOT NULL,
    PRIMARY KEY (study_key, keyword, value)
);
CREATE INDEX study_values_walk ON study_values (store_key, keyword, study_key, value);
CREATE INDEX study_values_by_value ON study_values (store_key, keyword, value, study_key);

INSERT INTO study_values (study_key, keyword, value, store_key)
SELECT DISTINCT se.study_key, a.keyword, a.value, i.store_key
FROM instance_attributes a
JOIN instances i ON i.id = a.instance_key
JOIN series se ON se.id = i.series_key
WHERE a.keyword IN
    ('PatientName', 'PatientID', 'AccessionNumber', 'ReferringPhysicianName', 'StudyDate');

-- A series' visible instances, read from the index alone.
CREATE INDEX instances_by_series ON instances (series_key, state, id);

ANALYZE study_values;
