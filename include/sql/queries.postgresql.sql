-- PostgreSQL's own queries, added to queries.sql (see its header for the convention): the PostgreSQL
-- version of each query whose SQL differs per dialect (queries.sqlite.sql has the SQLite one), and the
-- queries only PostgreSQL runs: lock_migrations, lock_batch_creation, lock_collecting_for_release,
-- lock_erasures and snapshot_read, which
-- the Python side runs when Database.has(...) finds them (SQLite's BEGIN IMMEDIATE makes them unnecessary).
-- No name here overrides one of queries.sql. JSON parameters arrive as text and are cast to jsonb here.
-- Names wrapped in __ are fragments substituted into other queries (shared ones included).

-- name: __EVENT_ON_RESULT__
-- Fragment: true when event e's object_id is among session s's search_results (jsonb containment).
s.search_results @> jsonb_build_array(jsonb_build_object('object_id', e.object_id))

-- name: lock_migrations
-- PostgreSQL only: advisory lock (till commit) serialising migration runs.
-- Two processes migrating at once: the second waits here, then finds the work done.
SELECT pg_advisory_xact_lock(4242057001)

-- name: lock_for_erasure
-- Erasure waits for in-flight writes of sessions and events and holds new ones until it commits, so no
-- write that read "not tombstoned" before the erasure commits after it (SHARE ROW EXCLUSIVE blocks
-- INSERT/UPDATE/DELETE, not reads). Erasure is short, so ingestion pauses only briefly.
LOCK TABLE cs_session, cs_event IN SHARE ROW EXCLUSIVE MODE

-- name: lock_erasures
-- PostgreSQL only: a metrics keep-write waits for erasures in flight (their tombstone insert) to commit and
-- holds new ones until it commits (SHARE conflicts with ROW EXCLUSIVE, not with reads), so its tombstone
-- count (store_batch_metrics) is that of every erasure that may have deleted the kept row.
LOCK TABLE cs_erased_session IN SHARE MODE

-- name: aggregation_settings
-- PostgreSQL only, run by the aggregation pass in its transaction: no JIT compilation for its few large
-- statements (compiling them costs about as much as running them: 0.3 to 0.4 s each on 200,000 sessions).
SET LOCAL jit = off

-- name: snapshot_read
-- PostgreSQL only, first statement of a metrics computation: every query of the transaction reads one
-- snapshot (REPEATABLE READ), the tombstone count (erasure_generation) included.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY

-- name: lock_batch_creation
-- PostgreSQL only: advisory lock (till commit) taken before opening a collecting batch.
-- Transactions opening a collecting batch take turns, so each reads the latest created_at only after the
-- previous opener committed: batch ids (creation time first) then sort by creation.
SELECT pg_advisory_xact_lock(4242057002)

-- name: lock_collecting_for_release
-- PostgreSQL only: locks the collecting batch row for a release; its batch_id, or no row if none.
-- FOR NO KEY UPDATE: waits until every registration holding the batch FOR SHARE has committed, and only
-- then does release_batch read its clock, so released_at is never earlier than a member's registered_at.
-- (Sessions' foreign-key checks take FOR KEY SHARE, which this lock does not block.)
SELECT batch_id FROM cs_batch WHERE status = 'collecting' FOR NO KEY UPDATE

-- name: insert_session
-- Registers a session in the collecting batch; returns session_number, batch_id, events_attached, or no row.
-- No row also when the session_id is tombstoned (erased). One statement: takes the collecting batch FOR SHARE (concurrent registrations do not block each other;
-- a release, which UPDATEs that row, waits for them to commit, and a registration that waited on a release
-- re-checks the status, finds no row and inserts nothing: the caller then opens a new batch and retries).
INSERT INTO cs_session (session_id, batch_id, search_query, search_results, search_meta, payload_filter,
                        sort_by, user_id, created_at, is_irrelevant, is_payload_search, content_hash,
                        registered_at)
SELECT :session_id, b.batch_id, :search_query, CAST(:search_results AS jsonb), CAST(:search_meta AS jsonb),
       CAST(:payload_filter AS jsonb), CAST(:sort_by AS jsonb), :user_id, :created_at, :is_irrelevant,
       :is_payload_search, :content_hash, :now
FROM (SELECT batch_id FROM cs_batch WHERE status = 'collecting' FOR SHARE) b
WHERE NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = :session_id)
ON CONFLICT (session_id) DO NOTHING
RETURNING session_number, batch_id,
          (SELECT count(*) FROM cs_event e WHERE e.session_id = cs_session.session_id) AS events_attached

-- name: insert_events
-- Stores the new events of :events (a JSON array), capped per session; one row: stored, over_limit, erased,
-- purged.
-- Events of one or many sessions in one statement; arrival order (event_seq) follows the array order.
-- The caller sends each (session_id, event_id) once. Events of a tombstoned (erased) session are not stored
-- (erased), nor are those of a session of a purged batch that is not registered again (purged, migration
-- 0006). Events already stored are duplicates; of the new ones, a session takes at most :max_events in
-- all (its count read at the statement's start: concurrent pushes to one session may pass the cap by what
-- they insert together, so reads apply it too).
WITH x AS (
    SELECT x.session_id, x.event_id, x.object_id, x.event_type, x.created_at, x.meta, x.ord,
           EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = x.session_id) AS erased,
           EXISTS (SELECT 1 FROM cs_purged_session p WHERE p.session_id = x.session_id)
           AND NOT EXISTS (SELECT 1 FROM cs_session s WHERE s.session_id = x.session_id) AS purged
    FROM ROWS FROM (jsonb_to_recordset(CAST(:events AS jsonb))
                   AS (session_id text, event_id text, object_id text, event_type text, created_at bigint,
                       meta jsonb))
         WITH ORDINALITY AS x(session_id, event_id, object_id, event_type, created_at, meta, ord)),
