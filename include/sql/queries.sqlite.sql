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
-- Fragment (CTEs x, fresh): the events of :events not stored yet and not of a tombstoned (erased) session
-- nor of a purged one not registered again, numbered per session (k) in array order, with the count (n) the
-- session holds already.
x AS (
    SELECT json_extract(j.value, '$.session_id') AS session_id, json_extract(j.value, '$.event_id') AS event_id,
           json_extract(j.value, '$.object_id') AS object_id, json_extract(j.value, '$.event_type') AS event_type,
           json_extract(j.value, '$.created_at') AS created_at, json_extract(j.value, '$.meta') AS meta,
           j.key AS ord,
           EXISTS (SELECT 1 FROM cs_erased_session t
                   WHERE t.session_id = json_extract(j.value, '$.session_id')) AS erased,
           EXISTS (SELECT 1 FROM cs_purged_session p WHERE p.session_id = json_extract(j.value, '$.session_id'))
           AND NOT EXISTS (SELECT 1 FROM cs_session s
                           WHERE s.session_id = json_extract(j.value, '$.session_id')) AS purged
    FROM json_each(:events) j),
fresh AS (
    SELECT x.*, row_number() OVER (PARTITION BY x.session_id ORDER BY x.ord) AS k,
           (SELECT count(*) FROM cs_event e WHERE e.session_id = x.session_id) AS n
    FROM x
    WHERE NOT x.erased AND NOT x.purged
      AND NOT EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = x.session_id AND e.event_id = x.event_id))

-- name: count_refused_events
-- SQLite only: of :events, how many new ones would pass their session's cap :max_events (over_limit), how
-- many belong to a tombstoned session (erased) and how many to a purged one not registered again (purged).
-- Run before insert_events in the same write transaction (SQLite has no INSERT inside WITH).
WITH __NEW_EVENTS__
SELECT (SELECT count(*) FROM fresh WHERE n + k > :max_events) AS over_limit,
       (SELECT count(*) FROM x WHERE x.erased) AS erased,
       (SELECT count(*) FROM x WHERE x.purged AND NOT x.erased) AS purged

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
-- one). session_number follows the array order; ids already stored are left alone. The JSON columns come
-- as JSON values: json_extract gives their text as sent.
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

-- name: __BATCH_IDS__
-- Fragment: the batch ids of :batch_ids (a JSON array of texts), as a one-column subquery.
SELECT value FROM json_each(:batch_ids)

-- name: analytics_sessions
-- Aggregation pass over batch :batch_id's sessions (as PostgreSQL's). The query is NULL for a session that
-- is not a keyword session. Two kinds of rows:
-- * 'query': per (raw query or NULL, length of the results, irrelevant flag), the sessions;
-- * 'shown': per (raw query, object, 1-based position, irrelevant flag) of the keyword sessions, the sessions
--   showing the object there (a result listed twice counts at its first position only).
WITH r AS (
    SELECT s.search_query, s.is_irrelevant, json_extract(j.value, '$.object_id') AS object_id,
           min(CAST(j.key AS INTEGER)) + 1 AS position
    FROM cs_session s, json_each(s.search_results) j
    WHERE s.batch_id = :batch_id AND NOT s.is_payload_search AND s.search_query IS NOT NULL
    GROUP BY s.session_number, json_extract(j.value, '$.object_id'))
SELECT 'query' AS kind, CASE WHEN NOT s.is_payload_search THEN s.search_query END AS query, NULL AS object_id,
       json_array_length(s.search_results) AS position, s.is_irrelevant AS irrelevant, count(*) AS sessions
FROM cs_session s
WHERE s.batch_id = :batch_id
GROUP BY 2, 4, 5
UNION ALL
SELECT 'shown', r.search_query, r.object_id, r.position, r.is_irrelevant, count(*)
FROM r
GROUP BY r.search_query, r.object_id, r.position, r.is_irrelevant

