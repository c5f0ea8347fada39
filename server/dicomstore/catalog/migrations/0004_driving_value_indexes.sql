-- Values are indexed, one partial index per keyword, for the keys Google's conformance statement
-- lets one search on (sqlite_search.DRIVING_KEYWORDS lists the same); a query names the keyword
-- as a literal so that SQLite uses its index. Every other indexed attribute stays searchable
-- through the rows of `instance_attributes`, tested instance by instance: an index entry per
-- attribute cost a page write per attribute in every instance's commit.
DROP INDEX instance_attributes_by_value;
CREATE INDEX instance_attributes_StudyInstanceUID ON instance_attributes (value) WHERE keyword = 'StudyInstanceUID';
CREATE INDEX instance_attributes_SeriesInstanceUID ON instance_attributes (value) WHERE keyword = 'SeriesInstanceUID';
CREATE INDEX instance_attributes_SOPInstanceUID ON instance_attributes (value) WHERE keyword = 'SOPInstanceUID';
CREATE INDEX instance_attributes_PatientName ON instance_attributes (value) WHERE keyword = 'PatientName';
CREATE INDEX instance_attributes_PatientID ON instance_attributes (value) WHERE keyword = 'PatientID';
CREATE INDEX instance_attributes_AccessionNumber ON instance_attributes (value) WHERE keyword = 'AccessionNumber';
CREATE INDEX instance_attributes_ReferringPhysicianName ON instance_attributes (value) WHERE keyword = 'ReferringPhysicianName';
CREATE INDEX instance_attributes_StudyDate ON instance_attributes (value) WHERE keyword = 'StudyDate';
CREATE INDEX instance_attributes_Modality ON instance_attributes (value) WHERE keyword = 'Modality';
