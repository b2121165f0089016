-- PostgreSQL parts of the history import (see import.sql): import.sqlite.sql has the SQLite version of each,
-- except import_copy_* (PostgreSQL only; SQLite stages with import_stage_*). Staging tables live in pg_temp:
-- private to the connection, unlogged, gone with it (and dropped explicitly, since pooled connections live on).

-- name: import_drop_stage_sessions
-- Drops the connection's staged-sessions table, if any (before staging and after the load).
DROP TABLE IF EXISTS pg_temp.cs_stage_session

-- name: import_drop_stage_events
-- Drops the connection's staged-events table, if any (before staging and after the load).
DROP TABLE IF EXISTS pg_temp.cs_stage_event

-- name: import_create_stage_sessions
-- Creates the staged session rows' temp table (seq: position in the import; events: the row's embedded
-- events as a JSON array, when the fast path validated it; conflict: see import.sql).
CREATE TEMP TABLE cs_stage_session (
    seq               BIGINT  PRIMARY KEY,
    file_no           INTEGER NOT NULL,
    line              BIGINT  NOT NULL,
    session_id        TEXT    NOT NULL,
    search_query      TEXT,
    search_results    JSONB   NOT NULL,
    search_meta       JSONB,
    payload_filter    JSONB,
    sort_by           JSONB,
    user_id           TEXT,
    created_at        BIGINT  NOT NULL,
    is_irrelevant     BOOLEAN NOT NULL,
    is_payload_search BOOLEAN NOT NULL,
    content_hash      TEXT    NOT NULL,
    events            JSONB,
    conflict          BOOLEAN NOT NULL DEFAULT FALSE
)

-- name: import_index_stage_sessions
-- Indexes staged sessions by (session_id, seq): the first row of an id, and the conflict check.
CREATE INDEX cs_stage_session_id ON pg_temp.cs_stage_session (session_id, seq)

-- name: import_create_stage_events
-- Creates the staged events' temp table (seq: the row that carried the event; pos: its place in it).
CREATE TEMP TABLE cs_stage_event (
    seq        BIGINT  NOT NULL,
    pos        INTEGER NOT NULL,
    session_id TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    object_id  TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    meta       JSONB
)

-- name: import_copy_sessions
-- PostgreSQL only: COPY target for staged session rows, run through psycopg's cursor.copy (not db.run).
-- COPY (text format): JSON columns arrive as JSON text and are parsed by the jsonb input function.
COPY cs_stage_session (seq, file_no, line, session_id, search_query, search_results, search_meta,
                       payload_filter, sort_by, user_id, created_at, is_irrelevant, is_payload_search,
                       content_hash, events) FROM STDIN

-- name: import_copy_events
-- PostgreSQL only: COPY target for staged events, run through psycopg's cursor.copy (not db.run).
COPY cs_stage_event (seq, pos, session_id, event_id, object_id, event_type, created_at, meta) FROM STDIN

-- name: import_analyze_stage
-- Planner statistics on the staging tables, before the load (import_load runs it on PostgreSQL).
-- Only the columns the load joins and filters on: statistics of the JSONB columns are costly and unused.
ANALYZE pg_temp.cs_stage_session (seq, session_id, conflict), pg_temp.cs_stage_event (seq, session_id, event_id)

-- name: import_load_settings
-- Settings of the load's transaction (import_load runs it first on PostgreSQL): no JIT. The planner expects
-- 100 events per jsonb_array_elements call, so at 50,000 sessions the events insert crossed the thresholds
-- for JIT inlining and optimisation: 0.48 s of compilation for a 3.7 s statement.
SET LOCAL jit = off

-- name: import_collecting_batch
-- The collecting batch's id, locked until the import commits; no row: none is collecting.
-- The same lock as live registration (insert_session): FOR SHARE on the collecting batch row, held until
-- the import commits, so a release (an UPDATE of that row) waits for the import and the imported sessions
-- never land in a released batch. If a release committed while we waited, the re-checked row is no longer
-- collecting: no row comes back, and the caller opens a new batch (insert_collecting_batch) and retries.
SELECT batch_id FROM cs_batch WHERE status = 'collecting' FOR SHARE

-- name: import_staged_counts
-- Valid staged rows: sessions (conflicts excluded) and events (those of conflicting session rows excluded;
-- embedded JSON arrays counted by their length).
SELECT (SELECT count(*) FROM cs_stage_session WHERE NOT conflict) AS sessions,
       (SELECT count(*) FROM cs_stage_event e
        WHERE NOT EXISTS (SELECT 1 FROM cs_stage_session s WHERE s.seq = e.seq AND s.conflict))
       + (SELECT coalesce(sum(jsonb_array_length(events)), 0) FROM cs_stage_session
          WHERE NOT conflict AND events IS NOT NULL) AS events

-- name: import_insert_events
-- Inserts the events of the import in file order (their arrival order): staged event rows and the JSON
-- arrays of staged session rows, except the events of a conflicting session row. Duplicates (session_id,
-- event_id), stored or repeated in the files, are skipped, and so are the events of tombstoned (erased)
-- sessions (counted as duplicates).
INSERT INTO cs_event (session_id, event_id, object_id, event_type, created_at, meta, received_at)
SELECT e.session_id, e.event_id, e.object_id, e.event_type, e.created_at, e.meta, :now
FROM (SELECT seq, pos, session_id, event_id, object_id, event_type, created_at, meta
      FROM cs_stage_event
      WHERE NOT EXISTS (SELECT 1 FROM cs_stage_session s WHERE s.seq = cs_stage_event.seq AND s.conflict)
      UNION ALL
      SELECT s.seq, x.pos - 1, s.session_id, x.e ->> 'event_id', x.e ->> 'object_id', x.e ->> 'event_type',
             CAST(x.e ->> 'created_at' AS BIGINT), NULLIF(x.e -> 'meta', CAST('null' AS JSONB))
      FROM cs_stage_session s CROSS JOIN LATERAL jsonb_array_elements(s.events) WITH ORDINALITY AS x (e, pos)
      WHERE s.events IS NOT NULL AND NOT s.conflict) e
WHERE NOT EXISTS (SELECT 1 FROM cs_event c WHERE c.session_id = e.session_id AND c.event_id = e.event_id)
  AND NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = e.session_id)
ORDER BY e.seq, e.pos
ON CONFLICT (session_id, event_id) DO NOTHING