fresh AS (
    SELECT x.*, row_number() OVER (PARTITION BY x.session_id ORDER BY x.ord) AS k
    FROM x
    -- A scalar subquery, not NOT EXISTS: the planner cannot turn it into an anti-join, so each event is one
    -- probe of the (session_id, event_id) index whatever the statistics (a generic plan chose a scan of
    -- cs_event, and push_events slowed down as the table grew).
    WHERE NOT x.erased AND NOT x.purged
      AND (SELECT 1 FROM cs_event e WHERE e.session_id = x.session_id AND e.event_id = x.event_id) IS NULL),
counted AS (
    -- The session's stored events are counted once, on its first new event (CASE evaluates the subquery
    -- only then), and spread over its other new events by the window: no join of fresh with a per-session
    -- count (the planner, expecting one row of each, nested-looped them: 750 x 250 rows for 1,000 items).
    SELECT f.*,
           f.k + max(CASE WHEN f.k = 1
                          THEN (SELECT count(*) FROM cs_event e WHERE e.session_id = f.session_id) END)
                 OVER (PARTITION BY f.session_id) <= :max_events AS within
    FROM fresh f),
ins AS (
    INSERT INTO cs_event (session_id, event_id, object_id, event_type, created_at, meta, received_at)
    SELECT c.session_id, c.event_id, c.object_id, c.event_type, c.created_at,
           nullif(c.meta, CAST('null' AS jsonb)), :now
    FROM counted c
    WHERE c.within
    ORDER BY c.ord
    ON CONFLICT (session_id, event_id) DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM ins) AS stored,
       (SELECT count(*) FROM counted c WHERE NOT c.within) AS over_limit,
       (SELECT count(*) FROM x WHERE x.erased) AS erased,
       (SELECT count(*) FROM x WHERE x.purged AND NOT x.erased) AS purged

-- name: push_events
-- insert_events for the events of one session (:session_id; :events a JSON array of events without their
-- session_id): the live push's statement. The same answer as insert_events, cheaper for one session: the
-- tombstones and the session's stored events are read once (not per event), an event is probed for a
-- duplicate only when the session has events stored, and the cap is a LIMIT on the new events in array order.
WITH s AS (
    SELECT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = :session_id) AS erased,
           EXISTS (SELECT 1 FROM cs_purged_session p WHERE p.session_id = :session_id)
           AND NOT EXISTS (SELECT 1 FROM cs_session s WHERE s.session_id = :session_id) AS purged,
           (SELECT count(*) FROM cs_event e WHERE e.session_id = :session_id) AS n),
