-- Clickstream session store, version 2: erasure tombstones.
-- Erasing a user records the ids of their sessions here. Registrations, events and bulk items for a
-- tombstoned session id are not stored again (answers count them as erased), so erased data stays erased
-- even when a client keeps sending it. A tombstone holds the session id and the erasure time, nothing else.

CREATE TABLE cs_erased_session (
    session_id TEXT   PRIMARY KEY,
    erased_at  BIGINT NOT NULL
);
