-- Clickstream session store, version 5: the training-signal labels of a released batch (issue 22).
-- The labels step fits the position-based click model (clickstream.signal.pbm) on the batch's aggregation
-- pass (clickstream.store.aggregation: keyword sessions not marked irrelevant, clicks = events of
-- [clickstream] label_event_types) and keeps, per released batch: the examination curve and the fit's
-- report (cs_batch_labels: propensities as JSON, one object a position 1..label_max_position, with the raw
-- CTR, theta, its standard error, and why a position is unidentified), and the judgments of its top
-- [clickstream] analytics_top_n queries by impressions (cs_batch_judgment: raw CTR vs debiased gamma per
-- (normalized query, object)); the dataset's judgments table holds every pair.
-- Same discipline as the kept metrics (0003) and analytics (0004): computed in one snapshot whose first
-- read is the erasure generation (the tombstone count), kept only if it is unchanged when the keep-write
-- runs (serialised against erasures) and the computation saw at least as many events and irrelevant flags
-- as the kept one. Erasing a user deletes the cs_batch_labels rows of the batches that held their
-- sessions; cs_batch_judgment follows by ON DELETE CASCADE, as both follow a deleted batch (retention).

CREATE TABLE cs_batch_labels (
    batch_id                TEXT PRIMARY KEY REFERENCES cs_batch (batch_id) ON DELETE CASCADE,
    max_position            INTEGER NOT NULL,
    label_event_types       TEXT    NOT NULL,
    sessions                BIGINT  NOT NULL,
    fitted_sessions         BIGINT  NOT NULL,
    payload_search_sessions BIGINT  NOT NULL,
    irrelevant_sessions     BIGINT  NOT NULL,
    empty_query_sessions    BIGINT  NOT NULL,
    impressions             BIGINT  NOT NULL,
    clicks                  BIGINT  NOT NULL,
    propensities            TEXT    NOT NULL,
    fit                     TEXT    NOT NULL,
    distinct_queries        BIGINT  NOT NULL,
    kept_queries            BIGINT  NOT NULL,
    judgments               BIGINT  NOT NULL,
    kept_judgments          BIGINT  NOT NULL,
    events                  BIGINT  NOT NULL,
    irrelevant_all          BIGINT  NOT NULL,
    generation              BIGINT  NOT NULL,
    computed_at             BIGINT  NOT NULL
);

CREATE TABLE cs_batch_judgment (
    batch_id              TEXT    NOT NULL REFERENCES cs_batch_labels (batch_id) ON DELETE CASCADE,
    query_key             TEXT    NOT NULL,
    object_id             TEXT    NOT NULL,
    impressions           BIGINT  NOT NULL,
    clicks                BIGINT  NOT NULL,
    mean_position         DOUBLE PRECISION NOT NULL,
    raw_ctr               DOUBLE PRECISION NOT NULL,
    gamma                 DOUBLE PRECISION,
    effective_sample_size DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (batch_id, query_key, object_id)
);
CREATE INDEX cs_batch_judgment_key ON cs_batch_judgment (query_key);