x AS (
    SELECT x.event_id, x.object_id, x.event_type, x.created_at, x.meta, x.ord
    FROM ROWS FROM (jsonb_to_recordset(CAST(:events AS jsonb))
                   AS (event_id text, object_id text, event_type text, created_at bigint, meta jsonb))
         WITH ORDINALITY AS x(event_id, object_id, event_type, created_at, meta, ord)),
fresh AS (
    SELECT x.* FROM x, s
    WHERE NOT s.erased AND NOT s.purged
      AND (s.n = 0
           OR (SELECT 1 FROM cs_event e WHERE e.session_id = :session_id AND e.event_id = x.event_id) IS NULL)),
ins AS (
    INSERT INTO cs_event (session_id, event_id, object_id, event_type, created_at, meta, received_at)
    SELECT :session_id, f.event_id, f.object_id, f.event_type, f.created_at, nullif(f.meta, CAST('null' AS jsonb)),
           :now
    FROM fresh f
    ORDER BY f.ord
    LIMIT (SELECT greatest(:max_events - s.n, 0) FROM s)
    ON CONFLICT (session_id, event_id) DO NOTHING
    RETURNING 1)
SELECT (SELECT count(*) FROM ins) AS stored,
       greatest((SELECT count(*) FROM fresh) - greatest(:max_events - s.n, 0), 0) AS over_limit,
       CASE WHEN s.erased THEN (SELECT count(*) FROM x) ELSE 0 END AS erased,
       CASE WHEN s.purged AND NOT s.erased THEN (SELECT count(*) FROM x) ELSE 0 END AS purged
FROM s

-- name: insert_sessions
-- Registers many sessions (:sessions, a JSON array) into the collecting batch; returns the ids inserted.
-- Many registrations in one statement, into the collecting batch taken FOR SHARE exactly as insert_session
-- does (no collecting batch: nothing is inserted, and the caller opens one). session_number follows the
-- array order. Ids already stored are left alone (the caller compares their content hashes), and so are
-- tombstoned (erased) ids. The JSON columns come as JSON values (not as text to parse again).
INSERT INTO cs_session (session_id, batch_id, search_query, search_results, search_meta, payload_filter,
                        sort_by, user_id, created_at, is_irrelevant, is_payload_search, content_hash,
                        registered_at)
SELECT x.session_id, b.batch_id, x.search_query, x.search_results, x.search_meta, x.payload_filter, x.sort_by,
       x.user_id, x.created_at, x.is_irrelevant, x.is_payload_search, x.content_hash, :now
FROM (SELECT batch_id FROM cs_batch WHERE status = 'collecting' FOR SHARE) b
CROSS JOIN ROWS FROM (jsonb_to_recordset(CAST(:sessions AS jsonb))
               AS (session_id text, search_query text, search_results jsonb, search_meta jsonb,
                   payload_filter jsonb, sort_by jsonb, user_id text, created_at bigint, is_irrelevant boolean,
                   is_payload_search boolean, content_hash text))
     WITH ORDINALITY AS x(session_id, search_query, search_results, search_meta, payload_filter, sort_by,
                          user_id, created_at, is_irrelevant, is_payload_search, content_hash, ord)
WHERE NOT EXISTS (SELECT 1 FROM cs_erased_session t WHERE t.session_id = x.session_id)
ORDER BY x.ord
ON CONFLICT (session_id) DO NOTHING
RETURNING session_id

-- name: sessions_registration
-- Content hashes of the stored sessions among :session_ids (a JSON array of texts): session_registration
-- for many ids.
SELECT session_id, content_hash FROM cs_session
WHERE session_id IN (SELECT jsonb_array_elements_text(CAST(:session_ids AS jsonb)))

-- name: sessions_erased
-- The tombstoned (erased) ids among :session_ids (a JSON array of texts).
SELECT session_id FROM cs_erased_session
WHERE session_id IN (SELECT jsonb_array_elements_text(CAST(:session_ids AS jsonb)))

-- name: batch_page
-- One page of a batch's sessions numbered in (:after_number, :until_number], each with its events (JSON).
-- Keyset page: cost depends on limit and events_limit, never on after_number or the batch's size.
-- Events of the whole page come back in the same round trip, earliest first, at most events_limit each.
SELECT s.session_number, s.session_id, s.search_query, s.search_results, s.search_meta, s.payload_filter,
       s.sort_by, s.user_id, s.created_at, s.is_irrelevant,
       coalesce(ev.events, CAST('[]' AS json)) AS events
