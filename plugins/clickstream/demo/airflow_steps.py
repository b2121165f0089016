"""The demo's work in Airflow and the session store: migrations, loading the DAG, reading a DAG run's outcome.

Every Airflow import is inside a function: the environment (:mod:`clickstream.demo.environment`) must be
set before the first ``import airflow``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from clickstream.demo.environment import DAG_ID

if TYPE_CHECKING:
    from airflow.sdk import DAG


def migrate_airflow_db() -> None:
    """Create or upgrade Airflow's metadata database."""
    from airflow.utils import db

    db.upgradedb()  # what `airflow db migrate` runs: creates a new DB from the ORM, or upgrades an old one


def migrate_store() -> list[int]:
    """Migrate the session store of the ``clickstream_default`` Connection; returns the versions applied."""
    from clickstream.hooks import ClickstreamHook

    with ClickstreamHook() as hook:
        return hook.migrate()


def load_dag() -> DAG:
    """The ``clickstream_release`` DAG from the DAGs folder; exits with the import errors if it is missing."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = bag.get_dag(DAG_ID)
    if dag is None:
        errors = "\n".join(f"{path}: {err}" for path, err in bag.import_errors.items())
        raise SystemExit(f"demo: DAG {DAG_ID!r} not found in {os.environ['AIRFLOW__CORE__DAGS_FOLDER']}\n{errors}")
    return dag


def run_outcome(dag_id: str, run_id: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """States of every task of one DAG run (``{task_id: [state per map index]}``) and the return values
    of its unmapped tasks (``{task_id: value}``), read from Airflow's metadata DB.

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    states: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.start_date.is_(None), TaskInstance.start_date, TaskInstance.map_index)
        ).all()  # in the order they ran
        for task_id, _map_index, state in rows:
            states.setdefault(task_id, []).append(str(getattr(state, "value", state)))
        # get_many is annotated Select[tuple[XComModel]], which SQLAlchemy 2.1 reads as one tuple-typed column
        xcoms = cast(
            "Iterable[XComModel]",
            session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value", map_indexes=-1)),
        )
        for xcom in xcoms:
            values[xcom.task_id] = XComModel.deserialize_value(xcom)
    return states, values


def latest_released_batch() -> str | None:
    """The id of the newest released batch in the store; None without one (or without a store yet)."""
    from clickstream.hooks import ClickstreamHook

    try:
        with ClickstreamHook() as hook:
            batches = hook.list_batches(status="released", limit=100)
    except Exception:
        return None
    return max((b.batch_id for b in batches), default=None)
