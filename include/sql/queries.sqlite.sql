-- SQLite's own queries, added to queries.sql (see its header for the convention): the SQLite version of
-- each query whose SQL differs per dialect (queries.postgresql.sql has the PostgreSQL one), and the queries
-- only SQLite runs: count_events_over_limit (with its fragment __NEW_EVENTS__), whose presence
-- (Database.has) makes the event insert (push_events, ingest_bulk) count the events over the cap first.
-- No name here overrides one of queries.sql.
-- Writers are serialised by BEGIN IMMEDIATE (see clickstream.store.engine), so no row locks appear here and
-- PostgreSQL's lock_* queries have no SQLite version.

-- name: __EVENT_ON_RESULT__
-- Fragment: true when event e's object_id is among session s's search_results (json_each).
EXISTS (SELECT 1 FROM json_each(s.search_results) r WHERE json_extract(r.value, '$.object_id') = e.object_id)

-- name: insert_session
-- Registers a session in the collecting batch; returns session_number, batch_id, events_attached, or no row.
INSERT INTO cs_session (session_id, batch_id, search_query, search_results, search_meta, payload_filter,
                        sort_by, user_id, created_at, is_irrelevant, is_payload_search, content_hash,
                        registered_at)
SELECT :session_id, b.batch_id, :search_query, :search_results, :search_meta, :payload_filter, :sort_by,
       :user_id, :created_at, :is_irrelevant, :is_payload_search, :content_hash, :now
FROM cs_batch b
WHERE b.status = 'collecting'
  AND NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = :session_id)
ON CONFLICT (session_id) DO NOTHING
RETURNING session_number, batch_id,
          (SELECT count(*) FROM cs_event e WHERE e.session_id = cs_session.session_id) AS events_attached

-- name: __NEW_EVENTS__
-- Fragment (CTEs x, fresh): the events of :events not stored yet and not of a tombstoned (erased) session,
-- numbered per session (k) in array order, with the count (n) the session holds already.
x AS (
    SELECT json_extract(j.value, '$.session_id') AS session_id, json_extract(j.value, '$.event_id') AS event_id,
           json_extract(j.value, '$.object_id') AS object_id, json_extract(j.value, '$.event_type') AS event_type,
           json_extract(j.value, '$.created_at') AS created_at, json_extract(j.value, '$.meta') AS meta,
           j.key AS ord,
           EXISTS (SELECT 1 FROM cs_erased_session t
                   WHERE t.session_id = json_extract(j.value, '$.session_id')) AS erased
    FROM json_each(:events) j),
fresh AS (
    SELECT x.*, row_number() OVER (PARTITION BY x.session_id ORDER BY x.ord) AS k,
           (SELECT count(*) FROM cs_event e WHERE e.session_id = x.session_id) AS n
    FROM x
    WHERE NOT x.erased
      AND NOT EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = x.session_id AND e.event_id = x.event_id))

-- name: count_refused_events
-- SQLite only: of :events, how many new ones would pass their session's cap :max_events (over_limit) and
-- how many belong to a tombstoned session (erased). Run before insert_events in the same write transaction
-- (SQLite has no INSERT inside WITH).
WITH __NEW_EVENTS__
SELECT (SELECT count(*) FROM fresh WHERE n + k > :max_events) AS over_limit,
       (SELECT count(*) FROM x WHERE x.erased) AS erased

-- name: insert_events
-- Stores the new events of :events (a JSON array), capped per session; one row per event stored.
-- Events of one or many sessions in one statement; arrival order follows the array order. At most
-- :max_events a session; exact here, since SQLite serialises writers.
WITH __NEW_EVENTS__
INSERT INTO cs_event (session_id, event_id, object_id, event_type, created_at, meta, received_at)
SELECT session_id, event_id, object_id, event_type, created_at, meta, :now
FROM fresh
WHERE n + k <= :max_events
ORDER BY ord
ON CONFLICT (session_id, event_id) DO NOTHING
RETURNING 1

-- name: insert_sessions
-- Registers many sessions (:sessions, a JSON array) into the collecting batch; returns the ids inserted.
-- Many registrations in one statement into the collecting batch (none: nothing inserted, the caller opens
-- one). session_number follows the array order; ids already stored are left alone.
INSERT INTO cs_session (session_id, batch_id, search_query, search_results, search_meta, payload_filter,
                        sort_by, user_id, created_at, is_irrelevant, is_payload_search, content_hash,
                        registered_at)
