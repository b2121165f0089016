-- The history import's load (clickstream.store.import_load), shared by every dialect. A dialect file
-- (import.<dialect>.sql) adds what differs: the staging tables (drop, create, index), the staging itself
-- (PostgreSQL: COPY, import_copy_*; SQLite: INSERT, import_stage_*), import_analyze_stage and the batch lock
-- (import_collecting_batch). Loaded after queries*.sql; every name here is new (none repeats a name of
-- queries*.sql). Same format and conventions as queries.sql (see its header).
--
-- Flow: rows are staged into the connection's private temp tables cs_stage_session / cs_stage_event
-- (COPY on PostgreSQL, executemany on SQLite), in short transactions that touch no shared table. A session
-- row's embedded events are staged with it as one JSON array (cs_stage_session.events) when the import's
-- fast path validated the row, else one cs_stage_event row each. Then ONE
-- write transaction locks the collecting batch (import_collecting_batch), inserts the new sessions and
-- events, marks conflicts, and commits only if the invalid share stays within the threshold (else it
-- rolls back: nothing is loaded). seq is the row's position in the whole import (file order).

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