FROM (SELECT * FROM cs_session
      WHERE batch_id = :batch_id AND session_number > :after_number AND session_number <= :until_number
      ORDER BY session_number
      LIMIT :limit) s
LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object('event_id', e.event_id, 'object_id', e.object_id,
                                      'event_type', e.event_type, 'created_at', e.created_at,
                                      'meta', e.meta)
                    ORDER BY e.created_at, e.event_seq) AS events
    FROM (SELECT * FROM cs_event e WHERE e.session_id = s.session_id
          ORDER BY e.created_at, e.event_seq LIMIT :events_limit) e
) ev ON TRUE
ORDER BY s.session_number

-- name: batch_page_json
-- One page of batch :batch_id for GET /batch/sessions: its sessions as one JSON array text, and last_number.
-- No row: no such batch. The rows of batch_page, each session an object with BatchSession's keys, built here
-- in one statement and read as text, not as Python objects (clickstream.store.rows.page_json re-encodes it
-- with the model's key order in search_results and sort_by, which JSONB does not keep).
SELECT CAST(p.sessions AS text) AS sessions, p.last_number
FROM cs_batch b
CROSS JOIN LATERAL (
    SELECT coalesce(json_agg(x ORDER BY x.session_number), CAST('[]' AS json)) AS sessions,
           max(x.session_number) AS last_number
    FROM (
        SELECT s.session_number, s.session_id, s.search_query, s.search_results, s.search_meta, s.payload_filter,
               s.sort_by, s.user_id, s.created_at, s.is_irrelevant,
               coalesce(ev.events, CAST('[]' AS json)) AS events
        FROM (SELECT * FROM cs_session
              WHERE batch_id = :batch_id AND session_number > :after_number AND session_number <= :until_number
              ORDER BY session_number
              LIMIT :limit) s
        LEFT JOIN LATERAL (
            SELECT json_agg(json_build_object('event_id', e.event_id, 'object_id', e.object_id,
                                              'event_type', e.event_type, 'created_at', e.created_at,
                                              'meta', e.meta)
                            ORDER BY e.created_at, e.event_seq) AS events
            FROM (SELECT * FROM cs_event ce WHERE ce.session_id = s.session_id
                  ORDER BY ce.created_at, ce.event_seq LIMIT :events_limit) e
        ) ev ON TRUE
    ) x
) p
WHERE b.batch_id = :batch_id

-- name: claim_marks
-- Hands up to :limit pending (or stale processing) marks to a worker: processing, attempts + 1; returns them.
-- Concurrent workers skip each other's locked rows, so no mark is handed out twice.
-- A mark stuck in processing longer than the stale timeout (its worker died) is claimed again.
UPDATE cs_improvement_mark m
SET status = 'processing', attempts = m.attempts + 1, updated_at = :now
WHERE m.session_id IN (
    SELECT session_id FROM cs_improvement_mark
    WHERE status = 'pending'
       OR (status = 'processing' AND updated_at < :stale_before AND attempts < :max_attempts)
    ORDER BY created_at, session_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED)
RETURNING m.session_id, m.status, m.attempts, m.created_at, m.updated_at, m.last_error

-- name: extract_page
-- One page of a batch in the dataset's flat layout (clickstream.dataset: a sessions table and an events
-- table, free-form JSON objects as JSON text), as two texts of one JSON object per line, built here so the
-- extraction never parses and re-serialises JSON in Python (pyarrow reads the lines straight into Arrow).
-- One statement, so sessions, their n_events and their events come from one snapshot. Events are read per
-- session through cs_event_session_order (LATERAL), so a page's cost never depends on the batch's size;
-- at most :max_events a session (max_events_per_session), earliest first.
WITH s AS (
    SELECT session_number, session_id, search_query, search_results, search_meta, payload_filter, sort_by,
           user_id, created_at, is_irrelevant
    FROM cs_session
    WHERE batch_id = :batch_id AND session_number > :after_number AND session_number <= :until_number
    ORDER BY session_number
    LIMIT :limit),
