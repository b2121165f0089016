-- Named queries shared by every dialect. A dialect file (queries.<dialect>.sql) overrides a name.
-- Format: a line "-- name: <name>" starts a query; it runs to the next such line.
-- Bind parameters use :name. No "::" casts here (they clash with :name): write CAST(x AS t).

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS cs_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL
)

-- name: applied_migrations
SELECT version FROM cs_schema_migrations ORDER BY version

-- name: record_migration
INSERT INTO cs_schema_migrations (version, name, applied_at) VALUES (:version, :name, :now)

-- name: latest_batch_created_at
SELECT max(created_at) FROM cs_batch

-- name: insert_collecting_batch
-- The partial unique index cs_batch_one_collecting makes a concurrent second insert a no-op.
INSERT INTO cs_batch (batch_id, status, created_at) VALUES (:batch_id, 'collecting', :now)
ON CONFLICT DO NOTHING
RETURNING batch_id

-- name: session_registration
SELECT session_number, batch_id, content_hash FROM cs_session WHERE session_id = :session_id

-- name: get_session
SELECT session_number, session_id, batch_id, search_query, search_results, search_meta, payload_filter,
       sort_by, user_id, created_at, is_irrelevant, is_payload_search
FROM cs_session WHERE session_id = :session_id

-- name: get_session_events
SELECT event_id, object_id, event_type, created_at, meta
FROM cs_event WHERE session_id = :session_id
ORDER BY created_at, event_seq
LIMIT :events_limit

-- name: mark_irrelevant
UPDATE cs_session SET is_irrelevant = TRUE WHERE session_id = :session_id AND NOT is_irrelevant

-- name: session_exists
SELECT 1 FROM cs_session WHERE session_id = :session_id

-- name: insert_mark
INSERT INTO cs_improvement_mark (session_id, status, attempts, created_at, updated_at)
VALUES (:session_id, 'pending', 0, :now, :now)
ON CONFLICT (session_id) DO NOTHING
RETURNING session_id

-- name: get_mark
SELECT session_id, status, attempts, created_at, updated_at, last_error
FROM cs_improvement_mark WHERE session_id = :session_id

-- name: complete_mark
-- :attempt, when given, is the claim's attempt number: a worker whose claim went stale and was handed to
-- another worker cannot finish the mark any more.
UPDATE cs_improvement_mark SET status = 'done', updated_at = :now, last_error = NULL
WHERE session_id = :session_id AND status = 'processing'
  AND (CAST(:attempt AS INTEGER) IS NULL OR attempts = :attempt)
RETURNING session_id, status, attempts, created_at, updated_at, last_error

-- name: fail_mark
-- Back to pending for another attempt, or failed for good once max_attempts is reached.
UPDATE cs_improvement_mark
SET status = CASE WHEN attempts >= :max_attempts THEN 'failed' ELSE 'pending' END,
    last_error = :error, updated_at = :now
WHERE session_id = :session_id AND status = 'processing'
  AND (CAST(:attempt AS INTEGER) IS NULL OR attempts = :attempt)
RETURNING session_id, status, attempts, created_at, updated_at, last_error

-- name: fail_abandoned_marks
-- A mark whose workers kept dying (stale in processing, attempts used up) ends as failed, not reclaimed forever.
UPDATE cs_improvement_mark
SET status = 'failed', updated_at = :now,
    last_error = 'abandoned: no worker finished it within the claim timeout, ' || attempts || ' attempt(s)'
WHERE status = 'processing' AND updated_at < :stale_before AND attempts >= :max_attempts

-- name: find_release
SELECT release_id, batch_id, released_at FROM cs_batch WHERE release_id = :release_id

-- name: release_collecting
-- Waits for registrations holding the batch row (FOR SHARE on PostgreSQL); re-checked after they commit.
UPDATE cs_batch SET status = 'released', release_id = :release_id, released_at = :now,
                    released_event_seq = (SELECT coalesce(max(event_seq), 0) FROM cs_event)
WHERE status = 'collecting'
RETURNING release_id, batch_id, released_at

-- name: get_batch
SELECT batch_id, status, created_at, release_id, released_at FROM cs_batch WHERE batch_id = :batch_id

-- name: batch_number_stats
SELECT count(*) AS sessions, min(session_number) AS min_number, max(session_number) AS max_number
FROM cs_session WHERE batch_id = :batch_id

-- name: list_batches
SELECT batch_id, status, created_at, release_id, released_at FROM cs_batch
WHERE (CAST(:status AS TEXT) IS NULL OR status = :status)
ORDER BY created_at DESC, batch_id DESC
LIMIT :limit

-- name: batch_session_counts
SELECT count(*) AS sessions,
       coalesce(sum(CASE WHEN is_irrelevant THEN 1 ELSE 0 END), 0) AS irrelevant
FROM cs_session WHERE batch_id = :batch_id

-- name: batch_event_counts
SELECT count(e.event_seq) AS events,
       count(e.event_seq) FILTER (WHERE e.event_type = 'click') AS clicks,
       count(DISTINCT e.session_id) FILTER (WHERE e.event_type = 'click') AS sessions_with_click,
       count(e.event_seq) FILTER (WHERE e.event_seq > b.released_event_seq) AS late_events
FROM cs_session s
JOIN cs_batch b ON b.batch_id = s.batch_id
JOIN cs_event e ON e.session_id = s.session_id
WHERE s.batch_id = :batch_id

-- name: batch_mark_classes
-- How each session of a batch stands for improvement; feeds the counts of mark_batch_eligible.
SELECT count(*) FILTER (WHERE m.session_id IS NOT NULL) AS already_marked,
       count(*) FILTER (WHERE m.session_id IS NULL AND s.is_payload_search) AS skipped_payload_search,
       count(*) FILTER (WHERE m.session_id IS NULL AND NOT s.is_payload_search AND NOT s.is_irrelevant
                              AND NOT EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id
                                              AND __EVENT_ON_RESULT__)) AS skipped_no_events
FROM cs_session s
LEFT JOIN cs_improvement_mark m ON m.session_id = s.session_id
WHERE s.batch_id = :batch_id

-- name: mark_batch_eligible
INSERT INTO cs_improvement_mark (session_id, status, attempts, created_at, updated_at)
SELECT s.session_id, 'pending', 0, :now, :now
FROM cs_session s
WHERE s.batch_id = :batch_id AND NOT s.is_payload_search
  AND (s.is_irrelevant OR EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id
                                  AND __EVENT_ON_RESULT__))
ON CONFLICT (session_id) DO NOTHING

-- name: improvement_status
SELECT s.is_payload_search, s.is_irrelevant,
       EXISTS (SELECT 1 FROM cs_improvement_mark m WHERE m.session_id = s.session_id) AS marked,
       EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id AND __EVENT_ON_RESULT__) AS has_event_on_result
FROM cs_session s WHERE s.session_id = :session_id

-- name: user_batches
SELECT DISTINCT batch_id FROM cs_session WHERE user_id = :user_id ORDER BY batch_id

-- name: erase_user_events
DELETE FROM cs_event WHERE session_id IN (SELECT session_id FROM cs_session WHERE user_id = :user_id)

-- name: erase_user_marks
DELETE FROM cs_improvement_mark WHERE session_id IN (SELECT session_id FROM cs_session WHERE user_id = :user_id)

-- name: erase_user_sessions
DELETE FROM cs_session WHERE user_id = :user_id