-- name: analytics_impression_clicks
-- Aggregation pass: per (raw query, object, position, irrelevant flag) of batch :batch_id's sessions, those
-- with a 'click' on the object shown there (clicks), those with an event of :label_event_types (a JSON array
-- of texts) on it (label_clicks), and those whose FIRST click (by created_at, then arrival) was on it
-- (first_clicks): once a session, at the object's first position. Rows with a NULL position (and object)
-- count only the first clicks on an object not shown; other events on objects not shown are left out. The
-- query is NULL for a session that is not a keyword session; query and object are NULL for every row when
-- :detail is false (the batch metrics only).
WITH t AS (SELECT value AS event_type FROM json_each(:label_event_types)),
ev AS (
    SELECT e.session_id, e.object_id, e.event_type,
           CASE WHEN e.event_type = 'click'
                THEN row_number() OVER (PARTITION BY e.session_id, e.event_type = 'click'
                                        ORDER BY e.created_at, e.event_seq) END AS click_rank
    FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
    WHERE s.batch_id = :batch_id AND (e.event_type = 'click' OR e.event_type IN (SELECT event_type FROM t))),
c AS (
    SELECT ev.session_id, ev.object_id,
           max(CASE WHEN ev.event_type = 'click' THEN 1 ELSE 0 END) AS clicked,
           max(CASE WHEN ev.event_type IN (SELECT event_type FROM t) THEN 1 ELSE 0 END) AS labelled,
           max(CASE WHEN ev.click_rank = 1 THEN 1 ELSE 0 END) AS first_click
    FROM ev
    GROUP BY ev.session_id, ev.object_id),
p AS (
    SELECT s.search_query, s.is_payload_search, s.is_irrelevant, c.object_id, c.clicked, c.labelled,
           c.first_click,
           (SELECT min(CAST(j.key AS INTEGER)) + 1 FROM json_each(s.search_results) j
            WHERE json_extract(j.value, '$.object_id') = c.object_id) AS position
    FROM c JOIN cs_session s ON s.session_id = c.session_id)
SELECT CASE WHEN :detail AND NOT p.is_payload_search THEN p.search_query END AS query,
       CASE WHEN :detail AND p.position IS NOT NULL THEN p.object_id END AS object_id,
       p.position, p.is_irrelevant AS irrelevant, sum(p.clicked) AS clicks, sum(p.labelled) AS label_clicks,
       sum(p.first_click) AS first_clicks
FROM p
WHERE p.position IS NOT NULL OR p.first_click = 1
GROUP BY 1, 2, 3, 4

-- name: label_impression_clicks
-- The labels' aggregation pass (as PostgreSQL's): analytics_impression_clicks without the first clicks, over
-- batch :batch_id's keyword sessions, objects shown only.
WITH t AS (SELECT value AS event_type FROM json_each(:label_event_types)),
c AS (
    SELECT e.session_id, e.object_id,
           max(CASE WHEN e.event_type = 'click' THEN 1 ELSE 0 END) AS clicked,
           max(CASE WHEN e.event_type IN (SELECT event_type FROM t) THEN 1 ELSE 0 END) AS labelled
    FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
    WHERE s.batch_id = :batch_id AND NOT s.is_payload_search AND s.search_query IS NOT NULL
      AND (e.event_type = 'click' OR e.event_type IN (SELECT event_type FROM t))
    GROUP BY e.session_id, e.object_id),
p AS (
    SELECT s.search_query, s.is_irrelevant, c.object_id, c.clicked, c.labelled,
           (SELECT min(CAST(j.key AS INTEGER)) + 1 FROM json_each(s.search_results) j
            WHERE json_extract(j.value, '$.object_id') = c.object_id) AS position
    FROM c JOIN cs_session s ON s.session_id = c.session_id)
SELECT p.search_query AS query, p.object_id, p.position, p.is_irrelevant AS irrelevant, sum(p.clicked) AS clicks,
       sum(p.labelled) AS label_clicks
FROM p
WHERE p.position IS NOT NULL
GROUP BY 1, 2, 3, 4

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