e AS (
    SELECT s.session_number, s.session_id, ev.event_id, ev.object_id, ev.event_type, ev.created_at, ev.meta,
           ev.event_index
    FROM s CROSS JOIN LATERAL (
        SELECT x.event_id, x.object_id, x.event_type, x.created_at, x.meta,
               row_number() OVER (ORDER BY x.created_at, x.event_seq) - 1 AS event_index
        FROM cs_event x WHERE x.session_id = s.session_id
        ORDER BY x.created_at, x.event_seq
        LIMIT :max_events) ev),
n AS (SELECT session_number, count(*) AS n_events FROM e GROUP BY session_number)
SELECT (SELECT count(*) FROM s) AS sessions,
       (SELECT min(session_number) FROM s) AS first_number,
       (SELECT max(session_number) FROM s) AS last_number,
       (SELECT count(*) FROM e) AS events,
       (SELECT string_agg(CAST(json_build_object(
            'batch_id', CAST(:batch_id AS text), 'session_number', s.session_number, 'session_id', s.session_id,
            'search_query', s.search_query,
            'search_results', (SELECT coalesce(json_agg(json_build_object(
                                   'object_id', r.v ->> 'object_id', 'rank', r.v -> 'rank',
                                   'meta', CAST(nullif(r.v -> 'meta', CAST('null' AS jsonb)) AS text)) ORDER BY r.o),
                                   CAST('[]' AS json))
                               FROM jsonb_array_elements(s.search_results) WITH ORDINALITY AS r(v, o)),
            'search_meta', CAST(nullif(s.search_meta, CAST('null' AS jsonb)) AS text),
            'payload_filter', CAST(nullif(s.payload_filter, CAST('null' AS jsonb)) AS text),
            'sort_by', s.sort_by, 'user_id', s.user_id, 'created_at', s.created_at,
            'is_irrelevant', s.is_irrelevant, 'n_events', coalesce(n.n_events, 0)) AS text),
            chr(10) ORDER BY s.session_number)
        FROM s LEFT JOIN n ON n.session_number = s.session_number) AS sessions_json,
       (SELECT string_agg(CAST(json_build_object(
            'batch_id', CAST(:batch_id AS text), 'session_number', e.session_number, 'session_id', e.session_id,
            'event_index', e.event_index, 'event_id', e.event_id, 'object_id', e.object_id,
            'event_type', e.event_type, 'created_at', e.created_at,
            'meta', CAST(nullif(e.meta, CAST('null' AS jsonb)) AS text)) AS text),
            chr(10) ORDER BY e.session_number, e.event_index)
        FROM e) AS events_json

-- name: extract_page_arrow
-- extract_page for a columnar reader (Database.arrow_reader: COPY BINARY straight into Arrow): the same page
-- (the same sessions, events and order; nothing is rebuilt as JSON), one row per session, in session order,
-- flat columns: the results as three parallel arrays (result_object_id, result_rank, result_meta: each
-- result's meta as the JSON text stored), sort_by as sort_by_null / sort_field / sort_order, and the session's
-- events (at most :max_events, earliest first) as five parallel arrays (event_id, event_object_id, event_type,
-- event_created_at, event_meta). The reader builds the dataset's nested columns and its events table from
-- the arrays (clickstream.dataset.pages). One statement: one snapshot.
-- Order inside the arrays: each aggregate reads a subquery with its own ORDER BY, which PostgreSQL never
-- flattens into the outer query, so the aggregate receives the rows in that order; an ORDER BY inside each
-- aggregate would sort the same rows once per array (PostgreSQL 15: about 15 ms of a 1,000-session page).
WITH s AS (
    SELECT session_number, session_id, search_query, search_results, search_meta, payload_filter, sort_by,
           user_id, created_at, is_irrelevant
    FROM cs_session
    WHERE batch_id = :batch_id AND session_number > :after_number AND session_number <= :until_number
    ORDER BY session_number
    LIMIT :limit)
SELECT CAST(:batch_id AS text) AS batch_id, s.session_number, s.session_id, s.search_query,
       r.object_ids AS result_object_id, r.ranks AS result_rank, r.metas AS result_meta,
       CAST(nullif(s.search_meta, CAST('null' AS jsonb)) AS text) AS search_meta,
       CAST(nullif(s.payload_filter, CAST('null' AS jsonb)) AS text) AS payload_filter,
       s.sort_by IS NULL OR s.sort_by = CAST('null' AS jsonb) AS sort_by_null,
       s.sort_by ->> 'field' AS sort_field, s.sort_by ->> 'order' AS sort_order,
       s.user_id, s.created_at, s.is_irrelevant,
       e.event_ids AS event_id, e.object_ids AS event_object_id, e.event_types AS event_type,
       e.created_ats AS event_created_at, e.metas AS event_meta
FROM s
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(x.v ->> 'object_id'), CAST('{}' AS text[])) AS object_ids,
           coalesce(array_agg(CAST(x.v ->> 'rank' AS float8)), CAST('{}' AS float8[])) AS ranks,
           coalesce(array_agg(CAST(nullif(x.v -> 'meta', CAST('null' AS jsonb)) AS text)),
                    CAST('{}' AS text[])) AS metas
    FROM (SELECT y.v FROM jsonb_array_elements(s.search_results) WITH ORDINALITY AS y(v, o) ORDER BY y.o) x) r
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(ev.event_id), CAST('{}' AS text[])) AS event_ids,
           coalesce(array_agg(ev.object_id), CAST('{}' AS text[])) AS object_ids,
           coalesce(array_agg(ev.event_type), CAST('{}' AS text[])) AS event_types,
           coalesce(array_agg(ev.created_at), CAST('{}' AS bigint[])) AS created_ats,
           coalesce(array_agg(CAST(nullif(ev.meta, CAST('null' AS jsonb)) AS text)), CAST('{}' AS text[])) AS metas
    FROM (SELECT x.event_id, x.object_id, x.event_type, x.created_at, x.meta
          FROM cs_event x WHERE x.session_id = s.session_id
          ORDER BY x.created_at, x.event_seq
          LIMIT :max_events) ev) e
