-- Operation leases (SQLite's migration 0006): the process that runs an unfinished operation
-- holds its lease (an owner id and an expiry in microseconds since the epoch, by the database's
-- clock) and renews it while the job runs; an absent or expired lease is claimable by any
-- process.
ALTER TABLE operations ADD COLUMN lease_owner TEXT;
ALTER TABLE operations ADD COLUMN lease_expiry BIGINT;
