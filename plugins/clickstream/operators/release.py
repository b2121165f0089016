"""ReleaseBatchOperator: close the collecting batch under an idempotent ``release_id``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import ClickstreamBaseOperator
from clickstream.operators.links import BatchLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from clickstream.operators.lineage import Lineage

#: Default ``release_id``: one release per DAG run, so a retry or a cleared rerun answers the same release.
DEFAULT_RELEASE_ID = "{{ dag.dag_id }}/{{ run_id }}"


class ReleaseBatchOperator(ClickstreamBaseOperator):
    """Release the collecting batch of the session store and return ``{release_id, batch_id, released_at}``.

    ``release_id`` is the store's idempotency key: the same id always answers the same release, so Airflow
    retries and cleared reruns of a DAG run never release a second batch. When there is nothing to release
    (no collecting batch, and the id was never used) the task is *skipped*, and so is everything downstream
    with the default trigger rule. An invalid ``release_id`` fails the task without retry.

    The result is pushed as ``return_value`` and, by default (``multiple_outputs=True``), also key by key, so
    ``release.output["batch_id"]`` can feed other tasks. Its extra link "Batch" opens the released batch on
    the Clickstream page of the Airflow UI.

    :param release_id: the release's id (templated); default ``{{ dag.dag_id }}/{{ run_id }}``.
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = ("release_id", *ClickstreamBaseOperator.template_fields)
    ui_color = "#e8f4ea"
    #: "Batch": the released batch on the Clickstream page (:mod:`clickstream.operators.links`).
    operator_extra_links = (BatchLink(),)

    def __init__(self, *, release_id: str = DEFAULT_RELEASE_ID, multiple_outputs: bool = True, **kwargs: Any) -> None:
        super().__init__(multiple_outputs=multiple_outputs, **kwargs)
        self.release_id = release_id
        self.released: dict[str, Any] | None = None
        self.sessions: int | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from clickstream.store import NotFound

        with self.store() as hook:
            try:
                result = hook.release_batch(self.release_id)
            except NotFound as err:
                self.log.info("Nothing to release (%s): skipping this task and its downstream tasks.", err.detail)
                raise AirflowSkipException(f"nothing to release: {err.detail}") from None
            self.released = result.model_dump()
            self.sessions = hook.get_batch(result.batch_id).sessions
        self.log.info(
            "Release %r: batch %s released at %d (ms since epoch), %s session(s).",
            result.release_id,
            result.batch_id,
            result.released_at,
            self.sessions,
        )
        return result.model_dump()

    def lineage(self) -> Lineage:
        """Reads the collecting batch and its sessions; writes the batch's release (``cs_batch``)."""
        from clickstream.operators.lineage import BATCHES, SESSIONS, Lineage, Table

        released = self.released or {}
        return Lineage(
            inputs=[Table(BATCHES), Table(SESSIONS, rows=self.sessions)],
            outputs=[Table(BATCHES, rows=1 if released else None)],
            run={**released, "sessions": self.sessions} if released else {},
        )
