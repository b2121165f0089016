"""Manual DAG ``clickstream_erase_user``: erase one user's sessions, events and improvement marks.

The task log lists the released batches that held the user's sessions: datasets extracted from them are
outside the store and must be cleaned by their owners. See docs/import-and-erasure.md.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from clickstream.operators.base import conn_id_param
from clickstream.operators.erasure import EraseUserOperator

with DAG(
    dag_id="clickstream_erase_user",
    schedule=None,
    catchup=False,
    tags=["clickstream"],
    doc_md=__doc__,
    params={
        "user_id": Param(
            type="string",
            minLength=1,
            maxLength=256,
            title="User id",
            description="The user_id whose data is erased from the session store.",
        ),
        "conn_id": conn_id_param(),
    },
):
    EraseUserOperator(task_id="erase_user", user_id="{{ params.user_id }}", clickstream_conn_id="{{ params.conn_id }}")
