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
-- Creates the staged session rows' temp table (seq: position in the import; events: the row's embedded
-- events as a JSON array, when the fast path validated it; conflict: see import.sql).
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
    events            TEXT,
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
                                   is_payload_search, content_hash, events)
VALUES (:seq, :file_no, :line, :session_id, :search_query, :search_results, :search_meta, :payload_filter,
        :sort_by, :user_id, :created_at, :is_irrelevant, :is_payload_search, :content_hash, :events)

-- name: import_stage_event
-- SQLite only: stages one event (run with a list of rows: executemany).
INSERT INTO temp.cs_stage_event (seq, pos, session_id, event_id, object_id, event_type, created_at, meta)
VALUES (:seq, :pos, :session_id, :event_id, :object_id, :event_type, :created_at, :meta)

-- name: import_collecting_batch
-- The collecting batch's id; no row: none is collecting.
-- The final load runs under BEGIN IMMEDIATE (the store's write lock): no release can commit meanwhile.
SELECT batch_id FROM cs_batch WHERE status = 'collecting'

-- name: import_staged_counts
-- Valid staged rows: sessions (conflicts excluded) and events (those of conflicting session rows excluded;
-- embedded JSON arrays counted by their length).
SELECT (SELECT count(*) FROM cs_stage_session WHERE NOT conflict) AS sessions,
       (SELECT count(*) FROM cs_stage_event e
        WHERE NOT EXISTS (SELECT 1 FROM cs_stage_session s WHERE s.seq = e.seq AND s.conflict))
       + (SELECT coalesce(sum(json_array_length(events)), 0) FROM cs_stage_session
          WHERE NOT conflict AND events IS NOT NULL) AS events

-- name: import_insert_events
-- Inserts the events of the import in file order (their arrival order): staged event rows and the JSON
-- arrays of staged session rows, except the events of a conflicting session row. Duplicates (session_id,
-- event_id), stored or repeated in the files, are skipped, and so are the events of tombstoned (erased)
-- sessions (counted as duplicates).
INSERT INTO cs_event (session_id, event_id, object_id, event_type, created_at, meta, received_at)
SELECT e.session_id, e.event_id, e.object_id, e.event_type, e.created_at, e.meta, :now
FROM (SELECT seq, pos, session_id, event_id, object_id, event_type, created_at, meta
      FROM temp.cs_stage_event
      WHERE NOT EXISTS (SELECT 1 FROM temp.cs_stage_session s WHERE s.seq = cs_stage_event.seq AND s.conflict)
      UNION ALL
      SELECT s.seq, CAST(j.key AS INTEGER), s.session_id, json_extract(j.value, '$.event_id'),
             json_extract(j.value, '$.object_id'), json_extract(j.value, '$.event_type'),
             json_extract(j.value, '$.created_at'), json_extract(j.value, '$.meta')
      FROM temp.cs_stage_session s, json_each(s.events) j
      WHERE s.events IS NOT NULL AND NOT s.conflict) e
WHERE NOT EXISTS (SELECT 1 FROM cs_event c WHERE c.session_id = e.session_id AND c.event_id = e.event_id)
  AND NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = e.session_id)
ORDER BY e.seq, e.pos
ON CONFLICT (session_id, event_id) DO NOTHING
