-- Named queries shared by every dialect: those whose SQL is the same on PostgreSQL and SQLite.
--
-- Files (loaded by clickstream.store.sql.queries(dialect), in this order):
--   queries.sql              this file: the queries every dialect runs unchanged (fragments aside).
--   queries.<dialect>.sql    adds the queries that differ per dialect (each dialect file has its own
--                            version, e.g. insert_session, claim_marks, batch_page) and those that exist
--                            for one dialect only (PostgreSQL's lock_* queries, SQLite's
--                            count_events_over_limit).
--   import.<dialect>.sql    the history import's queries (clickstream.store.history_load): each dialect has
--                            its own load, so there is no shared import.sql (the loader would take one).
-- A name lives in exactly one file of a dialect's set: no dialect file overrides a name of this file today
-- (the loader would let the later file win; tests/store/test_sql_files.py fails on any such repeat that it
-- does not list as an intended override).
--
-- Dialect differences are told by a query's presence, not by the dialect's name: the Python side asks
-- Database.has("lock_batch_creation") and so on, so a step one dialect does not need (SQLite's write lock
-- makes PostgreSQL's explicit locks unnecessary) is a query that is simply not defined for it. (Exception
-- today: history_load loads rows with COPY, a psycopg feature, on PostgreSQL, and with INSERTs elsewhere.)
--
-- Format: a line "-- name: <name>" starts a query; it runs to the next such line. The first comment line
-- after it says what the query does or returns; comment lines in a body are dropped when loading.
-- Names wrapped in __ (e.g. __EVENT_ON_RESULT__) are fragments: each dialect file defines them (or this file,
-- for one every dialect shares, e.g. __BATCH_SUMMARY__), and their text replaces the name in every query of
-- that dialect (shared ones included).
-- Bind parameters use :name. No "::" casts (they clash with :name): write CAST(x AS t).

-- name: create_migrations_table
-- Creates cs_schema_migrations (one row a migration applied) if missing; first step of every migration run.
CREATE TABLE IF NOT EXISTS cs_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL
)

-- name: applied_migrations
-- Versions of the migrations already applied, ascending.
SELECT version FROM cs_schema_migrations ORDER BY version

-- name: record_migration
-- Records a migration as applied (version, name, time), in the transaction that applied it.
INSERT INTO cs_schema_migrations (version, name, applied_at) VALUES (:version, :name, :now)

-- name: latest_batch_created_at
-- The newest batch's created_at (NULL with no batch yet): a new batch is created later than it.
SELECT max(created_at) FROM cs_batch

-- name: insert_collecting_batch
-- Opens a new collecting batch; returns its batch_id, or no row when one is collecting already.
-- The partial unique index cs_batch_one_collecting makes a concurrent second insert a no-op.
INSERT INTO cs_batch (batch_id, status, created_at) VALUES (:batch_id, 'collecting', :now)
ON CONFLICT DO NOTHING
RETURNING batch_id

-- name: session_registration
-- A stored session's number, batch and content hash (no row: unknown session_id).
SELECT session_number, batch_id, content_hash FROM cs_session WHERE session_id = :session_id

-- name: get_session
-- One session's stored columns (no row: unknown session_id); its events come from get_session_events.
SELECT session_number, session_id, batch_id, search_query, search_results, search_meta, payload_filter,
       sort_by, user_id, created_at, is_irrelevant, is_payload_search
FROM cs_session WHERE session_id = :session_id

-- name: get_session_events
-- A session's events, earliest first (created_at, then arrival order), at most :events_limit.
SELECT event_id, object_id, event_type, created_at, meta
FROM cs_event WHERE session_id = :session_id
ORDER BY created_at, event_seq
LIMIT :events_limit

-- name: mark_irrelevant
-- Flags a session irrelevant; rowcount 1 only if it was not flagged yet (0: flagged already, or unknown).
UPDATE cs_session SET is_irrelevant = TRUE WHERE session_id = :session_id AND NOT is_irrelevant

