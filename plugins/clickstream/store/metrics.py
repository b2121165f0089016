"""Batch metrics: compute a batch's search-quality metrics and position curve, keep those of released batches
(under the erasure-generation discipline), backfill the missing ones, read the kept series and the
click-through rate by result position.

A computation reads in one snapshot that starts with the erasure generation (the tombstone count); the keep
is a short write of its own that keeps only if no erasure committed since and no newer computation was kept
(``store_batch_metrics`` decides, in the database; no clock does). The page's view of batches, which shows
the kept metrics and computes missing ones within a budget, is :mod:`~clickstream.store.overview`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, exc

from clickstream import models
from clickstream.store.aggregation import BatchAggregate, aggregate_batch
from clickstream.store.base import StoreBase
from clickstream.store.batches import require_batch
from clickstream.store.checks import int_between
from clickstream.store.config import KEPT_POSITIONS, MAX_METRICS_SERIES, MAX_POSITION
from clickstream.store.db import Database, dumps, loads
from clickstream.store.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputedMetrics:
    """A metrics computation: the metrics, the curve of :data:`~clickstream.store.config.KEPT_POSITIONS`
    positions, the erasure generation its snapshot started with, and whether the batch was released then."""

    metrics: models.BatchMetrics
    curve: list[tuple[int, int]]
    generation: int
    released: bool

    @property
    def batch_id(self) -> str:
        return self.metrics.batch_id


def batch_quality(row: Mapping[str, Any] | RowMapping) -> models.BatchQuality:
    """The page's names for kept metrics (a ``batch_summary`` row) or computed ones (the same keys)."""
    return models.BatchQuality(
        ctr=row["click_through_rate"],
        mrr=row["mean_reciprocal_rank"],
        no_click_rate=row["no_click_rate"],
        irrelevant_rate=row["irrelevant_rate"],
        late_events=row["late_events"],
    )


def metrics_of(aggregate: BatchAggregate, generation: int, released: bool) -> ComputedMetrics:
    """The batch metrics and the kept position curve, derived from an aggregation pass (its
    :attr:`~clickstream.store.aggregation.BatchAggregate.batch` sums, over every session of the batch)."""
    b = aggregate.batch
    n, with_click = b.sessions, b.sessions_with_click

    def ratio(x: float) -> float | None:
        return round(x / n, 6) if n else None

    metrics = models.BatchMetrics(
        batch_id=aggregate.batch_id,
        sessions=n,
        events=b.events,
        clicks=b.clicks,
        sessions_with_click=with_click,
        click_through_rate=ratio(with_click),
        mean_reciprocal_rank=ratio(b.rr_sum),
        no_click_rate=ratio(n - with_click),
        irrelevant_rate=ratio(b.irrelevant),
        late_events=b.late_events,
    )
    return ComputedMetrics(metrics, b.curve(KEPT_POSITIONS), generation, released)


def keep_metrics(db: Database, computed: ComputedMetrics, computed_at: int) -> bool:
    """Keep a released batch's computed metrics; whether they were kept.

    The write first waits for erasures in flight (PostgreSQL: ``lock_erasures``; SQLite's write lock
    serialises it already), then ``store_batch_metrics`` keeps only if the tombstone count is still the one of
    the computation's snapshot (an erasure since may have deleted the kept row, and the snapshot holds the
    erased sessions) and the computation saw at least as many events and irrelevant flags as the kept one
    (they only grow in a released batch, so fewer means an older snapshot). The database decides; no clock
    does. A batch deleted since (retention: the foreign key) is not kept either.
    """
    try:
        with db.transaction(write=True) as conn:
            if db.has("lock_erasures"):
                db.run(conn, "lock_erasures")
            kept = store_metrics(db, conn, computed, computed_at)
    except exc.IntegrityError:  # the batch row was deleted after the EXISTS check (a concurrent purge)
        kept = False
    if not kept:
        log.info("batch %s: computed metrics not kept (erasure, purge or a newer computation)", computed.batch_id)
    return kept


def store_metrics(db: Database, conn: Connection, computed: ComputedMetrics, computed_at: int) -> bool:
    """``store_batch_metrics`` on ``conn`` (a write transaction that holds the erasure lock): whether kept."""
    return bool(
        db.run(
            conn,
            "store_batch_metrics",
            **computed.metrics.model_dump(),
            positions=dumps(computed.curve),
            generation=computed.generation,
            computed_at=computed_at,
        ).rowcount
    )


