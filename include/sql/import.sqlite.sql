-- SQLite parts of the history import (see import.sql): import.postgresql.sql has the PostgreSQL version of
-- each, except import_stage_* (SQLite only; PostgreSQL stages with COPY, import_copy_*). Staging tables live
-- in the connection's temp database, so staging takes no lock on the store file; only the final load runs
-- under BEGIN IMMEDIATE.

-- name: import_drop_stage_sessions
-- Drops the connection's staged-sessions table, if any (before staging and after the load).
DROP TABLE IF EXISTS temp.cs_stage_session

-- name: import_drop_stage_events
-- Drops the connection's staged-events table, if any (before staging and after the load).
DROP TABLE IF EXISTS temp.cs_stage_event

-- name: import_create_stage_sessions
-- Creates the staged session rows' temp table (seq: position in the import; conflict: see import.sql).
CREATE TEMP TABLE cs_stage_session (
    seq               INTEGER PRIMARY KEY,
    file_no           INTEGER NOT NULL,
    line              INTEGER NOT NULL,
    session_id        TEXT    NOT NULL,
    search_query      TEXT,
    search_results    TEXT    NOT NULL,
    search_meta       TEXT,
    payload_filter    TEXT,
    sort_by           TEXT,
    user_id           TEXT,
    created_at        BIGINT  NOT NULL,
    is_irrelevant     INTEGER NOT NULL,
    is_payload_search INTEGER NOT NULL,
    content_hash      TEXT    NOT NULL,
    conflict          INTEGER NOT NULL DEFAULT FALSE
)

-- name: import_index_stage_sessions
-- Indexes staged sessions by (session_id, seq): the first row of an id, and the conflict check.
CREATE INDEX temp.cs_stage_session_id ON cs_stage_session (session_id, seq)

-- name: import_create_stage_events
-- Creates the staged events' temp table (seq: the row that carried the event; pos: its place in it).
CREATE TEMP TABLE cs_stage_event (
    seq        INTEGER NOT NULL,
    pos        INTEGER NOT NULL,
    session_id TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    object_id  TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    meta       TEXT
)

-- name: import_stage_session
-- SQLite only: stages one session row (run with a list of rows: executemany).
INSERT INTO temp.cs_stage_session (seq, file_no, line, session_id, search_query, search_results, search_meta,
                                   payload_filter, sort_by, user_id, created_at, is_irrelevant,
                                   is_payload_search, content_hash)
VALUES (:seq, :file_no, :line, :session_id, :search_query, :search_results, :search_meta, :payload_filter,
        :sort_by, :user_id, :created_at, :is_irrelevant, :is_payload_search, :content_hash)

-- name: import_stage_event
-- SQLite only: stages one event (run with a list of rows: executemany).
INSERT INTO temp.cs_stage_event (seq, pos, session_id, event_id, object_id, event_type, created_at, meta)
VALUES (:seq, :pos, :session_id, :event_id, :object_id, :event_type, :created_at, :meta)

-- name: import_collecting_batch
-- The collecting batch's id; no row: none is collecting.
-- The final load runs under BEGIN IMMEDIATE (the store's write lock): no release can commit meanwhile.
SELECT batch_id FROM cs_batch WHERE status = 'collecting'
