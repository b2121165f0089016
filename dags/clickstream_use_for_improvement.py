"""clickstream_use_for_improvement: mark sessions for model improvement from the Airflow UI (manual).

Trigger it with the form: paste the session ids, one per line. Each id is checked against the store's
rule (payload-search sessions and sessions without an event on a shown result, unless marked irrelevant,
are skipped; unknown ids are reported as not_found). The log shows one line per session and the task's
return value (XCom) holds the counts and the per-session outcomes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag

from clickstream.operators import MarkForImprovementOperator
from clickstream.operators.base import conn_id_param


@dag(
    dag_id="clickstream_use_for_improvement",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["clickstream"],
    doc_md=__doc__,
    render_template_as_native_obj=True,
    params={
        "session_ids": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1, "maxLength": 128},
            minItems=1,
            title="Session ids",
            description="Sessions to use for model improvement, one id per line.",
        ),
        "conn_id": conn_id_param(),
    },
)
def clickstream_use_for_improvement() -> None:
    MarkForImprovementOperator(
        task_id="use_for_improvement",
        session_ids="{{ params.session_ids }}",
        clickstream_conn_id="{{ params.conn_id }}",
    )


clickstream_use_for_improvement()