SELECT json_extract(j.value, '$.session_id'), b.batch_id, json_extract(j.value, '$.search_query'),
       json_extract(j.value, '$.search_results'), json_extract(j.value, '$.search_meta'),
       json_extract(j.value, '$.payload_filter'), json_extract(j.value, '$.sort_by'),
       json_extract(j.value, '$.user_id'), json_extract(j.value, '$.created_at'),
       json_extract(j.value, '$.is_irrelevant'), json_extract(j.value, '$.is_payload_search'),
       json_extract(j.value, '$.content_hash'), :now
FROM cs_batch b CROSS JOIN json_each(:sessions) j
WHERE b.status = 'collecting'
  AND NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = json_extract(j.value, '$.session_id'))
ORDER BY j.key
ON CONFLICT (session_id) DO NOTHING
RETURNING session_id

-- name: sessions_registration
-- Content hashes of the stored sessions among :session_ids (a JSON array of texts): session_registration
-- for many ids.
SELECT session_id, content_hash FROM cs_session WHERE session_id IN (SELECT value FROM json_each(:session_ids))

-- name: batch_page
-- One page of a batch's sessions numbered in (:after_number, :until_number], each with its events (JSON).
-- SQLite 3.40 has no ORDER BY inside aggregates: each event carries _seq and Python restores the order.
SELECT s.session_number, s.session_id, s.search_query, s.search_results, s.search_meta, s.payload_filter,
       s.sort_by, s.user_id, s.created_at, s.is_irrelevant,
       (SELECT json_group_array(json_object('event_id', e.event_id, 'object_id', e.object_id,
                                            'event_type', e.event_type, 'created_at', e.created_at,
                                            'meta', json(e.meta), '_seq', e.event_seq))
        FROM (SELECT * FROM cs_event e WHERE e.session_id = s.session_id
              ORDER BY e.created_at, e.event_seq LIMIT :events_limit) e) AS events
FROM cs_session s
WHERE s.batch_id = :batch_id AND s.session_number > :after_number AND s.session_number <= :until_number
ORDER BY s.session_number
LIMIT :limit

-- name: claim_marks
-- Hands up to :limit pending (or stale processing) marks to a worker: processing, attempts + 1; returns them.
-- No SKIP LOCKED: the write transaction (BEGIN IMMEDIATE) already serialises workers.
UPDATE cs_improvement_mark
SET status = 'processing', attempts = attempts + 1, updated_at = :now
WHERE session_id IN (
    SELECT session_id FROM cs_improvement_mark
    WHERE status = 'pending'
       OR (status = 'processing' AND updated_at < :stale_before AND attempts < :max_attempts)
    ORDER BY created_at, session_id
    LIMIT :limit)
RETURNING session_id, status, attempts, created_at, updated_at, last_error

-- name: batch_rr_sum
-- Sum over sessions of 1 / (1-based position in search_results of the first clicked object).
SELECT coalesce(sum(1.0 / r.pos), 0) AS rr_sum
FROM (SELECT fc.session_id,
             (SELECT min(CAST(j.key AS INTEGER)) + 1 FROM json_each(s.search_results) j
              WHERE json_extract(j.value, '$.object_id') = fc.object_id) AS pos
      FROM (SELECT e.session_id, e.object_id,
                   row_number() OVER (PARTITION BY e.session_id ORDER BY e.created_at, e.event_seq) AS rn
            FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
            WHERE s.batch_id = :batch_id AND e.event_type = 'click') fc
      JOIN cs_session s ON s.session_id = fc.session_id
      WHERE fc.rn = 1) r
WHERE r.pos IS NOT NULL

-- name: extract_page
-- One page of a batch in the dataset's flat layout (clickstream.dataset), as two texts of one JSON object
-- per line, like PostgreSQL's extract_page: free-form JSON objects as JSON text, at most :max_events events
-- a session, earliest first. group_concat follows the ordered subquery it reads.
WITH s AS (
    SELECT session_number, session_id, search_query, search_results, search_meta, payload_filter, sort_by,
           user_id, created_at, is_irrelevant
    FROM cs_session
    WHERE batch_id = :batch_id AND session_number > :after_number AND session_number <= :until_number
    ORDER BY session_number
    LIMIT :limit),
