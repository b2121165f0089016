-- Clickstream session store, version 4: the kept search analytics of a released batch (by query, by object).
-- The metrics step computes them in one aggregation pass (clickstream.store.aggregation, shared with the
-- training-signal labels) and keeps, per released batch: its exact totals (cs_batch_analytics), the top
-- [clickstream] analytics_top_n queries by sessions, by sessions without results and by sessions without a
-- click (cs_batch_query, grouped under the normalized query key; the stored query text never changes), each
-- kept query's top objects (cs_batch_query_object) and the top objects by impressions (cs_batch_object).
-- Raw sums, not rates, so a range of batches merges exactly; a key left out of a batch whose list was cut
-- (distinct_* > kept_*) makes the merged counts lower bounds, which the reads say.
-- Same discipline as the kept metrics (0003): computed in one snapshot whose first read is the erasure
-- generation (the tombstone count), kept only if it is unchanged when the keep-write runs (serialised
-- against erasures) and the computation saw at least as many events and irrelevant flags as the kept one.
-- Erasing a user deletes the cs_batch_analytics rows of the batches that held their sessions; the other
-- tables follow by ON DELETE CASCADE, as they follow a deleted batch (retention).

CREATE TABLE cs_batch_analytics (
    batch_id                TEXT PRIMARY KEY REFERENCES cs_batch (batch_id) ON DELETE CASCADE,
    sessions                BIGINT  NOT NULL,
    events                  BIGINT  NOT NULL,
    irrelevant_all          BIGINT  NOT NULL,
    keyword_sessions        BIGINT  NOT NULL,
    payload_search_sessions BIGINT  NOT NULL,
    sessions_with_click     BIGINT  NOT NULL,
    rr_sum                  DOUBLE PRECISION NOT NULL,
    click_position_sum      BIGINT  NOT NULL,
    clicks_on_results       BIGINT  NOT NULL,
    results_shown_sum       BIGINT  NOT NULL,
    no_result_sessions      BIGINT  NOT NULL,
    irrelevant_sessions     BIGINT  NOT NULL,
    impressions             BIGINT  NOT NULL,
    distinct_queries        BIGINT  NOT NULL,
    kept_queries            BIGINT  NOT NULL,
    distinct_objects        BIGINT  NOT NULL,
    kept_objects            BIGINT  NOT NULL,
    top_n                   INTEGER NOT NULL,
    generation              BIGINT  NOT NULL,
    computed_at             BIGINT  NOT NULL
);

CREATE TABLE cs_batch_query (
    batch_id            TEXT    NOT NULL REFERENCES cs_batch_analytics (batch_id) ON DELETE CASCADE,
    query_key           TEXT    NOT NULL,
    sessions            BIGINT  NOT NULL,
    sessions_with_click BIGINT  NOT NULL,
    rr_sum              DOUBLE PRECISION NOT NULL,
    click_position_sum  BIGINT  NOT NULL,
    clicks_on_results   BIGINT  NOT NULL,
    results_shown_sum   BIGINT  NOT NULL,
    no_result_sessions  BIGINT  NOT NULL,
    irrelevant_sessions BIGINT  NOT NULL,
    distinct_objects    BIGINT  NOT NULL,
    kept_objects        BIGINT  NOT NULL,
    positions           TEXT    NOT NULL,
    top_sessions        INTEGER NOT NULL,
    top_no_results      INTEGER NOT NULL,
    top_no_clicks       INTEGER NOT NULL,
    PRIMARY KEY (batch_id, query_key)
);
CREATE INDEX cs_batch_query_key ON cs_batch_query (query_key);

CREATE TABLE cs_batch_query_object (
    batch_id     TEXT   NOT NULL,
    query_key    TEXT   NOT NULL,
    object_id    TEXT   NOT NULL,
    impressions  BIGINT NOT NULL,
    clicks       BIGINT NOT NULL,
    position_sum BIGINT NOT NULL,
    PRIMARY KEY (batch_id, query_key, object_id),
    FOREIGN KEY (batch_id, query_key) REFERENCES cs_batch_query (batch_id, query_key) ON DELETE CASCADE
);

CREATE TABLE cs_batch_object (
    batch_id     TEXT   NOT NULL REFERENCES cs_batch_analytics (batch_id) ON DELETE CASCADE,
    object_id    TEXT   NOT NULL,
    impressions  BIGINT NOT NULL,
    clicks       BIGINT NOT NULL,
    position_sum BIGINT NOT NULL,
    PRIMARY KEY (batch_id, object_id)
);
