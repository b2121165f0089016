"""BatchMetricsOperator: a released batch's search-quality metrics, written beside its dataset."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import ClickstreamBaseOperator, InvalidTaskInput
from clickstream.operators.extract import dataset_manifest, dataset_root
from clickstream.operators.links import BatchLink, DatasetLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from clickstream.models import AnalyticsComputed
    from clickstream.operators.lineage import Lineage


class BatchMetricsOperator(ClickstreamBaseOperator):
    """Compute a batch's metrics in the store and write them to ``<base_path>/<batch_id>/metrics.json``.

    Metrics: ``sessions``, ``events``, ``clicks``, ``sessions_with_click``, ``click_through_rate``,
    ``mean_reciprocal_rank`` (of the first click), ``no_click_rate``, ``irrelevant_rate``, ``late_events``
    (arrived after the release). Rates are ``null`` for an empty batch. Returns the metrics plus
    ``path`` (where they were written, or null with ``write_file=False``). Re-running overwrites the file.
    The store keeps the metrics of a released batch (the batch list and the Clickstream page show them),
    with its search analytics by query, both from one aggregation pass (``metrics_step``).
    Then the task computes the missing kept metrics of up to ``backfill`` older released batches (after an
    upgrade, an erasure, or releases made outside the DAG), newest first, and logs how many; an outage
    during that backfill is logged, not failed (the batch's own metrics are done). An unknown batch fails
    the task without retry. Extra links: "Batch" (the batch on the Clickstream page)
    and "Dataset" (the manifest of the dataset the metrics are written beside).

    :param batch_id: the batch (templated).
    :param base_path: dataset base path (templated); default (None or empty): ``[clickstream]
        dataset_base_path``, else ``$AIRFLOW_HOME/clickstream/datasets``.
    :param write_file: write ``metrics.json`` beside the dataset (default True).
    :param backfill: older released batches without kept metrics to compute per run (default 10; 0: none).
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = ("batch_id", "base_path", *ClickstreamBaseOperator.template_fields)
    ui_color = "#e4ecf7"
    #: "Batch" (the batch on the Clickstream page) and "Dataset" (:mod:`clickstream.operators.links`).
    operator_extra_links = (BatchLink(), DatasetLink())

    def __init__(
        self,
        *,
        batch_id: str,
        base_path: str | None = None,
        write_file: bool = True,
        backfill: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(backfill, bool) or not isinstance(backfill, int) or backfill < 0:
            raise InvalidTaskInput(f"backfill must be an integer >= 0, got {backfill!r}")
        self.backfill = backfill
        self.batch_id = batch_id
        self.base_path = base_path
        self.write_file = write_file
        self.metrics: dict[str, Any] | None = None
        self.written_to: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        with self.store() as hook:
            step = hook.metrics_step(self.batch_id)  # metrics and analytics: one aggregation pass
        metrics = step.metrics.model_dump()
        self.metrics = metrics
        path = None
        if self.write_file:
            root = dataset_root(self.base_path, self.batch_id)
            root.mkdir(parents=True, exist_ok=True)
            target = root / "metrics.json"
            with target.open("w") as out:
                json.dump(metrics, out, indent=2)
            path = self.written_to = str(target)
        self.log.info(
            "Metrics of batch %s: %s",
            self.batch_id,
            ", ".join(f"{k}={v}" for k, v in metrics.items() if k != "batch_id"),
        )
        if path:
            self.log.info("Written to %s", path)
        self._analytics(step.analytics)
        if self.backfill:
            self._backfill()
        return {**metrics, "path": path}

    def _analytics(self, done: AnalyticsComputed | None) -> None:
        """Log the batch's search analytics computed and kept with its metrics (one aggregation pass, shared
        with the labels). A collecting batch has none (logged, not failed)."""
        if done is None:
            self.log.info("Search analytics not computed: batch %s is collecting", self.batch_id)
            return
        self.log.info(
            "Search analytics of batch %s %s: %d keyword sessions, %d/%d queries and %d/%d objects kept (top %d)",
            self.batch_id,
            "kept" if done.kept else "computed, not kept (an erasure or a newer computation meanwhile)",
            done.keyword_sessions,
            done.kept_queries,
            done.distinct_queries,
            done.kept_objects,
            done.distinct_objects,
            done.top_n,
        )

    def _backfill(self) -> None:
        """Compute the missing kept metrics of up to ``backfill`` older released batches; log how many."""
        from clickstream.store import StoreUnavailable

        try:
            with self.store() as hook:
                done = hook.compute_missing_metrics(self.backfill)
        except StoreUnavailable as err:
            self.log.warning("Backfill of missing batch metrics skipped (store unavailable): %s", err)
            return
        try:
            with self.store() as hook:
                analytics = hook.compute_missing_analytics(self.backfill)
        except StoreUnavailable as err:
            self.log.warning("Backfill of missing search analytics skipped (store unavailable): %s", err)
        else:
            self.log.info(
                "Backfill: computed the search analytics of %d older released batch(es)%s",
                len(analytics.computed),
                "; more are missing: the next runs continue" if analytics.more else "",
            )
        self.log.info(
            "Backfill: computed the kept metrics of %d older released batch(es)%s%s",
            len(done.computed),
            f" ({', '.join(done.computed)})" if done.computed else "",
            "; more are missing: the next runs continue" if done.more else "; none is missing",
        )

    def dataset_manifest(self) -> str:
        """The manifest of the dataset beside which the metrics are written (the "Dataset" link)."""
        return dataset_manifest(self.base_path, self.batch_id)

    def lineage(self) -> Lineage:
        """Reads the batch's sessions and events; writes ``metrics.json`` into the dataset root."""
        from clickstream.operators.lineage import BATCHES, EVENTS, SESSIONS, Lineage, Location, Table

        metrics = self.metrics or {}
        outputs: list[Table | Location] = []
        if self.write_file:
            outputs.append(
                Location(str(dataset_root(self.base_path, self.batch_id)), files=1 if self.written_to else None)
            )
        return Lineage(
            inputs=[
                Table(BATCHES),
                Table(SESSIONS, rows=metrics.get("sessions")),
                Table(EVENTS, rows=metrics.get("events")),
            ],
            outputs=outputs,
            run={"batch_id": self.batch_id, **{k: v for k, v in metrics.items() if k != "batch_id"}},
        )