e AS (
    SELECT s.session_number, s.session_id, x.event_id, x.object_id, x.event_type, x.created_at, x.meta,
           x.event_index
    FROM s JOIN (SELECT ev.session_id, ev.event_id, ev.object_id, ev.event_type, ev.created_at, ev.meta,
                        row_number() OVER (PARTITION BY ev.session_id ORDER BY ev.created_at, ev.event_seq) - 1
                            AS event_index
                 FROM cs_event ev WHERE ev.session_id IN (SELECT session_id FROM s)) x
         ON x.session_id = s.session_id
    WHERE x.event_index < :max_events),
n AS (SELECT session_number, count(*) AS n_events FROM e GROUP BY session_number)
SELECT (SELECT count(*) FROM s) AS sessions,
       (SELECT min(session_number) FROM s) AS first_number,
       (SELECT max(session_number) FROM s) AS last_number,
       (SELECT count(*) FROM e) AS events,
       (SELECT group_concat(line, char(10)) FROM (
            SELECT json_object(
                'batch_id', :batch_id, 'session_number', s.session_number, 'session_id', s.session_id,
                'search_query', s.search_query,
                'search_results', (SELECT json_group_array(json_object(
                                        'object_id', json_extract(r.value, '$.object_id'),
                                        'rank', json_extract(r.value, '$.rank'),
                                        'meta', r.value ->> '$.meta'))
                                   FROM (SELECT value FROM json_each(s.search_results) ORDER BY key) r),
                'search_meta', s.search_meta, 'payload_filter', s.payload_filter, 'sort_by', json(s.sort_by),
                'user_id', s.user_id, 'created_at', s.created_at,
                'is_irrelevant', json(CASE WHEN s.is_irrelevant THEN 'true' ELSE 'false' END),
                'n_events', coalesce(n.n_events, 0)) AS line
            FROM s LEFT JOIN n ON n.session_number = s.session_number
            ORDER BY s.session_number)) AS sessions_json,
       (SELECT group_concat(line, char(10)) FROM (
            SELECT json_object(
                'batch_id', :batch_id, 'session_number', e.session_number, 'session_id', e.session_id,
                'event_index', e.event_index, 'event_id', e.event_id, 'object_id', e.object_id,
                'event_type', e.event_type, 'created_at', e.created_at, 'meta', e.meta) AS line
            FROM e
            ORDER BY e.session_number, e.event_index)) AS events_json

-- name: sessions_erased
-- The tombstoned (erased) ids among :session_ids (a JSON array of texts).
SELECT session_id FROM cs_erased_session WHERE session_id IN (SELECT value FROM json_each(:session_ids))

-- name: batch_result_lengths
-- Position curve: how many sessions of batch :batch_id have n search results, for each n.
SELECT json_array_length(search_results) AS n, count(*) AS sessions
FROM cs_session WHERE batch_id = :batch_id
GROUP BY 1

-- name: batch_position_clicks
-- Position curve: for each result position up to :max_position, the sessions of batch :batch_id with a click
-- on the result there. A result shown twice counts at its first position (as batch_rr_sum does). Starts from
-- the batch's clicked (session, object) pairs, so only clicked sessions' results are expanded.
SELECT r.pos AS position, count(*) AS clicks
FROM (SELECT c.session_id,
             (SELECT min(CAST(j.key AS INTEGER)) + 1 FROM json_each(s.search_results) j
              WHERE json_extract(j.value, '$.object_id') = c.object_id) AS pos
      FROM (SELECT DISTINCT e.session_id, e.object_id
            FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
            WHERE s.batch_id = :batch_id AND e.event_type = 'click') c
      JOIN cs_session s ON s.session_id = c.session_id) r
WHERE r.pos <= :max_position
GROUP BY r.pos

-- ------------------------------------------------------------------------------------------------------
-- Search analytics and the training-signal labels: one aggregation pass (clickstream.store.aggregation).
-- A keyword session is one that is not a payload search and has a query. Rows are grouped by the RAW
-- query text here; Python merges them under the normalized key (normalize_query).

