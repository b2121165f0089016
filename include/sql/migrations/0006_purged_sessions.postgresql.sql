-- Clickstream session store, version 6: tombstones of purged sessions.
-- Retention's purge records the ids of the sessions it deletes here. Events that arrive later for such a
-- session id (while it is not registered again) are not stored: answers count them as purged. A tombstone
-- holds the session id and the purge time, nothing else. Growth is bounded: the purge of a batch deletes
-- the tombstones recorded before that batch was released (so a tombstone lasts about one retention period).

CREATE TABLE cs_purged_session (
    session_id TEXT   PRIMARY KEY,
    purged_at  BIGINT NOT NULL
);
CREATE INDEX cs_purged_session_time ON cs_purged_session (purged_at);