ORDER BY s.session_number

-- name: extract_page_bounds
-- PostgreSQL only: the upper bounds of the extraction pages of batch :batch_id in (:after_number, :until_number]:
-- every :page_size-th session number, in order (an index-only scan of cs_session_batch_number), so that the
-- pages (each extract_page with its limit) can be read by several connections at once.
SELECT session_number FROM (
    SELECT session_number, row_number() OVER (ORDER BY session_number) AS k
    FROM cs_session
    WHERE batch_id = :batch_id AND session_number > :after_number AND session_number <= :until_number) n
WHERE k % :page_size = 0
ORDER BY session_number

-- name: batch_result_lengths
-- Position curve: how many sessions of batch :batch_id have n search results, for each n.
SELECT jsonb_array_length(search_results) AS n, count(*) AS sessions
FROM cs_session WHERE batch_id = :batch_id
GROUP BY 1

-- name: __BATCH_IDS__
-- Fragment: the batch ids of :batch_ids (a JSON array of texts), as a one-column subquery.
SELECT jsonb_array_elements_text(CAST(:batch_ids AS jsonb))

-- name: analytics_sessions
-- Aggregation pass, one scan of batch :batch_id's sessions, grouped first by (query, irrelevant flag, list of
-- object ids): sessions of a query that show the same results are expanded once, not once each. The query is
-- NULL for a session that is not a keyword session. Two kinds of rows:
-- * 'query': per (raw query or NULL, length of the results, irrelevant flag), the sessions;
-- * 'shown': per (raw query, object, 1-based position, irrelevant flag) of the keyword sessions, the sessions
--   showing the object there (a result listed twice counts at its first position only).
WITH g AS MATERIALIZED (
    SELECT CASE WHEN NOT s.is_payload_search THEN s.search_query END AS query, s.is_irrelevant,
           jsonb_path_query_array(s.search_results, '$[*].object_id') AS ids, count(*) AS n
    FROM cs_session s
    WHERE s.batch_id = :batch_id
    GROUP BY 1, 2, 3)
SELECT 'query' AS kind, g.query, NULL AS object_id, jsonb_array_length(g.ids) AS position,
       g.is_irrelevant AS irrelevant, sum(g.n) AS sessions
FROM g
GROUP BY g.query, 4, g.is_irrelevant
UNION ALL
SELECT 'shown', g.query, o.object_id, o.position, g.is_irrelevant, sum(g.n)
FROM g
CROSS JOIN LATERAL (SELECT x.v #>> '{}' AS object_id, min(x.pos) AS position
                    FROM jsonb_array_elements(g.ids) WITH ORDINALITY AS x(v, pos)
                    GROUP BY 1) o
