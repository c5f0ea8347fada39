-- Operation leases: the process that runs an unfinished operation holds its lease (an owner id
-- and an expiry in microseconds since the epoch, by the catalog's clock) and renews it while the
-- job runs. An operation whose lease is absent or expired is claimable by any process: that is
-- how the operations of a process that died are resumed by another (`--workers`, replicas).
ALTER TABLE operations ADD COLUMN lease_owner TEXT;
ALTER TABLE operations ADD COLUMN lease_expiry INTEGER;
