"""Manual DAG ``clickstream_import``: import of clickstream history files into the session store.

Trigger it from the UI's form (or ``airflow dags trigger clickstream_import --conf '{"path": ...}'``).
See docs/import-and-erasure.md for the file formats and what the report means.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from clickstream.operators import ImportHistoryOperator
from clickstream.operators.base import conn_id_param

with DAG(
    dag_id="clickstream_import",
    schedule=None,
    catchup=False,
    tags=["clickstream"],
    render_template_as_native_obj=True,  # numbers from the form reach the operator as numbers
    max_active_runs=1,
    doc_md=__doc__,
    params={
        "path": Param(
            type="string",
            minLength=1,
            title="Path",
            description="A history file, or a folder of them, readable through ObjectStoragePath: "
            "/data/history/, file:///data/history/sessions.jsonl, s3://aws_default@bucket/history/",
        ),
        "format": Param(
            "jsonl",
            type="string",
            enum=["jsonl", "parquet"],
            title="Format",
            description="jsonl: JSON Lines (.jsonl, .ndjson, optionally .gz); parquet: .parquet",
        ),
        "invalid_threshold": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            title="Invalid threshold",
            description="Largest share of invalid rows (0..1) that still loads the valid rows; above it "
            "nothing is loaded. 0: every row must be valid.",
        ),
        "max_errors": Param(
            100,
            type="integer",
            minimum=0,
            maximum=10000,
            title="Max reported errors",
            description="At most this many invalid rows are listed (file, line, reason).",
        ),
        "conn_id": conn_id_param(),
    },
):
    ImportHistoryOperator(
        task_id="import_history",
        path="{{ params.path }}",
        format="{{ params.format }}",
        invalid_threshold="{{ params.invalid_threshold }}",
        max_errors="{{ params.max_errors }}",
        clickstream_conn_id="{{ params.conn_id }}",
    )