-- name: session_exists
-- One row if session_id is registered: tells mark_irrelevant's "unchanged" from "not found".
SELECT 1 FROM cs_session WHERE session_id = :session_id

-- name: insert_mark
-- Queues a session for improvement (a pending mark); returns its session_id, or no row if already marked.
INSERT INTO cs_improvement_mark (session_id, status, attempts, created_at, updated_at)
VALUES (:session_id, 'pending', 0, :now, :now)
ON CONFLICT (session_id) DO NOTHING
RETURNING session_id

-- name: get_mark
-- A session's improvement mark (no row: it has none).
SELECT session_id, status, attempts, created_at, updated_at, last_error
FROM cs_improvement_mark WHERE session_id = :session_id

-- name: complete_mark
-- Finishes a claimed (processing) mark as done; returns the mark, or no row if it is not processing.
-- :attempt, when given, is the claim's attempt number: a worker whose claim went stale and was handed to
-- another worker cannot finish the mark any more.
UPDATE cs_improvement_mark SET status = 'done', updated_at = :now, last_error = NULL
WHERE session_id = :session_id AND status = 'processing'
  AND (CAST(:attempt AS INTEGER) IS NULL OR attempts = :attempt)
RETURNING session_id, status, attempts, created_at, updated_at, last_error

-- name: fail_mark
-- Finishes a claimed (processing) mark as failed with :error; returns the mark, or no row as complete_mark.
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
-- The release made under :release_id (release_id, batch_id, released_at), if any: releases are idempotent.
SELECT release_id, batch_id, released_at FROM cs_batch WHERE release_id = :release_id

-- name: release_collecting
-- Releases the collecting batch under :release_id, with the late-event watermark; returns it, or no row.
-- Waits for registrations holding the batch row (FOR SHARE on PostgreSQL); re-checked after they commit.
UPDATE cs_batch SET status = 'released', release_id = :release_id, released_at = :now,
                    released_event_seq = (SELECT coalesce(max(event_seq), 0) FROM cs_event)
WHERE status = 'collecting'
RETURNING release_id, batch_id, released_at

-- name: get_batch
-- A batch's row: status, creation and release (no row: unknown batch_id).
SELECT batch_id, status, created_at, release_id, released_at FROM cs_batch WHERE batch_id = :batch_id

-- name: batch_number_stats
-- How many sessions a batch holds and the range of their session numbers.
SELECT count(*) AS sessions, min(session_number) AS min_number, max(session_number) AS max_number
FROM cs_session WHERE batch_id = :batch_id

-- name: list_batches
-- Batches, newest first, at most :limit, only those of :status unless it is NULL.
SELECT batch_id, status, created_at, release_id, released_at FROM cs_batch
WHERE (CAST(:status AS TEXT) IS NULL OR status = :status)
ORDER BY created_at DESC, batch_id DESC
LIMIT :limit

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
-- Queues every unmarked session of a batch that is eligible (as improvement_status); rowcount: marks added.
INSERT INTO cs_improvement_mark (session_id, status, attempts, created_at, updated_at)
SELECT s.session_id, 'pending', 0, :now, :now
FROM cs_session s
WHERE s.batch_id = :batch_id AND NOT s.is_payload_search
  AND (s.is_irrelevant OR EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id
                                  AND __EVENT_ON_RESULT__))
ON CONFLICT (session_id) DO NOTHING

-- name: improvement_status
-- Whether a session can be queued for improvement: its flags, marked already, an event on one of its results.
SELECT s.is_payload_search, s.is_irrelevant,
       EXISTS (SELECT 1 FROM cs_improvement_mark m WHERE m.session_id = s.session_id) AS marked,
       EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id AND __EVENT_ON_RESULT__) AS has_event_on_result
FROM cs_session s WHERE s.session_id = :session_id

-- name: user_batches
-- The batches holding sessions of :user_id (reported by the erasure).
SELECT DISTINCT batch_id FROM cs_session WHERE user_id = :user_id ORDER BY batch_id

