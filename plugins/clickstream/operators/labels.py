"""BatchLabelsOperator: the training-signal labels of a released batch, written beside its dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import ClickstreamBaseOperator, InvalidTaskInput
from clickstream.operators.extract import dataset_manifest, dataset_root
from clickstream.operators.links import BatchLink, DatasetLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from clickstream.operators.lineage import Lineage


class BatchLabelsOperator(ClickstreamBaseOperator):
    """Fit the position-based click model on a released batch and write its three tables under
    ``<base_path>/<batch_id>/``: ``propensities``, ``judgments`` and ``pairs`` (docs/training-signal.md).

    The store fits the model on one aggregation pass over the batch (memory bounded by the distinct
    (query, object, position) triples; the fit's iterations and convergence are logged) and keeps the
    examination curve and the top queries' judgments (the Clickstream page and the REST API show them);
    then the pairs are made from the batch's sessions, ``page_size`` at a time. The task owns exactly the
    three folders: a retry clears their part files and writes them again, and touches nothing else. It
    returns the manifest's ``labels`` entry (the fit's report, each table's rows and parts), which the
    release DAG's ``write_manifest`` records. Progress: sessions of the pairs pass done / fitted, rate.

    An unknown or still collecting batch fails the task without retry.

    :param batch_id: a released batch (templated).
    :param base_path: dataset base path (templated); default ``[clickstream] dataset_base_path``, else
        ``$AIRFLOW_HOME/clickstream/datasets``.
    :param page_size: sessions per page of the pairs pass (templated; default 1000).
    :param pages_per_part: pages per part file of ``pairs`` (templated; default 10).
    :param progress_interval_s: seconds between two progress lines at least (default 5).
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = (
        "batch_id",
        "base_path",
        "page_size",
        "pages_per_part",
        *ClickstreamBaseOperator.template_fields,
    )
    ui_color = "#f7efe4"
    #: "Batch" (the batch on the Clickstream page) and "Dataset" (:mod:`clickstream.operators.links`).
    operator_extra_links = (BatchLink(), DatasetLink())

    def __init__(
        self,
        *,
        batch_id: str,
        base_path: str | None = None,
        page_size: int | str = 1000,
        pages_per_part: int | str = 10,
        progress_interval_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.base_path = base_path
        self.page_size = page_size
        self.pages_per_part = pages_per_part
        self.progress_interval_s = progress_interval_s
        self.result: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from clickstream.dataset import write_batch_labels
        from clickstream.progress import Progress

        page_size = positive_int("page_size", self.page_size, 1000)
        pages_per_part = positive_int("pages_per_part", self.pages_per_part, 10)
        root = dataset_root(self.base_path, self.batch_id)
        self.log.info("Labels of batch %s into %s (page size %d)", self.batch_id, root, page_size)
        progress: list[Progress] = []

        def on_page(sessions: int, total: int) -> None:
            if not progress:  # the fit is done: its report gives the total of the pairs pass
                progress.append(
                    Progress(
                        self.log,
                        f"pairs of batch {self.batch_id}",
                        total,
                        "sessions",
                        interval_s=self.progress_interval_s,
                    )
                )
            progress[0].update(sessions)

        with self.store() as hook:
            result = write_batch_labels(
                hook,
                root,
                self.batch_id,
                page_size=page_size,
                pages_per_part=pages_per_part,
                logger=self.log,
                on_page=on_page,
            )
        if progress:
            progress[0].done()
        self.result = {"batch_id": self.batch_id, **result}
        return self.result

    def dataset_manifest(self) -> str:
        """The manifest of the dataset the labels are written into (the "Dataset" link)."""
        return dataset_manifest(self.base_path, self.batch_id)

    def lineage(self) -> Lineage:
        """Reads the batch's sessions and events; writes the three label folders of the dataset root."""
        from clickstream.operators.lineage import BATCHES, EVENTS, SESSIONS, Lineage, Location, Table

        result = self.result or {}
        tables = result.get("tables") or {}
        root = dataset_root(self.base_path, self.batch_id)
        return Lineage(
            inputs=[Table(BATCHES), Table(SESSIONS), Table(EVENTS)],
            outputs=[
                Location(str(root / name), rows=t.get("rows"), files=len(t.get("parts") or ()))
                for name, t in tables.items()
            ],
            run={"batch_id": self.batch_id, **{f"{k}_rows": t.get("rows") for k, t in tables.items()}},
        )


def positive_int(field: str, value: Any, default: int) -> int:
    """A templated integer >= 1 (strings arrive from templates; '' and 'None' mean ``default``)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidTaskInput(f"{field}: expected an integer, got {value!r}") from None
    if number < 1:
        raise InvalidTaskInput(f"{field}: must be >= 1, got {number}")
    return number