class MetricsOperations(StoreBase):
    def batch_metrics(self, batch_id: str) -> models.BatchMetrics:
        """Search-quality metrics of a batch (see :class:`clickstream.models.BatchMetrics`), computed now.

        For a released batch they are also kept, with its position curve (positions 1..:data:`KEPT_POSITIONS`),
        and the batch list, the batch summary, the metrics series and :meth:`batch_positions` show the kept
        ones. Computed in one read snapshot, kept in a short write of its own, and only when that is safe: no
        user was erased since the snapshot (their sessions may be in it), and the kept computation did not see
        more (see :meth:`_keep_metrics`). A batch deleted meanwhile (retention) is simply not kept.

        :raises NotFound: unknown ``batch_id``.
        """
        computed = self._compute_metrics(batch_id)
        if computed.released:
            self._keep_metrics(computed)
        return computed.metrics

    def _compute_metrics(self, batch_id: str) -> ComputedMetrics:
        """The metrics and the kept position curve of a batch, read in one snapshot whose first read is the
        erasure generation (the tombstone count) that :meth:`_keep_metrics` compares: the aggregation pass
        without its per-query detail (:func:`~clickstream.store.aggregation.aggregate_batch`)."""
        db = self.db
        with db.transaction(write=False) as conn:
            if db.has("snapshot_read"):  # PostgreSQL: one snapshot for every query below (SQLite has one)
                db.run(conn, "snapshot_read")
            generation = int(db.run(conn, "erasure_generation").scalar_one())
            batch = require_batch(db, conn, batch_id)
            aggregate = aggregate_batch(db, conn, batch_id, detail=False)
        return metrics_of(aggregate, generation, batch["status"] == "released")

    def _keep_metrics(self, computed: ComputedMetrics) -> bool:
        """Keep a released batch's computed metrics (:func:`keep_metrics`); whether they were kept."""
        return keep_metrics(self.db, computed, self.clock())

    def _position_curve(self, conn: Connection, batch_id: str, max_position: int) -> list[tuple[int, int]]:
        """``(shown, clicks)`` for positions 1..``max_position`` of a batch (see :meth:`batch_positions`)."""
        return aggregate_batch(self.db, conn, batch_id, detail=False).batch.curve(max_position)

    def batch_positions(self, batch_id: str, max_position: int = 20) -> models.BatchPositions:
        """Click-through rate by result position (1..``max_position``, at most :data:`MAX_POSITION`): for each
        position, the sessions with a result there (``shown``), those with a click on it (``clicks``, a click
        as :meth:`batch_metrics` counts it; a result listed twice counts at its first position) and their
        ratio. Every position is listed, with ``shown`` 0 and ``ctr`` None where nothing was shown.

        A released batch with kept metrics answers from the curve kept with them (same snapshot) for
        ``max_position`` up to :data:`KEPT_POSITIONS`; otherwise the curve is computed now.

        :raises NotFound: unknown ``batch_id``.
        """
        int_between("max_position", max_position, 1, MAX_POSITION)
        db = self.db
        with db.transaction(write=False) as conn:
            require_batch(db, conn, batch_id)
            kept = None
            if max_position <= KEPT_POSITIONS:
                kept = db.run(conn, "kept_positions", batch_id=batch_id).scalar()
            if kept is not None:
                curve = [(int(shown), int(clicks)) for shown, clicks in loads(kept)[:max_position]]
            else:
                curve = self._position_curve(conn, batch_id, max_position)
        positions = [
            models.PositionCtr(
                position=position, shown=shown, clicks=clicked, ctr=round(clicked / shown, 6) if shown else None
            )
            for position, (shown, clicked) in enumerate(curve, start=1)
        ]
        return models.BatchPositions(batch_id=batch_id, positions=positions)

    def compute_missing_metrics(self, limit: int = 10) -> models.MetricsBackfill:
        """Compute and keep the metrics of up to ``limit`` (1..:data:`MAX_METRICS_SERIES`) released batches
        that have none kept, newest release first: after an upgrade from version 2, after an erasure, or for
        batches released outside the release DAG. The release DAG's metrics task runs it after each release;
        run it repeatedly (until ``more`` is false) to backfill everything at once.
        """
        int_between("limit", limit, 1, MAX_METRICS_SERIES)
        with self.db.transaction(write=False) as conn:
            missing = list(self.db.run(conn, "released_without_metrics", limit=limit + 1).scalars())
        computed = []
        for batch_id in missing[:limit]:
            try:
                self.batch_metrics(batch_id)
            except NotFound:  # purged meanwhile
                continue
            computed.append(batch_id)
        return models.MetricsBackfill(computed=computed, more=len(missing) > limit)

    def metrics_series(self, limit: int = 100) -> models.MetricsSeries:
        """The kept metrics of the last ``limit`` released batches (1..:data:`MAX_METRICS_SERIES`), oldest
        first: the points of the page's plots. Computes nothing: a batch without kept metrics yet is left out
        (:meth:`list_batches_page`, :meth:`compute_missing_metrics` and the metrics task compute them)."""
        int_between("limit", limit, 1, MAX_METRICS_SERIES)
        with self.db.transaction(write=False) as conn:
            rows = self.db.run(conn, "released_metrics", limit=limit).mappings().all()
        return models.MetricsSeries(
            metrics=[
                models.MetricsPoint(
                    batch_id=row["batch_id"],
                    released_at=row["released_at"],
                    sessions=row["sessions"],
                    events=row["events"],
                    **batch_quality(row).model_dump(),
                )
                for row in reversed(rows)  # released batches only, each with its kept metrics and counts
                if row["metrics_computed_at"] is not None and row["sessions"] is not None and row["events"] is not None
            ]
        )