-- name: insert_user_tombstones
-- Erasure: records a tombstone for each of :user_id's sessions (before they are deleted).
INSERT INTO cs_erased_session (session_id, erased_at)
SELECT session_id, :now FROM cs_session WHERE user_id = :user_id
ON CONFLICT (session_id) DO NOTHING

-- name: session_erased
-- Whether :session_id is tombstoned (its user was erased): one row, or none.
SELECT 1 FROM cs_erased_session WHERE session_id = :session_id

-- name: erase_user_events
-- Erasure: deletes the events of :user_id's sessions (before the sessions, which the subquery reads).
DELETE FROM cs_event WHERE session_id IN (SELECT session_id FROM cs_session WHERE user_id = :user_id)

-- name: erase_user_marks
-- Erasure: deletes the improvement marks of :user_id's sessions.
DELETE FROM cs_improvement_mark WHERE session_id IN (SELECT session_id FROM cs_session WHERE user_id = :user_id)

-- name: erase_user_sessions
-- Erasure: deletes :user_id's sessions (last: the other erase_user_* queries find them through it).
DELETE FROM cs_session WHERE user_id = :user_id

-- name: purgeable_batches
-- Released batches released before :released_before (ms), oldest first, at most :limit: retention's candidates.
SELECT batch_id, status, created_at, release_id, released_at FROM cs_batch
WHERE status = 'released' AND released_at < :released_before
ORDER BY released_at, batch_id
LIMIT :limit

-- name: purge_chunk_events
-- Retention: deletes the events of the first :limit sessions (by number) still in released batch :batch_id.
DELETE FROM cs_event WHERE session_id IN (
    SELECT session_id FROM cs_session WHERE batch_id = :batch_id ORDER BY session_number LIMIT :limit)

-- name: purge_chunk_marks
-- Retention: deletes the improvement marks of the same chunk of sessions (run before purge_chunk_sessions).
DELETE FROM cs_improvement_mark WHERE session_id IN (
    SELECT session_id FROM cs_session WHERE batch_id = :batch_id ORDER BY session_number LIMIT :limit)

-- name: purge_chunk_sessions
-- Retention: deletes the same chunk of sessions (last: the other purge_chunk_* queries find them through it).
DELETE FROM cs_session WHERE session_number IN (
    SELECT session_number FROM cs_session WHERE batch_id = :batch_id ORDER BY session_number LIMIT :limit)

-- name: delete_released_batch
-- Retention: deletes the row of released batch :batch_id once its sessions are gone (never a collecting one).
DELETE FROM cs_batch WHERE batch_id = :batch_id AND status = 'released'

-- name: erasure_generation
-- How many sessions were ever erased (tombstones are never deleted): read FIRST in a metrics snapshot, so a
-- keep-write seeing another count knows a user was erased since (store_batch_metrics).
SELECT count(*) FROM cs_erased_session