-- name: __BATCH_IDS__
-- Fragment: the batch ids of :batch_ids (a JSON array of texts), as a one-column subquery.
SELECT value FROM json_each(:batch_ids)

-- name: analytics_query_sessions
-- Aggregation pass: per raw query of batch :batch_id's keyword sessions: sessions, results shown (array
-- lengths), sessions without results, sessions flagged irrelevant.
SELECT s.search_query AS query, count(*) AS sessions,
       coalesce(sum(json_array_length(s.search_results)), 0) AS results_shown_sum,
       count(*) FILTER (WHERE json_array_length(s.search_results) = 0) AS no_result_sessions,
       count(*) FILTER (WHERE s.is_irrelevant) AS irrelevant_sessions
FROM cs_session s
WHERE s.batch_id = :batch_id AND NOT s.is_payload_search AND s.search_query IS NOT NULL
GROUP BY s.search_query

-- name: analytics_query_first_clicks
-- Aggregation pass: per raw query of batch :batch_id's keyword sessions: sessions with a click (any 'click'
-- event, as batch_event_counts) and the reciprocal-rank sum of their first click (as batch_rr_sum).
SELECT f.search_query AS query, count(*) AS sessions_with_click,
       coalesce(sum(1.0 / (SELECT min(CAST(j.key AS INTEGER)) + 1 FROM json_each(f.search_results) j
                           WHERE json_extract(j.value, '$.object_id') = f.object_id)), 0) AS rr_sum
FROM (SELECT e.session_id, e.object_id, s.search_query, s.search_results,
             row_number() OVER (PARTITION BY e.session_id ORDER BY e.created_at, e.event_seq) AS rn
      FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
      WHERE s.batch_id = :batch_id AND e.event_type = 'click'
        AND NOT s.is_payload_search AND s.search_query IS NOT NULL) f
WHERE f.rn = 1
GROUP BY f.search_query

-- name: analytics_impressions
-- Aggregation pass: per (raw query, object, 1-based position, irrelevant flag) of batch :batch_id's keyword
-- sessions, the sessions showing the object there (a result listed twice counts at its first position only).
WITH r AS (
    SELECT s.search_query, s.is_irrelevant, json_extract(j.value, '$.object_id') AS object_id,
           min(CAST(j.key AS INTEGER)) + 1 AS position
    FROM cs_session s, json_each(s.search_results) j
    WHERE s.batch_id = :batch_id AND NOT s.is_payload_search AND s.search_query IS NOT NULL
    GROUP BY s.session_number, json_extract(j.value, '$.object_id'))
SELECT r.search_query AS query, r.object_id, r.position, r.is_irrelevant AS irrelevant, count(*) AS shown
FROM r
GROUP BY r.search_query, r.object_id, r.position, r.is_irrelevant

-- name: analytics_impression_clicks
-- Aggregation pass: per (raw query, object, position, irrelevant flag) of batch :batch_id's keyword
-- sessions, those with a 'click' on the object shown there (clicks) and those with an event of
-- :label_event_types (a JSON array of texts) on it (label_clicks): once a session, at the object's first
-- position; events on objects not shown are left out.
WITH t AS (SELECT value AS event_type FROM json_each(:label_event_types)),
c AS (
    SELECT e.session_id, e.object_id, s.search_query, s.is_irrelevant, s.search_results,
           max(CASE WHEN e.event_type = 'click' THEN 1 ELSE 0 END) AS clicked,
           max(CASE WHEN e.event_type IN (SELECT event_type FROM t) THEN 1 ELSE 0 END) AS labelled
    FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
    WHERE s.batch_id = :batch_id AND NOT s.is_payload_search AND s.search_query IS NOT NULL
      AND (e.event_type = 'click' OR e.event_type IN (SELECT event_type FROM t))
    GROUP BY e.session_id, e.object_id),
p AS (
    SELECT c.search_query, c.object_id, c.is_irrelevant, c.clicked, c.labelled,
           (SELECT min(CAST(j.key AS INTEGER)) + 1 FROM json_each(c.search_results) j
            WHERE json_extract(j.value, '$.object_id') = c.object_id) AS position
    FROM c)
SELECT p.search_query AS query, p.object_id, p.position, p.is_irrelevant AS irrelevant,
       sum(p.clicked) AS clicks, sum(p.labelled) AS label_clicks
