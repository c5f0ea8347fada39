-- QIDO-RS index. One row per value of each indexed attribute (dicom/header.py INDEX_KEYWORDS) of
-- each instance, normalised by dicom/qido.py `index_entries`; one row per token of each Person
-- Name (`token_entries`) for fuzzy matching. Both are written by `add_instance` in the
-- instance's own transaction and go with the instance (ON DELETE CASCADE). Visibility is not
-- copied here: searches join `instances` and keep state 1 only.
--
-- Clustered by instance (WITHOUT ROWID, instance keys only grow: inserts append) with a
-- secondary index by (keyword, value), which carries the instance key: a lookup never touches
-- the table.
CREATE TABLE instance_attributes (
    instance_key INTEGER NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    keyword TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (instance_key, keyword, value)
) WITHOUT ROWID;
CREATE INDEX instance_attributes_by_value ON instance_attributes (keyword, value);

CREATE TABLE person_name_tokens (
    instance_key INTEGER NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    keyword TEXT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (instance_key, keyword, token)
) WITHOUT ROWID;
CREATE INDEX person_name_tokens_by_token ON person_name_tokens (keyword, token);

-- Studies and series of a store in key order, so an unfiltered page stops after `limit` rows.
CREATE INDEX studies_by_store ON studies (store_key);
CREATE INDEX series_by_study ON series (study_key);

-- Instances stored before this migration, indexed from their DICOM JSON: each value of each
-- indexed attribute (a Person Name by its Alphabetic group, without trailing '^'); tokens are
-- lower-cased (ASCII only) and split on '^' and ' '. Later instances get `index_entries` and
-- `token_entries` exactly.
CREATE TEMP TABLE qido_keywords (keyword TEXT, tag TEXT);
INSERT INTO qido_keywords VALUES
    ('SpecificCharacterSet', '00080005'), ('StudyInstanceUID', '0020000D'),
    ('StudyDate', '00080020'), ('StudyTime', '00080030'), ('AccessionNumber', '00080050'),
    ('ReferringPhysicianName', '00080090'), ('TimezoneOffsetFromUTC', '00080201'),
    ('PatientName', '00100010'), ('PatientID', '00100020'), ('IssuerOfPatientID', '00100021'),
    ('PatientBirthDate', '00100030'), ('PatientSex', '00100040'), ('PatientAge', '00101010'),
    ('StudyID', '00200010'), ('StudyDescription', '00081030'), ('InstitutionName', '00080080'),
    ('SeriesInstanceUID', '0020000E'), ('Modality', '00080060'), ('SeriesNumber', '00200011'),
    ('SeriesDescription', '0008103E'), ('SeriesDate', '00080021'), ('SeriesTime', '00080031'),
    ('Laterality', '00200060'), ('BodyPartExamined', '00180015'),
    ('PerformedProcedureStepStartDate', '00400244'),
    ('PerformedProcedureStepStartTime', '00400245'), ('SOPClassUID', '00080016'),
    ('SOPInstanceUID', '00080018'), ('InstanceNumber', '00200013'), ('ContentDate', '00080023'),
    ('ContentTime', '00080033'), ('Rows', '00280010'), ('Columns', '00280011'),
    ('BitsAllocated', '00280100'), ('NumberOfFrames', '00280008');

INSERT OR IGNORE INTO instance_attributes (instance_key, keyword, value)
SELECT instance_key, keyword, value FROM (
    SELECT i.id AS instance_key, k.keyword AS keyword,
           CASE WHEN v.type = 'object'
                THEN rtrim(trim(CAST(json_extract(v.value, '$.Alphabetic') AS TEXT)), '^ ')
                ELSE trim(CAST(v.value AS TEXT)) END AS value
    FROM instances i
    JOIN qido_keywords k
    JOIN json_each(i.metadata, '$."' || k.tag || '".Value') v
    WHERE v.type <> 'null'
)
WHERE value IS NOT NULL AND value <> '';

WITH RECURSIVE
    names (instance_key, keyword, rest) AS (
        SELECT instance_key, keyword, replace(lower(value), '^', ' ') || ' '
        FROM instance_attributes
        WHERE keyword IN ('PatientName', 'ReferringPhysicianName')
    ),
    split (instance_key, keyword, token, rest) AS (
        SELECT instance_key, keyword, '', rest FROM names
        UNION ALL
        SELECT instance_key, keyword, substr(rest, 1, instr(rest, ' ') - 1),
               substr(rest, instr(rest, ' ') + 1)
        FROM split WHERE rest <> ''
    )
INSERT OR IGNORE INTO person_name_tokens (instance_key, keyword, token)
SELECT instance_key, keyword, token FROM split WHERE token <> '';

DROP TABLE qido_keywords;