-- name: store_batch_metrics
-- Keeps the metrics and position curve of released batch :batch_id (cs_batch_metrics); rowcount 1: kept.
-- Nothing is kept for a batch that is not released (or gone), when a user was erased since the snapshot
-- the metrics were read in (the tombstone count is no longer :generation; run after lock_erasures on
-- PostgreSQL, under SQLite's write lock elsewhere, so an erasure in flight has committed first), or over a
-- kept computation that saw more: events and irrelevant flags only grow in a released batch (an erasure
-- deletes the kept row), so a computation seeing fewer read an older snapshot. No clock decides anything.
INSERT INTO cs_batch_metrics (batch_id, sessions, events, clicks, sessions_with_click, click_through_rate,
                              mean_reciprocal_rank, no_click_rate, irrelevant_rate, late_events, positions,
                              computed_at)
SELECT CAST(:batch_id AS TEXT), CAST(:sessions AS BIGINT), CAST(:events AS BIGINT), CAST(:clicks AS BIGINT),
       CAST(:sessions_with_click AS BIGINT), CAST(:click_through_rate AS DOUBLE PRECISION),
       CAST(:mean_reciprocal_rank AS DOUBLE PRECISION), CAST(:no_click_rate AS DOUBLE PRECISION),
       CAST(:irrelevant_rate AS DOUBLE PRECISION), CAST(:late_events AS BIGINT), CAST(:positions AS TEXT),
       CAST(:computed_at AS BIGINT)
WHERE EXISTS (SELECT 1 FROM cs_batch b WHERE b.batch_id = :batch_id AND b.status = 'released')
  AND (SELECT count(*) FROM cs_erased_session) = :generation
ON CONFLICT (batch_id) DO UPDATE
SET sessions = excluded.sessions, events = excluded.events, clicks = excluded.clicks,
    sessions_with_click = excluded.sessions_with_click, click_through_rate = excluded.click_through_rate,
    mean_reciprocal_rank = excluded.mean_reciprocal_rank, no_click_rate = excluded.no_click_rate,
    irrelevant_rate = excluded.irrelevant_rate, late_events = excluded.late_events,
    positions = excluded.positions, computed_at = excluded.computed_at
WHERE excluded.events >= cs_batch_metrics.events
  AND coalesce(excluded.irrelevant_rate, 0) >= coalesce(cs_batch_metrics.irrelevant_rate, 0)

-- name: kept_positions
-- The kept position curve of batch :batch_id (JSON [[shown, clicks], ...] for positions 1..); no row: none kept.
SELECT positions FROM cs_batch_metrics WHERE batch_id = :batch_id

-- name: released_without_metrics
-- Released batches without kept metrics, newest release first, at most :limit (what a backfill computes).
SELECT b.batch_id FROM cs_batch b
WHERE b.status = 'released' AND NOT EXISTS (SELECT 1 FROM cs_batch_metrics m WHERE m.batch_id = b.batch_id)
ORDER BY b.released_at DESC, b.batch_id DESC
LIMIT :limit

-- name: batch_counts
-- A batch's sessions and their events, counted (no click or late-event aggregation): a collecting batch's row.
SELECT (SELECT count(*) FROM cs_session WHERE batch_id = :batch_id) AS sessions,
       (SELECT count(*) FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
        WHERE s.batch_id = :batch_id) AS events

-- name: erase_user_batch_metrics
-- Erasure: forgets the stored metrics of the batches holding :user_id's sessions (computed again when read).
DELETE FROM cs_batch_metrics WHERE batch_id IN (SELECT batch_id FROM cs_session WHERE user_id = :user_id)

-- name: record_dataset
-- Records the dataset manifest (path or URI) of released batch :batch_id; rowcount 0: unknown or collecting.
UPDATE cs_batch SET dataset = :dataset WHERE batch_id = :batch_id AND status = 'released'

-- name: __BATCH_SUMMARY__
-- Fragment: each batch b with its stored metrics m (all NULL, metrics_computed_at too, when it has none).
SELECT b.batch_id, b.status, b.created_at, b.release_id, b.released_at, b.dataset,
       m.computed_at AS metrics_computed_at, m.sessions, m.events, m.click_through_rate, m.mean_reciprocal_rank,
       m.no_click_rate, m.irrelevant_rate, m.late_events
FROM cs_batch b
LEFT JOIN cs_batch_metrics m ON m.batch_id = b.batch_id

-- name: batch_summaries
-- A page of batches, newest first (batch ids sort by creation): ids below :before (NULL: from the newest),
-- only :release_id's unless it is NULL, at most :limit; each with its stored metrics (NULL when none).
__BATCH_SUMMARY__
WHERE (CAST(:before AS TEXT) IS NULL OR b.batch_id < :before)
  AND (CAST(:release_id AS TEXT) IS NULL OR b.release_id = :release_id)
ORDER BY b.batch_id DESC
LIMIT :limit

-- name: batch_summary
-- One batch with its stored metrics (NULL when none), as a row of batch_summaries; no row: unknown batch_id.
__BATCH_SUMMARY__
WHERE b.batch_id = :batch_id

-- name: released_metrics
-- The last :limit released batches (newest release first) with their stored metrics (NULL when none).
__BATCH_SUMMARY__
WHERE b.status = 'released'
ORDER BY b.released_at DESC, b.batch_id DESC
LIMIT :limit

-- ------------------------------------------------------------------------------------------------------
-- Search analytics (clickstream.store.aggregation, clickstream.store.analytics); kept per released batch
-- with the discipline of the kept metrics (see store_batch_metrics and migration 0004).

-- name: analytics_batch_totals
-- Aggregation pass: batch :batch_id's sessions, payload-search sessions, sessions flagged irrelevant, events,
-- 'click' events and late events (arrived after the release). Events and irrelevant flags only grow in a
-- released batch: the keep-writes compare them.
SELECT s.sessions, s.payload_search_sessions, s.irrelevant_all, e.events, e.clicks, e.late_events
FROM (SELECT count(*) AS sessions,
             count(*) FILTER (WHERE is_payload_search) AS payload_search_sessions,
             count(*) FILTER (WHERE is_irrelevant) AS irrelevant_all
      FROM cs_session WHERE batch_id = :batch_id) s
CROSS JOIN (SELECT count(e.event_seq) AS events,
                   count(e.event_seq) FILTER (WHERE e.event_type = 'click') AS clicks,
                   count(e.event_seq) FILTER (
                       WHERE e.event_seq > (SELECT released_event_seq FROM cs_batch WHERE batch_id = :batch_id)
                   ) AS late_events
            FROM cs_session s
            JOIN cs_event e ON e.session_id = s.session_id
            WHERE s.batch_id = :batch_id) e

-- name: analytics_keep_allowed
-- One row when the analytics computed for batch :batch_id may be kept: the batch is released, no user was
-- erased since the snapshot (the tombstone count is still :generation; run after lock_erasures on
-- PostgreSQL, under SQLite's write lock elsewhere) and no kept computation saw more events or irrelevant
-- flags (both only grow in a released batch, so fewer means an older snapshot).
SELECT 1 FROM cs_batch b
WHERE b.batch_id = :batch_id AND b.status = 'released'
  AND (SELECT count(*) FROM cs_erased_session) = :generation
  AND NOT EXISTS (SELECT 1 FROM cs_batch_analytics a
                  WHERE a.batch_id = :batch_id AND (a.events > :events OR a.irrelevant_all > :irrelevant_all))

-- name: delete_batch_analytics
-- Forgets the kept analytics of batch :batch_id (its query, query-object and object rows by ON DELETE CASCADE).
DELETE FROM cs_batch_analytics WHERE batch_id = :batch_id

-- name: insert_batch_analytics
-- Keeps the totals of batch :batch_id's analytics (after delete_batch_analytics, in the keep-write).
INSERT INTO cs_batch_analytics (batch_id, sessions, events, irrelevant_all, keyword_sessions,
                                payload_search_sessions, sessions_with_click, rr_sum, click_position_sum,
                                clicks_on_results, results_shown_sum, no_result_sessions, irrelevant_sessions,
                                impressions, distinct_queries, kept_queries, distinct_objects, kept_objects,
                                top_n, generation, computed_at)
VALUES (:batch_id, :sessions, :events, :irrelevant_all, :keyword_sessions, :payload_search_sessions,
        :sessions_with_click, :rr_sum, :click_position_sum, :clicks_on_results, :results_shown_sum,
        :no_result_sessions, :irrelevant_sessions, :impressions, :distinct_queries, :kept_queries,
        :distinct_objects, :kept_objects, :top_n, :generation, :computed_at)

-- name: erase_user_batch_analytics
-- Erasure: forgets the kept analytics of the batches holding :user_id's sessions (computed again later).
DELETE FROM cs_batch_analytics WHERE batch_id IN (SELECT batch_id FROM cs_session WHERE user_id = :user_id)

-- name: released_without_analytics
-- Released batches without kept analytics, newest release first, at most :limit (what a backfill computes).
SELECT b.batch_id FROM cs_batch b
WHERE b.status = 'released' AND NOT EXISTS (SELECT 1 FROM cs_batch_analytics a WHERE a.batch_id = b.batch_id)
ORDER BY b.released_at DESC, b.batch_id DESC
LIMIT :limit

-- name: analytics_batches
-- The released batches a read selects, newest release first, at most :limit: :batch_id's only unless it is
-- NULL, released in [:from_ms, :to_ms) (either NULL: unbounded); each with its kept analytics totals
-- (computed_at NULL: none kept yet).
SELECT b.batch_id, b.released_at, a.computed_at, a.sessions, a.keyword_sessions, a.payload_search_sessions,
       a.sessions_with_click, a.rr_sum, a.click_position_sum, a.clicks_on_results, a.results_shown_sum,
       a.no_result_sessions, a.irrelevant_sessions, a.impressions, a.distinct_queries, a.kept_queries,
       a.distinct_objects, a.kept_objects, a.top_n
FROM cs_batch b
LEFT JOIN cs_batch_analytics a ON a.batch_id = b.batch_id
WHERE b.status = 'released'
  AND (CAST(:batch_id AS TEXT) IS NULL OR b.batch_id = :batch_id)
  AND (CAST(:from_ms AS BIGINT) IS NULL OR b.released_at >= :from_ms)
  AND (CAST(:to_ms AS BIGINT) IS NULL OR b.released_at < :to_ms)
ORDER BY b.released_at DESC, b.batch_id DESC
LIMIT :limit

-- name: analytics_merged_queries
-- The kept query rows of the batches :batch_ids (JSON array), summed per query key; cut_batches: in how
-- many of those batches whose query list was cut (kept_queries < distinct_queries) the key was kept.
SELECT q.query_key, sum(q.sessions) AS sessions, sum(q.sessions_with_click) AS sessions_with_click,
       sum(q.rr_sum) AS rr_sum, sum(q.click_position_sum) AS click_position_sum,
       sum(q.clicks_on_results) AS clicks_on_results, sum(q.results_shown_sum) AS results_shown_sum,
       sum(q.no_result_sessions) AS no_result_sessions, sum(q.irrelevant_sessions) AS irrelevant_sessions,
       sum(CASE WHEN a.kept_queries < a.distinct_queries THEN 1 ELSE 0 END) AS cut_batches
FROM cs_batch_query q JOIN cs_batch_analytics a ON a.batch_id = q.batch_id
WHERE q.batch_id IN (__BATCH_IDS__)
GROUP BY q.query_key

-- name: analytics_merged_objects
-- The kept object rows of the batches :batch_ids (JSON array), summed per object; cut_batches as
-- analytics_merged_queries (kept_objects < distinct_objects).
SELECT o.object_id, sum(o.impressions) AS impressions, sum(o.clicks) AS clicks,
       sum(o.position_sum) AS position_sum,
       sum(CASE WHEN a.kept_objects < a.distinct_objects THEN 1 ELSE 0 END) AS cut_batches
FROM cs_batch_object o JOIN cs_batch_analytics a ON a.batch_id = o.batch_id
WHERE o.batch_id IN (__BATCH_IDS__)
GROUP BY o.object_id

-- name: analytics_query_rows
-- The kept rows of query key :query_key in the batches :batch_ids (JSON array), one a batch that kept it.
SELECT q.batch_id, q.sessions, q.sessions_with_click, q.rr_sum, q.click_position_sum, q.clicks_on_results,
       q.results_shown_sum, q.no_result_sessions, q.irrelevant_sessions, q.distinct_objects, q.kept_objects,
       q.positions
FROM cs_batch_query q
WHERE q.query_key = :query_key AND q.batch_id IN (__BATCH_IDS__)

-- name: analytics_query_objects
-- The kept top objects of query key :query_key in the batches :batch_ids (JSON array), per batch.
SELECT batch_id, object_id, impressions, clicks, position_sum
FROM cs_batch_query_object
WHERE query_key = :query_key AND batch_id IN (__BATCH_IDS__)

-- name: purge_chunk_tombstones
-- Retention: records a tombstone (cs_purged_session) for each session of the chunk (before it is deleted).
INSERT INTO cs_purged_session (session_id, purged_at)
SELECT session_id, :now FROM cs_session WHERE batch_id = :batch_id ORDER BY session_number LIMIT :limit
ON CONFLICT (session_id) DO NOTHING

-- name: prune_purged_tombstones
-- Retention: deletes the purged-session tombstones recorded before :released_at (the purged batch's release).
DELETE FROM cs_purged_session WHERE purged_at < :released_at

-- ------------------------------------------------------------------ training-signal labels (0005)

-- name: labels_keep_allowed
-- One row when the labels fitted for batch :batch_id may be kept: the batch is released, no user was erased
-- since the snapshot (the tombstone count is still :generation; run after lock_erasures on PostgreSQL,
-- under SQLite's write lock elsewhere) and no kept fit saw more events or irrelevant flags (an older one).
SELECT 1 FROM cs_batch b
WHERE b.batch_id = :batch_id AND b.status = 'released'
  AND (SELECT count(*) FROM cs_erased_session) = :generation
  AND NOT EXISTS (SELECT 1 FROM cs_batch_labels l
                  WHERE l.batch_id = :batch_id AND (l.events > :events OR l.irrelevant_all > :irrelevant_all))

-- name: delete_batch_labels
-- Forgets the kept labels of batch :batch_id (its judgments by ON DELETE CASCADE).
DELETE FROM cs_batch_labels WHERE batch_id = :batch_id

-- name: insert_batch_labels
-- Keeps the examination curve and fit report of batch :batch_id (after delete_batch_labels, in the keep-write).
INSERT INTO cs_batch_labels (batch_id, max_position, label_event_types, sessions, fitted_sessions,
                             payload_search_sessions, irrelevant_sessions, empty_query_sessions, impressions,
                             clicks, propensities, fit, distinct_queries, kept_queries, judgments,
                             kept_judgments, events, irrelevant_all, generation, computed_at)
VALUES (:batch_id, :max_position, :label_event_types, :sessions, :fitted_sessions, :payload_search_sessions,
        :irrelevant_sessions, :empty_query_sessions, :impressions, :clicks, :propensities, :fit,
        :distinct_queries, :kept_queries, :judgments, :kept_judgments, :events, :irrelevant_all, :generation,
        :computed_at)

-- name: erase_user_batch_labels
-- Erasure: forgets the kept labels of the batches holding :user_id's sessions (fitted again by the labels step).
DELETE FROM cs_batch_labels WHERE batch_id IN (SELECT batch_id FROM cs_session WHERE user_id = :user_id)

-- name: kept_batch_labels
-- The kept labels of batch :batch_id (no row: none kept).
SELECT batch_id, max_position, label_event_types, sessions, fitted_sessions, payload_search_sessions,
       irrelevant_sessions, empty_query_sessions, impressions, clicks, propensities, fit, distinct_queries,
       kept_queries, judgments, kept_judgments, computed_at
FROM cs_batch_labels WHERE batch_id = :batch_id

-- name: batch_judgments_page
-- A keyset page of the kept judgments of batch :batch_id, by (query_key, object_id), after
-- (:after_query, :after_object) (both NULL: from the start), of query key :query_key only unless NULL.
SELECT query_key, object_id, impressions, clicks, mean_position, raw_ctr, gamma, effective_sample_size
FROM cs_batch_judgment
WHERE batch_id = :batch_id
  AND (CAST(:query_key AS TEXT) IS NULL OR query_key = :query_key)
  AND (CAST(:after_query AS TEXT) IS NULL OR query_key > :after_query
       OR (query_key = :after_query AND object_id > :after_object))
ORDER BY query_key, object_id
LIMIT :limit

-- name: labels_query_judgments
-- The kept judgments of query key :query_key in the batches :batch_ids (JSON array), per batch, at most
-- :limit, the largest gamma first.
SELECT batch_id, object_id, impressions, clicks, mean_position, raw_ctr, gamma, effective_sample_size
FROM cs_batch_judgment
WHERE query_key = :query_key AND batch_id IN (__BATCH_IDS__)
ORDER BY gamma IS NULL, gamma DESC, batch_id, object_id
LIMIT :limit
