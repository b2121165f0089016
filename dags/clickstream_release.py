"""clickstream_release: release the collecting batch, extract it to Parquet (sharded) with its training-signal
labels, mark, metrics.

Runs on ``[clickstream] release_schedule`` (default ``@daily``). Tasks:

``release`` -> ``plan_shards`` -> ``extract`` (mapped, one task per shard) -> ``write_manifest`` (updates
the Asset ``clickstream://datasets/released-batches``) -> ``mark_for_improvement`` -> ``metrics``; beside the
extraction, ``plan_shards`` (which drops the old manifest first) -> ``labels`` (the click model's fit and the
``propensities``, ``judgments`` and ``pairs`` tables) -> ``write_manifest``, which lists the labels' parts.

When nothing was collected since the last release, ``release`` is skipped and so is the rest of the run.
Every task is safe to retry or clear: the release id is ``<dag_id>/<run_id>`` (so a rerun answers the same
release), shards rewrite only their own part files, the manifest is written last, marking is idempotent.
Parameters are documented in ``docs/operators-and-dags.md``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, conf, dag, get_current_context, task

from clickstream.operators import (
    BatchLabelsOperator,
    BatchMetricsOperator,
    ExtractBatchOperator,
    MarkForImprovementOperator,
    ReleaseBatchOperator,
)
from clickstream.operators.base import conn_id_param
from clickstream.operators.extract import RELEASED_DATASET_URI, default_base_path

RELEASED_DATASETS = Asset(RELEASED_DATASET_URI)
log = logging.getLogger(__name__)


@dag(
    dag_id="clickstream_release",
    schedule=conf.get("clickstream", "release_schedule", fallback="@daily") or None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["clickstream"],
    doc_md=__doc__,
    params={
        "conn_id": conn_id_param(),
        "base_path": Param(
            default_base_path(),
            type="string",
            title="Dataset base path",
            description="Where datasets are written, as <base_path>/<batch_id>/: a local path "
            "or an ObjectStoragePath URI such as file:///data or "
            "s3://aws_default@bucket/clickstream. Default: [clickstream] "
            "dataset_base_path, else $AIRFLOW_HOME/clickstream/datasets.",
        ),
        "shards": Param(
            2,
            type="integer",
            minimum=1,
            maximum=64,
            title="Extraction shards",
            description="How many parallel extract tasks split the batch (by session_number).",
        ),
        "page_size": Param(
            1000,
            type="integer",
            minimum=1,
            maximum=10000,
            title="Page size",
            description="Sessions read from the store per page (memory is bounded by a page).",
        ),
        "pages_per_part": Param(
            10,
            type="integer",
            minimum=1,
            title="Pages per part file",
            description="Pages written into one Parquet part file (one row group each).",
        ),
        "release_id": Param(
            None,
            type=["null", "string"],
            title="Release id",
            description="Leave empty for <dag_id>/<run_id> (retries and reruns of a run "
            "answer the same release). Set it to re-answer a known release.",
        ),
    },
)
def clickstream_release() -> None:
    release = ReleaseBatchOperator(
        task_id="release",
        release_id="{{ params.release_id or (dag.dag_id ~ '/' ~ run_id) }}",
        clickstream_conn_id="{{ params.conn_id }}",
    )

    @task
    def plan_shards(batch_id: str) -> list[dict[str, Any]]:
        """Split the released batch into shards of session numbers (and drop its old manifest)."""
        from clickstream.operators.extract import plan_shards as plan

        params = get_current_context()["params"]
        shards = plan(
            batch_id, int(params["shards"]), clickstream_conn_id=params["conn_id"], base_path=params["base_path"]
        )
        log.info(
            "batch %s: %d shard(s): %s",
            batch_id,
            len(shards),
            ", ".join(f"({s['after_number']}, {s['until_number']}]" for s in shards),
        )
        return shards

    shards = plan_shards(release.output["batch_id"])

    extract = ExtractBatchOperator.partial(
        task_id="extract",
        base_path="{{ params.base_path }}",
        page_size="{{ params.page_size }}",
        pages_per_part="{{ params.pages_per_part }}",
        write_manifest=False,
        clickstream_conn_id="{{ params.conn_id }}",
    ).expand_kwargs(shards)

    labels = BatchLabelsOperator(
        task_id="labels",
        batch_id=release.output["batch_id"],
        base_path="{{ params.base_path }}",
        page_size="{{ params.page_size }}",
        pages_per_part="{{ params.pages_per_part }}",
        clickstream_conn_id="{{ params.conn_id }}",
    )

    @task(outlets=[RELEASED_DATASETS])
    def write_manifest(
        shard_results: list[dict[str, Any]], batch_id: str, labels: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Combine the shards and the labels into the dataset's manifest (written last); announce the dataset."""
        from clickstream.operators.extract import write_dataset_manifest

        context = get_current_context()
        params = context["params"]
        summary = write_dataset_manifest(
            batch_id,
            list(shard_results),
            clickstream_conn_id=params["conn_id"],
            base_path=params["base_path"],
            labels=labels,
        )
        context["outlet_events"][RELEASED_DATASETS].extra = {
            "batch_id": batch_id,
            "release_id": summary["release_id"],
            "path": summary["paths"]["root"],
            "manifest": summary["paths"]["manifest"],
            "sessions": summary["sessions"],
            "events": summary["events"],
        }
        return summary

    manifest = write_manifest(extract.output, release.output["batch_id"], labels.output)
    shards >> labels  # plan_shards drops the old manifest first; the labels then run beside the extraction

    mark = MarkForImprovementOperator(
        task_id="mark_for_improvement",
        batch_id=release.output["batch_id"],
        clickstream_conn_id="{{ params.conn_id }}",
    )
    metrics = BatchMetricsOperator(
        task_id="metrics",
        batch_id=release.output["batch_id"],
        base_path="{{ params.base_path }}",
        clickstream_conn_id="{{ params.conn_id }}",
    )
    manifest >> mark >> metrics


clickstream_release()
