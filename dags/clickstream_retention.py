"""DAG ``clickstream_retention``: delete released batches older than ``[clickstream] retention_days``.

Daily. With ``retention_days`` empty (the default) a run does nothing. Only batches whose dataset manifest
exists are deleted unless ``force`` is set; datasets themselves are never deleted. See
docs/import-and-erasure.md.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from clickstream.operators import PurgeReleasedBatchesOperator
from clickstream.operators.base import conn_id_param

with DAG(
    dag_id="clickstream_retention",
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    tags=["clickstream"],
    doc_md=__doc__,
    params={
        "retention_days": Param(
            "",
            type=["string", "number"],
            title="Retention (days)",
            description="Delete released batches released more than this many days ago; empty: "
            "[clickstream] retention_days (empty there too: off).",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Also delete batches whose dataset manifest does not exist (never extracted).",
        ),
        "base_path": Param(
            "",
            type="string",
            title="Dataset base path",
            description="Where the datasets are; empty: [clickstream] dataset_base_path.",
        ),
        "conn_id": conn_id_param(),
    },
):
    PurgeReleasedBatchesOperator(
        task_id="purge_released_batches",
        retention_days="{{ params.retention_days }}",
        base_path="{{ params.base_path }}",
        force="{{ params.force }}",
        clickstream_conn_id="{{ params.conn_id }}",
    )
