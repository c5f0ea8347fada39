-- The error entries of an operation (an object that could not be imported, an instance that
-- could not be exported): what its logsUrl lists, in the order they were written.
CREATE TABLE operation_log (
    operation_key INTEGER NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    time INTEGER NOT NULL,
    resource TEXT NOT NULL,
    code INTEGER NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (operation_key, seq)
) WITHOUT ROWID;

-- A failed operation's sample of item errors (`Operation.error.details`), as JSON.
ALTER TABLE operations ADD COLUMN error_details TEXT;
