-- Replicas. Every serving process registers itself and beats; the money it holds for its
-- users' requests is kept per process, so that the holds of a dead one (no beat within the
-- timeout) are voided without touching those of the living. `accounts.held_nanos` stays
-- the sum over processes, for the CHECK that refuses an overdraft.
--
-- Holds from before this migration belong to no process and their requests are gone (an
-- upgrade restarts every replica), so they are voided here, once.

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- No foreign key to `instances`: a process swept while it was alive (a long pause) may
-- still write a hold before it notices; the sweeper voids holds of unknown processes too.
CREATE TABLE holds (
    instance_id TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    held_nanos  BIGINT NOT NULL CHECK (held_nanos >= 0),
    PRIMARY KEY (instance_id, user_id)
);

UPDATE accounts SET held_nanos = 0 WHERE held_nanos <> 0;