WHERE g.query IS NOT NULL
GROUP BY g.query, o.object_id, o.position, g.is_irrelevant

-- name: analytics_impression_clicks
-- Aggregation pass: per (raw query, object, position, irrelevant flag) of batch :batch_id's sessions, those
-- with a 'click' on the object shown there (clicks), those with an event of :label_event_types (a JSON array
-- of texts) on it (label_clicks), and those whose FIRST click (by created_at, then arrival) was on it
-- (first_clicks): once a session, at the object's first position. Rows with a NULL position (and object)
-- count only the first clicks on an object not shown; other events on objects not shown are left out. The
-- query is NULL for a session that is not a keyword session; query and object are NULL for every row when
-- :detail is false (the batch metrics only). Starts from the events, so only sessions with such an event
-- have their results expanded, once per (session, object).
WITH t AS (SELECT jsonb_array_elements_text(CAST(:label_event_types AS jsonb)) AS event_type),
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
    GROUP BY ev.session_id, ev.object_id)
SELECT CASE WHEN CAST(:detail AS boolean) AND NOT s.is_payload_search THEN s.search_query END AS query,
       CASE WHEN CAST(:detail AS boolean) AND p.position IS NOT NULL THEN c.object_id END AS object_id,
       p.position, s.is_irrelevant AS irrelevant, sum(c.clicked) AS clicks, sum(c.labelled) AS label_clicks,
       sum(c.first_click) AS first_clicks
FROM c
JOIN cs_session s ON s.session_id = c.session_id
CROSS JOIN LATERAL (SELECT min(o.pos) AS position
                    FROM jsonb_array_elements(s.search_results) WITH ORDINALITY AS o(v, pos)
                    WHERE o.v ->> 'object_id' = c.object_id) p
WHERE p.position IS NOT NULL OR c.first_click = 1
GROUP BY 1, 2, 3, 4

-- name: label_impression_clicks
-- The labels' aggregation pass (aggregate_batch(..., labels=True)): the rows of analytics_impression_clicks
-- without the first clicks (no window over the clicks): per (raw query, object, position, irrelevant flag)
-- of batch :batch_id's KEYWORD sessions, those with a 'click' on the object shown there (clicks) and those
-- with an event of :label_event_types (a JSON array of texts) on it (label_clicks), once a session, at the
-- object's first position. Objects not shown are left out.
WITH t AS (SELECT jsonb_array_elements_text(CAST(:label_event_types AS jsonb)) AS event_type),
c AS (
    SELECT e.session_id, e.object_id,
           max(CASE WHEN e.event_type = 'click' THEN 1 ELSE 0 END) AS clicked,
           max(CASE WHEN e.event_type IN (SELECT event_type FROM t) THEN 1 ELSE 0 END) AS labelled
    FROM cs_session s JOIN cs_event e ON e.session_id = s.session_id
    WHERE s.batch_id = :batch_id AND NOT s.is_payload_search AND s.search_query IS NOT NULL
      AND (e.event_type = 'click' OR e.event_type IN (SELECT event_type FROM t))
    GROUP BY e.session_id, e.object_id)
SELECT s.search_query AS query, c.object_id, p.position, s.is_irrelevant AS irrelevant, sum(c.clicked) AS clicks,
       sum(c.labelled) AS label_clicks
FROM c
JOIN cs_session s ON s.session_id = c.session_id
CROSS JOIN LATERAL (SELECT min(o.pos) AS position
                    FROM jsonb_array_elements(s.search_results) WITH ORDINALITY AS o(v, pos)
                    WHERE o.v ->> 'object_id' = c.object_id) p
WHERE p.position IS NOT NULL
GROUP BY 1, 2, 3, 4

-- name: insert_batch_queries
-- Keeps the per-query analytics rows of :rows (a JSON array of objects) for their batch.
INSERT INTO cs_batch_query (batch_id, query_key, sessions, sessions_with_click, rr_sum, click_position_sum,
                            clicks_on_results, results_shown_sum, no_result_sessions, irrelevant_sessions,
                            distinct_objects, kept_objects, positions, top_sessions, top_no_results,
                            top_no_clicks)
