"""The batch overview: the Clickstream page's read model of batches.

Each batch as the page shows it (:class:`~clickstream.models.BatchSummary`: status, times, counts, kept
metrics, dataset), one at a time or a keyset page of them. Reads show the kept metrics
(:mod:`~clickstream.store.metrics`) and compute missing ones, at most
:data:`~clickstream.store.config.READ_COMPUTE_BUDGET` a call. The plain batch rows (status, release, session
numbers) are :meth:`~clickstream.store.batches.BatchOperations.get_batch` and
:meth:`~clickstream.store.batches.BatchOperations.list_batches`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import RowMapping

from clickstream import models
from clickstream.store.checks import int_between, optional_text
from clickstream.store.config import MAX_BATCHES_PAGE, READ_COMPUTE_BUDGET
from clickstream.store.errors import NotFound, StoreUnavailable
from clickstream.store.metrics import MetricsOperations, batch_quality

log = logging.getLogger(__name__)


class OverviewOperations(MetricsOperations):
    """The page's reads; built on the metrics' computation and keep (:class:`MetricsOperations`)."""

    def list_batches_page(
        self, limit: int = 20, before: str | None = None, release_id: str | None = None
    ) -> models.BatchList:
        """Batches newest first, a keyset page at a time, each with its counts, metrics and dataset.

        ``before`` is the previous page's ``next_before`` (None: from the newest batch; any batch id works,
        even one deleted since: the page holds the batches whose ids sort below it); ``next_before`` is None
        when no older batch is left. ``release_id`` keeps only the batch of that release. A released batch's
        metrics (and its counts) are the kept ones (:meth:`batch_metrics`); of those that have none yet, at
        most :data:`READ_COMPUTE_BUDGET` are computed (and kept) by this call, the others have ``metrics``,
        ``sessions`` and ``events`` None until a later read or the metrics task computes them. A collecting
        batch is counted now and has no metrics. (:meth:`list_batches` lists the plain batch rows.)

        :raises InvalidInput: ``limit`` outside 1..:data:`MAX_BATCHES_PAGE`, an empty ``before`` or ``release_id``.
        """
        int_between("limit", limit, 1, MAX_BATCHES_PAGE)
        before = optional_text("before", before, 128)
        release_id = optional_text("release_id", release_id, 512)
        with self.db.transaction(write=False) as conn:
            rows = (
                self.db.run(conn, "batch_summaries", before=before, release_id=release_id, limit=limit + 1)
                .mappings()
                .all()
            )
        page = rows[:limit]
        return models.BatchList(
            batches=self._summaries(page, READ_COMPUTE_BUDGET),
            next_before=page[-1]["batch_id"] if len(rows) > limit else None,
        )

    def get_batch_summary(self, batch_id: str) -> models.BatchSummary:
        """One batch as :meth:`list_batches_page` shows it, with its counts, metrics and dataset (a released
        batch without kept metrics gets them computed now); :meth:`get_batch` is the plain batch row.

        :raises NotFound: unknown ``batch_id``.
        """
        with self.db.transaction(write=False) as conn:
            row = self.db.run(conn, "batch_summary", batch_id=batch_id).mappings().first()
        found = self._summaries([row] if row is not None else [], READ_COMPUTE_BUDGET)
        if not found:
            raise NotFound(f"batch_id {batch_id!r} not found")
        return found[0]

    def _summaries(self, rows: Sequence[RowMapping], budget: int) -> list[models.BatchSummary]:
        """``batch_summary`` rows as summaries: kept metrics; computed (and kept) for at most ``budget``
        released batches without them, the others None; counted now for a collecting batch. A batch deleted
        meanwhile (retention) is left out. Keeping is best-effort here: a read never fails because the
        keep-write could not run (store busy or down, batch purged meanwhile); it answers what it computed."""
        summaries = []
        for row in rows:
            batch_id = row["batch_id"]
            sessions, events, metrics = row["sessions"], row["events"], None
            if row["status"] == "collecting":
                with self.db.transaction(write=False) as conn:
                    counted = self.db.run(conn, "batch_counts", batch_id=batch_id).mappings().one()
                sessions, events = counted["sessions"], counted["events"]
            elif row["metrics_computed_at"] is not None:
                metrics = batch_quality(row)
            elif budget > 0:
                budget -= 1
                log.info("batch %s: released without kept metrics; computing them", batch_id)
                try:
                    computed = self._compute_metrics(batch_id)
                except NotFound:
                    continue
                try:
                    self._keep_metrics(computed)
                except StoreUnavailable as err:
                    log.warning("batch %s: computed metrics not kept (%s); answering them anyway", batch_id, err)
                m = computed.metrics
                sessions, events = m.sessions, m.events
                metrics = batch_quality(m.model_dump())
            summaries.append(
                models.BatchSummary(
                    batch_id=batch_id,
                    status=row["status"],
                    created_at=row["created_at"],
                    released_at=row["released_at"],
                    release_id=row["release_id"],
                    sessions=sessions,
                    events=events,
                    metrics=metrics,
                    dataset=row["dataset"],
                )
            )
        return summaries
