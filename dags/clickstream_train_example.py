"""clickstream_train_example: an example consumer, scheduled on the released-dataset Asset.

Each time ``clickstream_release`` completes a dataset it updates the Asset ``clickstream://datasets/released-batches``
with ``{batch_id, path, manifest, sessions, events}`` in the event's extra; this DAG then runs, reads the
dataset with pandas and logs a summary a training job would start from (sessions, events, click-through
rate, clicks per rank, the most frequent queries) and the training pairs of the labels step (``pairs``: how
many, their weights, a batch of (query, positive, negative, weight) rows ready for a contrastive loss; see
docs/training-signal.md). When several releases completed before the run started,
the run has one event per dataset and reads every one of them. Triggered by hand it reads the batch given
as ``batch_id``, or the newest complete dataset under ``base_path``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

from clickstream.operators.extract import RELEASED_DATASET_URI, default_base_path

RELEASED_DATASETS = Asset(RELEASED_DATASET_URI)
log = logging.getLogger(__name__)


@dag(
    dag_id="clickstream_train_example",
    schedule=[RELEASED_DATASETS],
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["clickstream", "example"],
    doc_md=__doc__,
    params={
        "base_path": Param(
            default_base_path(),
            type="string",
            title="Dataset base path",
            description="Used when the run was not triggered by the Asset.",
        ),
        "batch_id": Param(
            None,
            type=["null", "string"],
            title="Batch id",
            description="Batch to read when triggered by hand; empty: the newest dataset.",
        ),
    },
)
def clickstream_train_example() -> None:
    @task
    def summarize_dataset() -> dict[str, Any]:
        """Read the released datasets with pandas and log what a training job would see.

        One run may be triggered by several asset events (releases that completed while this DAG was
        queued or running): every one of their datasets is read, oldest event first, each once.
        """
        from airflow.sdk import ObjectStoragePath

        from clickstream.operators.extract import dataset_root, normalize_base_path

        context = get_current_context()
        params = context["params"]
        events = sorted(
            (e for evs in context["triggering_asset_events"].values() for e in evs if e.extra and e.extra.get("path")),
            key=lambda e: e.timestamp,
        )
        roots = list(dict.fromkeys(e.extra["path"] for e in events))  # a rerun may announce a dataset again
        if roots:
            log.info("%d asset event(s) triggered this run: %d dataset(s) to read", len(events), len(roots))
            datasets = [ObjectStoragePath(path) for path in roots]
        elif params.get("batch_id"):
            datasets = [dataset_root(params["base_path"], params["batch_id"])]
        else:
            datasets = [_newest_dataset(ObjectStoragePath(normalize_base_path(params["base_path"])))]
        summaries = [_summarize(root) for root in datasets]
        sessions = sum(s["sessions"] for s in summaries)
        total = {
            "batch_ids": [s["batch_id"] for s in summaries],
            "sessions": sessions,
            "events": sum(s["events"] for s in summaries),
            "clicks": sum(s["clicks"] for s in summaries),
            "datasets": summaries,
        }
        if len(summaries) > 1:
            log.info(
                "%d datasets: %d sessions, %d events, %d clicks in all",
                len(summaries),
                total["sessions"],
                total["events"],
                total["clicks"],
            )
        return total

    summarize_dataset()


def _summarize(root: Any) -> dict[str, Any]:
    """Read one dataset with pandas; log and return what a training job would start from."""
    from clickstream import dataset

    manifest = dataset.read_manifest(root)
    sessions = dataset.read_table(root, "sessions", manifest)
    events = dataset.read_table(root, "events", manifest)

    clicks = events[events["event_type"] == "click"]
    clicked = clicks["session_id"].nunique()
    ranks = clicks["meta"].dropna().str.extract(r'"clicked_rank":(\d+)')[0].dropna().astype(int)
    summary = {
        "batch_id": manifest["batch_id"],
        "path": str(root),
        "sessions": len(sessions),
        "events": len(events),
        "clicks": len(clicks),
        "click_through_rate": round(clicked / len(sessions), 4) if len(sessions) else None,
        "clicks_by_rank": {int(k): int(v) for k, v in ranks.value_counts().sort_index().head(10).items()},
        "top_queries": {str(k): int(v) for k, v in sessions["search_query"].dropna().value_counts().head(5).items()},
    }
    log.info(
        "dataset %s (batch %s): %d sessions, %d events, %d clicks, CTR %s",
        root,
        summary["batch_id"],
        summary["sessions"],
        summary["events"],
        summary["clicks"],
        summary["click_through_rate"],
    )
    log.info("clicks by rank: %s", summary["clicks_by_rank"])
    log.info("top queries: %s", summary["top_queries"])
    if "labels" in manifest:
        summary["pairs"] = _pairs_summary(root, manifest)
    return summary


def _pairs_summary(root: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Read the ``pairs`` table (and the examination curve) the way a fine-tuning job would start."""
    from clickstream import dataset

    pairs = dataset.read_table(root, "pairs", manifest)
    curve = dataset.read_table(root, "propensities", manifest)
    # A fine-tuning job (sentence-transformers style) takes (anchor, positive, negative) triples and weighs
    # each example's loss by `weight` (the clipped inverse propensity of the positive's position).
    examples = list(
        pairs[["query", "positive_object_id", "negative_object_id", "weight"]].head(3).itertuples(index=False)
    )
    summary = {
        "pairs": len(pairs),
        "sessions": int(pairs["session_id"].nunique()),
        "weight_sum": round(float(pairs["weight"].sum()), 4),
        "max_weight": round(float(pairs["weight"].max()), 4) if len(pairs) else None,
        "identified_positions": [int(p) for p in curve.loc[curve["identified"], "position"]],
    }
    log.info(
        "pairs: %d from %d sessions (weights sum %s, max %s); θ identified at positions %s; first: %s",
        summary["pairs"],
        summary["sessions"],
        summary["weight_sum"],
        summary["max_weight"],
        summary["identified_positions"],
        [tuple(e) for e in examples],
    )
    return summary


def _newest_dataset(base: Any) -> Any:
    """The newest complete dataset under a base path (by release time in its manifest)."""
    from clickstream import dataset

    newest, newest_at = None, -1
    for root in base.iterdir() if base.exists() else ():
        if (root / dataset.MANIFEST).exists():
            released_at = dataset.read_manifest(root).get("released_at") or 0
            if released_at > newest_at:
                newest, newest_at = root, released_at
    if newest is None:
        raise FileNotFoundError(f"no complete dataset under {base}; run clickstream_release first")
    return newest


clickstream_train_example()
