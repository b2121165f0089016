-- Clickstream session store, version 3: stored batch metrics and the dataset of a released batch.
-- cs_batch_metrics keeps the search-quality metrics of a released batch (batch_metrics stores them each time
-- it runs on one: the release DAG's metrics task; a released batch read without them gets them computed once
-- and kept). They are a snapshot: computed_at says when. Deleting a batch (retention) deletes its row
-- (ON DELETE CASCADE); erasing a user deletes the rows of the batches that held their sessions, which are
-- then computed again on the next read.
-- cs_batch.dataset is the manifest of the batch's Parquet dataset (path or URI), recorded by the release
-- DAG's write_manifest step; NULL until then.

CREATE TABLE cs_batch_metrics (
    batch_id             TEXT PRIMARY KEY REFERENCES cs_batch (batch_id) ON DELETE CASCADE,
    sessions             BIGINT NOT NULL,
    events               BIGINT NOT NULL,
    clicks               BIGINT NOT NULL,
    sessions_with_click  BIGINT NOT NULL,
    click_through_rate   DOUBLE PRECISION,
    mean_reciprocal_rank DOUBLE PRECISION,
    no_click_rate        DOUBLE PRECISION,
    irrelevant_rate      DOUBLE PRECISION,
    late_events          BIGINT NOT NULL,
    computed_at          BIGINT NOT NULL
);

-- Keeping metrics checks for an erasure since the computation started (store_batch_metrics): by this index.
CREATE INDEX cs_erased_session_erased_at ON cs_erased_session (erased_at);

ALTER TABLE cs_batch ADD COLUMN dataset TEXT;