SELECT x.batch_id, x.query_key, x.sessions, x.sessions_with_click, x.rr_sum, x.click_position_sum,
       x.clicks_on_results, x.results_shown_sum, x.no_result_sessions, x.irrelevant_sessions,
       x.distinct_objects, x.kept_objects, x.positions, x.top_sessions, x.top_no_results, x.top_no_clicks
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS x(batch_id text, query_key text, sessions bigint, sessions_with_click bigint,
          rr_sum double precision, click_position_sum bigint, clicks_on_results bigint,
          results_shown_sum bigint, no_result_sessions bigint, irrelevant_sessions bigint,
          distinct_objects bigint, kept_objects bigint, positions text, top_sessions boolean,
          top_no_results boolean, top_no_clicks boolean)

-- name: insert_batch_query_objects
-- Keeps the top objects of each kept query, :rows (a JSON array of objects).
INSERT INTO cs_batch_query_object (batch_id, query_key, object_id, impressions, clicks, position_sum)
SELECT x.batch_id, x.query_key, x.object_id, x.impressions, x.clicks, x.position_sum
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS x(batch_id text, query_key text, object_id text, impressions bigint, clicks bigint, position_sum bigint)

-- name: insert_batch_objects
-- Keeps the per-object analytics rows of :rows (a JSON array of objects) for their batch.
INSERT INTO cs_batch_object (batch_id, object_id, impressions, clicks, position_sum)
SELECT x.batch_id, x.object_id, x.impressions, x.clicks, x.position_sum
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS x(batch_id text, object_id text, impressions bigint, clicks bigint, position_sum bigint)

-- name: lock_imports_for_release
-- PostgreSQL only: a release waits for history imports in progress (each holds this lock shared for its load
-- transaction: import_hold_releases) and holds new ones until it commits. So every event is committed either
-- before the release reads released_event_seq (its seq is at most that) or after the release commits (its
-- seq is taken later, above it): late_events is exact for imported events, whose seqs are taken at COPY time
-- in a transaction that commits much later. Taken before the collecting batch's row lock, so a release
-- waiting for an import holds up no live registration.
SELECT pg_advisory_xact_lock(4242057026)

-- name: insert_batch_judgments
-- Keeps the judgments of :rows (a JSON array of objects) for their batch (the labels keep-write).
INSERT INTO cs_batch_judgment (batch_id, query_key, object_id, impressions, clicks, mean_position, raw_ctr, gamma,
                               effective_sample_size)
SELECT x.batch_id, x.query_key, x.object_id, x.impressions, x.clicks, x.mean_position, x.raw_ctr, x.gamma,
       x.effective_sample_size
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS x(batch_id text, query_key text, object_id text, impressions bigint, clicks bigint,
          mean_position double precision, raw_ctr double precision, gamma double precision,
          effective_sample_size double precision)

-- name: label_sessions_page
-- The labels step's per-session pass: a keyset page of at most :limit keyword sessions of batch :batch_id
-- (not a payload search, with a query, not marked irrelevant) with an event of :label_event_types (the
-- others make no training pair) numbered in (:after_number, :until_number], by session number: the session's id and query, its result object ids in order (JSON array text) and the
-- objects it has an event of :label_event_types (a JSON array of texts) on (JSON array text).
SELECT s.session_number, s.session_id, s.search_query,
       CAST(jsonb_path_query_array(s.search_results, '$[*].object_id') AS text) AS result_ids,
       CAST(coalesce((SELECT jsonb_agg(DISTINCT e.object_id) FROM cs_event e
                      WHERE e.session_id = s.session_id
                        AND e.event_type IN (SELECT jsonb_array_elements_text(CAST(:label_event_types AS jsonb)))),
                     CAST('[]' AS jsonb)) AS text) AS clicked_ids
FROM cs_session s
WHERE s.batch_id = :batch_id AND s.session_number > :after_number AND s.session_number <= :until_number
  AND NOT s.is_payload_search AND s.search_query IS NOT NULL AND NOT s.is_irrelevant
  AND EXISTS (SELECT 1 FROM cs_event e WHERE e.session_id = s.session_id
              AND e.event_type IN (SELECT jsonb_array_elements_text(CAST(:label_event_types AS jsonb))))
ORDER BY s.session_number
LIMIT :limit
