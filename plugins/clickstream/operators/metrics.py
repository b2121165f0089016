"""BatchMetricsOperator: a released batch's search-quality metrics, written beside its dataset."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from clickstream.operators.extract import dataset_root

if TYPE_CHECKING:
    from airflow.sdk import Context


class BatchMetricsOperator(BaseOperator):
    """Compute a batch's metrics in the store and write them to ``<base_path>/<batch_id>/metrics.json``.

    Metrics: ``sessions``, ``events``, ``clicks``, ``sessions_with_click``, ``click_through_rate``,
    ``mean_reciprocal_rank`` (of the first click), ``no_click_rate``, ``irrelevant_rate``, ``late_events``
    (arrived after the release). Rates are ``null`` for an empty batch. Returns the metrics plus
    ``path`` (where they were written, or null with ``write_file=False``). Re-running overwrites the file.

    :param batch_id: the batch (templated).
    :param base_path: dataset base path (templated); default (None or empty): ``[clickstream]
        dataset_base_path``, else ``$AIRFLOW_HOME/clickstream/datasets``.
    :param write_file: write ``metrics.json`` beside the dataset (default True).
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = ("batch_id", "base_path", "clickstream_conn_id")
    ui_color = "#e4ecf7"

    def __init__(
        self,
        *,
        batch_id: str,
        base_path: str | None = None,
        write_file: bool = True,
        clickstream_conn_id: str = "clickstream_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.base_path = base_path
        self.write_file = write_file
        self.clickstream_conn_id = clickstream_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from clickstream.hooks import ClickstreamHook
        from clickstream.operators._errors import fail_without_retry

        with ClickstreamHook(self.clickstream_conn_id) as hook, fail_without_retry():
            metrics = hook.batch_metrics(self.batch_id).model_dump()
        path = None
        if self.write_file:
            root = dataset_root(self.base_path, self.batch_id)
            root.mkdir(parents=True, exist_ok=True)
            target = root / "metrics.json"
            with target.open("w") as out:
                json.dump(metrics, out, indent=2)
            path = str(target)
        self.log.info(
            "Metrics of batch %s: %s",
            self.batch_id,
            ", ".join(f"{k}={v}" for k, v in metrics.items() if k != "batch_id"),
        )
        if path:
            self.log.info("Written to %s", path)
        return {**metrics, "path": path}
