-- Replica-safe recovery (SQLite's migration 0007): every process renews a liveness lease here
-- (an owner id, the one its operation leases carry, and an expiry in microseconds since the
-- epoch, by the database's clock), and the invisible rows of a STOW-RS in progress carry their
-- process's owner id. What a crash left is removed only for owners whose lease has expired or
-- who are gone: never the work in progress of a process that is alive.
CREATE TABLE processes (
    owner TEXT COLLATE "C" PRIMARY KEY,
    expiry BIGINT NOT NULL
);
ALTER TABLE instances ADD COLUMN owner TEXT;
