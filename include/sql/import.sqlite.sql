-- The history import's queries on SQLite (clickstream.store.history_load): the staged load. PostgreSQL has its
-- own, different load (import.postgresql.sql: no staging table, COPY straight into the store's tables); no
-- name is shared, so there is no import.sql.
--
-- Flow: each chunk of valid rows is staged into the connection's temp tables cs_stage_session /
-- cs_stage_event (import_stage_*, executemany) in its own short transaction: the temp database takes no lock
-- on the store file. A session row's embedded events are staged with it as one JSON array
-- (cs_stage_session.events) when the import's fast path validated the row, else one cs_stage_event row each.
-- After the last chunk, ONE write transaction (BEGIN IMMEDIATE: SQLite's write lock, so no release commits
-- meanwhile) finds the collecting batch (import_collecting_batch), inserts the new sessions and events, marks
-- conflicts, and commits only if the invalid share stays within the threshold (else it rolls back: nothing
-- is loaded). seq is the row's position in the whole import (file order).

-- name: import_drop_stage_sessions
-- Drops the connection's staged-sessions table, if any (before staging and after the load).
DROP TABLE IF EXISTS temp.cs_stage_session

-- name: import_drop_stage_events
-- Drops the connection's staged-events table, if any (before staging and after the load).
DROP TABLE IF EXISTS temp.cs_stage_event

-- name: import_create_stage_sessions
-- Creates the staged session rows' temp table (seq: position in the import; events: the row's embedded
-- events as a JSON array, when the fast path validated it; conflict: see import_mark_conflicts).
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
-- sessions (counted as duplicates), and those of a session of a purged batch that is not registered (counted
-- by import_purged_events).
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
  AND NOT (EXISTS (SELECT 1 FROM cs_purged_session p WHERE p.session_id = e.session_id)
           AND NOT EXISTS (SELECT 1 FROM cs_session c WHERE c.session_id = e.session_id))
ORDER BY e.seq, e.pos
ON CONFLICT (session_id, event_id) DO NOTHING

-- name: import_any_new_session
-- Whether any staged session_id is not stored yet: a re-run of the same files opens no batch.
SELECT EXISTS (SELECT 1 FROM cs_stage_session s
               WHERE NOT EXISTS (SELECT 1 FROM cs_session c WHERE c.session_id = s.session_id))

-- name: import_insert_sessions
-- Inserts the first staged row of each session_id not stored yet, in file order, into the locked collecting
-- batch. session_number comes from the same identity as live registration. NOT EXISTS spares identity
-- values on re-runs; ON CONFLICT covers a live registration of the same id racing this insert. Tombstoned
-- (erased) session ids are skipped (counted as duplicates).
INSERT INTO cs_session (session_id, batch_id, search_query, search_results, search_meta, payload_filter,
                        sort_by, user_id, created_at, is_irrelevant, is_payload_search, content_hash,
                        registered_at)
SELECT s.session_id, :batch_id, s.search_query, s.search_results, s.search_meta, s.payload_filter,
       s.sort_by, s.user_id, s.created_at, s.is_irrelevant, s.is_payload_search, s.content_hash, :now
FROM cs_stage_session s
WHERE s.seq = (SELECT min(f.seq) FROM cs_stage_session f WHERE f.session_id = s.session_id)
  AND NOT EXISTS (SELECT 1 FROM cs_session c WHERE c.session_id = s.session_id)
  AND NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = s.session_id)
ORDER BY s.seq
ON CONFLICT (session_id) DO NOTHING

-- name: import_mark_conflicts
-- Flags (conflict = TRUE) each staged session row whose content hash differs from the stored session's.
-- After the insert every staged session_id is stored (by this import, earlier, or by a racing live
-- registration): a staged row whose content differs from the stored one is a conflict, as in live
-- registration, and the stored session is kept.
UPDATE cs_stage_session SET conflict = TRUE
WHERE content_hash <> (SELECT c.content_hash FROM cs_session c WHERE c.session_id = cs_stage_session.session_id)

-- name: import_conflict_count
-- How many staged session rows conflict with the stored sessions.
SELECT count(*) FROM cs_stage_session WHERE conflict

-- name: import_conflict_rows
-- Where the first :limit conflicting rows are (file_no, line, session_id), in file order.
SELECT file_no, line, session_id FROM cs_stage_session WHERE conflict ORDER BY seq LIMIT :limit

-- name: import_purged_events
-- How many of the import's events (those of conflicting session rows excluded) belong to a session tombstoned
-- by a purge (cs_purged_session) and not registered: import_insert_events skips them. Run after
-- import_insert_sessions (a session row of the import registers its id again) and before the events' insert.
SELECT count(*)
FROM (SELECT session_id FROM temp.cs_stage_event
      WHERE NOT EXISTS (SELECT 1 FROM temp.cs_stage_session s WHERE s.seq = cs_stage_event.seq AND s.conflict)
      UNION ALL
      SELECT s.session_id FROM temp.cs_stage_session s, json_each(s.events) j
      WHERE s.events IS NOT NULL AND NOT s.conflict) e
WHERE EXISTS (SELECT 1 FROM cs_purged_session p WHERE p.session_id = e.session_id)
  AND NOT EXISTS (SELECT 1 FROM cs_session c WHERE c.session_id = e.session_id)
  AND NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = e.session_id)
