-- The history import's queries on PostgreSQL (clickstream.store.history_load): the direct load. SQLite has its
-- own, different load (import.sqlite.sql: staged in temp tables, loaded at the end); no name is shared, so
-- there is no import.sql.
--
-- Flow: ONE write transaction, open from the import's first chunk of valid rows to its commit. It first takes
-- the store's tables as every live write does (import_lock_tables), then, for each chunk while the caller
-- reads the next one: reads which of the chunk's sessions and events are stored or erased
-- (import_stored_sessions, import_erased_sessions, import_stored_events), and COPYs the new rows straight
-- into cs_session and cs_event in file order (import_copy_new_*), inside a savepoint (a live write of the
-- same key committing in between makes the COPY fail on the unique index: the chunk is read and copied
-- again). The new sessions go to the collecting batch, locked FOR SHARE at the first of them
-- (import_collecting_batch) until the commit. The transaction commits only if the invalid share stays within
-- the threshold (else it rolls back: nothing is loaded). Rows copied by an earlier chunk are stored rows to a
-- later one, so a session's first row in file order is the one stored.

-- name: import_lock_tables
-- Takes cs_session and cs_event as an INSERT does (ROW EXCLUSIVE), before the first read of the load: an
-- erasure (lock_for_erasure) then either committed before, and its tombstones are seen by every chunk's
-- reads, or waits until this load commits.
LOCK TABLE cs_session, cs_event IN ROW EXCLUSIVE MODE

-- name: import_stored_sessions
-- The stored sessions among :ids (session_id, content_hash): a chunk's session rows of those ids are
-- duplicates (same content) or conflicts (other content).
SELECT session_id, content_hash FROM cs_session WHERE session_id = ANY(:ids)

-- name: import_erased_sessions
-- The tombstoned (erased) session ids among :ids: their session rows and events are not stored again.
SELECT session_id FROM cs_erased_session WHERE session_id = ANY(:ids)

-- name: import_stored_events
-- The stored events (session_id, event_id) of the sessions :ids: a chunk's events with those keys are
-- duplicates. One index range per session (cs_event's unique (session_id, event_id)).
SELECT session_id, event_id FROM cs_event WHERE session_id = ANY(:ids)

-- name: import_collecting_batch
-- The collecting batch's id, locked until the import commits; no row: none is collecting.
-- The same lock as live registration (insert_session): FOR SHARE on the collecting batch row, held until
-- the import commits, so a release (an UPDATE of that row) waits for the import and the imported sessions
-- never land in a released batch. If a release committed while we waited, the re-checked row is no longer
-- collecting: no row comes back, and the caller opens a new batch (insert_collecting_batch) and retries.
SELECT batch_id FROM cs_batch WHERE status = 'collecting' FOR SHARE

-- name: import_drop_opened_batch
-- Deletes the collecting batch a refused or failed import opened (in a transaction of its own), if no
-- session is in it. A live registration that joined it meanwhile makes the foreign key refuse the delete:
-- the caller then keeps the batch.
DELETE FROM cs_batch
WHERE batch_id = :batch_id AND status = 'collecting'
  AND NOT EXISTS (SELECT 1 FROM cs_session s WHERE s.batch_id = :batch_id)

-- name: import_copy_new_sessions
-- COPY target for a chunk's new sessions, in file order (session_number follows it), run by
-- Database.copy_rows (not db.run). Text format: JSON columns arrive as JSON text for the jsonb input function.
-- The columns: clickstream.store.rows.SESSION_COLUMNS, then batch_id and registered_at.
COPY cs_session (session_id, search_query, search_results, search_meta, payload_filter, sort_by, user_id,
                 created_at, is_irrelevant, is_payload_search, content_hash, batch_id, registered_at) FROM STDIN

-- name: import_copy_new_events
-- COPY target for a chunk's new events, in file order (their arrival order: event_seq follows it), run by
-- Database.copy_rows (not db.run). The columns: session_id, clickstream.store.rows.EVENT_COLUMNS, received_at.
COPY cs_event (session_id, event_id, object_id, event_type, created_at, meta, received_at) FROM STDIN

-- name: import_purged_sessions
-- The ids among :ids tombstoned by a purge (cs_purged_session) and not registered (again): a chunk's events
-- of those sessions are not stored, and are counted as purged.
SELECT p.session_id FROM cs_purged_session p
WHERE p.session_id = ANY(:ids) AND NOT EXISTS (SELECT 1 FROM cs_session s WHERE s.session_id = p.session_id)

-- name: import_hold_releases
-- First statement of the load transaction: the lock lock_imports_for_release takes, shared (imports do not
-- wait for each other), held until the import commits or rolls back. A release waits for the import, and an
-- import starting while a release holds it waits for that release (a short transaction).
SELECT pg_advisory_xact_lock_shared(4242057026)
