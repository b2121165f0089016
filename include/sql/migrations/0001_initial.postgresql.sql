-- Clickstream session store, version 1 (PostgreSQL).
-- All timestamps are milliseconds since epoch (BIGINT). JSON is stored as JSONB.

CREATE TABLE cs_batch (
    batch_id     TEXT PRIMARY KEY,
    status       TEXT   NOT NULL CHECK (status IN ('collecting', 'released')),
    created_at   BIGINT NOT NULL,
    release_id   TEXT UNIQUE,
    released_at  BIGINT,
    -- The highest event_seq when the release committed: events above it arrived late (exact, unlike ms).
    released_event_seq BIGINT,
    CHECK ((status = 'released') = (release_id IS NOT NULL AND released_at IS NOT NULL))
);
-- At most one batch is collecting at any time.
CREATE UNIQUE INDEX cs_batch_one_collecting ON cs_batch ((status)) WHERE status = 'collecting';

-- session_number comes from one global identity: unique within every batch, increasing, gaps allowed.
-- A per-batch counter would serialise every registration on the batch row.
CREATE TABLE cs_session (
    session_number    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id        TEXT    NOT NULL UNIQUE,
    batch_id          TEXT    NOT NULL REFERENCES cs_batch (batch_id),
    search_query      TEXT,
    search_results    JSONB   NOT NULL DEFAULT '[]',
    search_meta       JSONB,
    payload_filter    JSONB,
    sort_by           JSONB,
    user_id           TEXT,
    created_at        BIGINT  NOT NULL,
    is_irrelevant     BOOLEAN NOT NULL DEFAULT FALSE,
    is_payload_search BOOLEAN NOT NULL DEFAULT FALSE,
    content_hash      TEXT    NOT NULL,
    registered_at     BIGINT  NOT NULL
);
CREATE INDEX cs_session_batch_number ON cs_session (batch_id, session_number);
CREATE INDEX cs_session_user ON cs_session (user_id) WHERE user_id IS NOT NULL;

-- Events are keyed by session_id, not by a foreign key: they may arrive before their session.
-- event_seq is the arrival order (tie-break after created_at).
CREATE TABLE cs_event (
    event_seq   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    object_id   TEXT   NOT NULL,
    event_type  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    meta        JSONB,
    received_at BIGINT NOT NULL,
    UNIQUE (session_id, event_id)
);
CREATE INDEX cs_event_session_order ON cs_event (session_id, created_at, event_seq);

CREATE TABLE cs_improvement_mark (
    session_id  TEXT PRIMARY KEY REFERENCES cs_session (session_id) ON DELETE CASCADE,
    status      TEXT    NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    last_error  TEXT
);
CREATE INDEX cs_improvement_mark_pending ON cs_improvement_mark (created_at) WHERE status = 'pending';
