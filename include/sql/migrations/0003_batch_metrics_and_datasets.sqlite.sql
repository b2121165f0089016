-- Clickstream session store, version 3: stored batch metrics and the dataset of a released batch.
-- cs_batch_metrics keeps the search-quality metrics of a released batch and its position curve (positions
-- 1..20, as JSON [[shown, clicks], ...]), read in one snapshot. batch_metrics keeps them each time it runs
-- on one (the release DAG's metrics task; a read of a released batch without them computes a few). A
-- computation is kept only if no user was erased since its snapshot (the count of cs_erased_session, read
-- first in that snapshot, is unchanged when the keep-write runs, serialised against erasures) and it saw at
-- least as many events and irrelevant flags as the kept one (both only grow in a released batch; an erasure
-- deletes the kept row). computed_at says when (for display: no decision reads a clock). Deleting a batch
-- (retention) deletes its row (ON DELETE CASCADE); erasing a user deletes the rows of the batches that held
-- their sessions.
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
    positions            TEXT NOT NULL,
    computed_at          BIGINT NOT NULL
);

ALTER TABLE cs_batch ADD COLUMN dataset TEXT;