FROM p
WHERE p.position IS NOT NULL
GROUP BY p.search_query, p.object_id, p.position, p.is_irrelevant

-- name: insert_batch_queries
-- Keeps the per-query analytics rows of :rows (a JSON array of objects) for their batch.
INSERT INTO cs_batch_query (batch_id, query_key, sessions, sessions_with_click, rr_sum, click_position_sum,
                            clicks_on_results, results_shown_sum, no_result_sessions, irrelevant_sessions,
                            distinct_objects, kept_objects, positions, top_sessions, top_no_results,
                            top_no_clicks)
SELECT j.value ->> '$.batch_id', j.value ->> '$.query_key', j.value ->> '$.sessions',
       j.value ->> '$.sessions_with_click', j.value ->> '$.rr_sum', j.value ->> '$.click_position_sum',
       j.value ->> '$.clicks_on_results', j.value ->> '$.results_shown_sum', j.value ->> '$.no_result_sessions',
       j.value ->> '$.irrelevant_sessions', j.value ->> '$.distinct_objects', j.value ->> '$.kept_objects',
       j.value ->> '$.positions', j.value ->> '$.top_sessions', j.value ->> '$.top_no_results',
       j.value ->> '$.top_no_clicks'
FROM json_each(:rows) j

-- name: insert_batch_query_objects
-- Keeps the top objects of each kept query, :rows (a JSON array of objects).
INSERT INTO cs_batch_query_object (batch_id, query_key, object_id, impressions, clicks, position_sum)
SELECT j.value ->> '$.batch_id', j.value ->> '$.query_key', j.value ->> '$.object_id',
       j.value ->> '$.impressions', j.value ->> '$.clicks', j.value ->> '$.position_sum'
FROM json_each(:rows) j

-- name: insert_batch_objects
-- Keeps the per-object analytics rows of :rows (a JSON array of objects) for their batch.
INSERT INTO cs_batch_object (batch_id, object_id, impressions, clicks, position_sum)
SELECT j.value ->> '$.batch_id', j.value ->> '$.object_id', j.value ->> '$.impressions',
       j.value ->> '$.clicks', j.value ->> '$.position_sum'
FROM json_each(:rows) j

-- name: insert_batch_judgments
-- Keeps the judgments of :rows (a JSON array of objects) for their batch (the labels keep-write).
INSERT INTO cs_batch_judgment (batch_id, query_key, object_id, impressions, clicks, mean_position, raw_ctr, gamma,
                               effective_sample_size)
SELECT j.value ->> '$.batch_id', j.value ->> '$.query_key', j.value ->> '$.object_id',
       j.value ->> '$.impressions', j.value ->> '$.clicks', j.value ->> '$.mean_position', j.value ->> '$.raw_ctr',
       j.value ->> '$.gamma', j.value ->> '$.effective_sample_size'
FROM json_each(:rows) j

-- name: label_sessions_page
-- The labels step's per-session pass: a keyset page of at most :limit keyword sessions of batch :batch_id
-- (not a payload search, with a query, not marked irrelevant) with an event of :label_event_types (the
-- others make no training pair) numbered in (:after_number, :until_number], by session number: the session's id and query, its result object ids in order (JSON array text) and the
-- objects it has an event of :label_event_types (a JSON array of texts) on (JSON array text).
SELECT s.session_number, s.session_id, s.search_query,
       (SELECT json_group_array(oid) FROM (SELECT json_extract(r.value, '$.object_id') AS oid
                                           FROM json_each(s.search_results) r ORDER BY r.key)) AS result_ids,
       (SELECT json_group_array(DISTINCT e.object_id) FROM cs_event e
        WHERE e.session_id = s.session_id
          AND e.event_type IN (SELECT value FROM json_each(:label_event_types))) AS clicked_ids
FROM cs_session s
WHERE s.batch_id = :batch_id AND s.session_number > :after_number AND s.session_number <= :until_number
  AND NOT s.is_payload_search AND s.search_query IS NOT NULL AND NOT s.is_irrelevant
  AND EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id
              AND e.event_type IN (SELECT value FROM json_each(:label_event_types)))
ORDER BY s.session_number
LIMIT :limit
