"""Batches: open the collecting batch, page through a batch, release it, list batches and their metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, RowMapping, exc

from clickstream import models
from clickstream.models import MAX_BIGINT
from clickstream.store.base import StoreBase
from clickstream.store.checks import int_between, optional_text, validate
from clickstream.store.db import Database, dumps, loads
from clickstream.store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from clickstream.store.rows import ExtractPage, new_batch_id, session_dict

P = TypeVar("P", ExtractPage, list[dict[str, Any]])
log = logging.getLogger(__name__)


def require_batch(db: Database, conn: Connection, batch_id: str) -> RowMapping:
    """The batch row of ``batch_id``; :class:`NotFound` if there is none."""
    row = db.run(conn, "get_batch", batch_id=batch_id).mappings().first()
    if row is None:
        raise NotFound(f"batch_id {batch_id!r} not found")
    return row


def open_collecting_batch(db: Database, conn: Connection, clock: Callable[[], int]) -> None:
    """Insert a collecting batch (a no-op when a concurrent transaction just did).

    Openers take turns (``lock_batch_creation``); the creation time is read after that, and is later than
    every existing batch's, so batch ids, which start with it, sort by creation even for batches opened
    within one millisecond or by a registration that waited on a release. Live registration, ``ingest_bulk``
    and the history import all open batches here.
    """
    if db.has("lock_batch_creation"):  # PostgreSQL; SQLite holds its write lock already
        db.run(conn, "lock_batch_creation")
    latest = db.run(conn, "latest_batch_created_at").scalar()
    created = max(clock(), (latest or 0) + 1)
    db.run(conn, "insert_collecting_batch", batch_id=new_batch_id(created), now=created)


class BatchOperations(StoreBase):
    def get_batch_sessions(
        self, batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100
    ) -> models.BatchSessionsPage:
        """One keyset page of a batch: sessions numbered above ``after_number``, ascending."""
        self.checks.page_bounds(after_number, limit, events_limit)
        with self.db.transaction(write=False) as conn:
            require_batch(self.db, conn, batch_id)
            sessions = self._page(conn, batch_id, after_number, MAX_BIGINT, limit, events_limit)
        return models.BatchSessionsPage(
            batch_id=batch_id, last_number=sessions[-1]["session_number"] if sessions else None, sessions=sessions
        )  # dicts, validated into the page model here

    def _page(
        self, conn: Connection, batch_id: str, after: int, until: int, limit: int, events_limit: int
    ) -> list[dict[str, Any]]:
        rows = self.db.run(
            conn,
            "batch_page",
            batch_id=batch_id,
            after_number=after,
            until_number=until,
            limit=limit,
            events_limit=events_limit,
        ).mappings()
        return [session_dict(r) for r in rows]

    def iter_batch_pages(
        self, batch_id: str, *, page_size: int = 1000, after_number: int = 0, until_number: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Every session of a batch with its events (at most ``max_events_per_session`` each), page by page,
        as plain dicts.

        Memory is bounded by ``page_size``; each page is its own short read, so a long extraction holds no
        transaction open. ``after_number`` / ``until_number`` select a shard ``(after, until]``.
        """

        def read(conn: Connection, after: int, until: int) -> list[dict[str, Any]]:
            return self._page(conn, batch_id, after, until, page_size, self.config.max_events_per_session)

        return self._keyset_pages(
            batch_id, page_size, after_number, until_number, read, lambda page: page[-1]["session_number"]
        )

    def iter_extract_pages(
        self, batch_id: str, *, page_size: int = 1000, after_number: int = 0, until_number: int | None = None
    ) -> Iterator[ExtractPage]:
        """Like :meth:`iter_batch_pages`, in the dataset's flat layout (:class:`ExtractPage`), built by the
        database in one statement a page (``extract_page``). Memory is bounded by ``page_size``."""

        def read(conn: Connection, after: int, until: int) -> ExtractPage:
            row = (
                self.db.run(
                    conn,
                    "extract_page",
                    batch_id=batch_id,
                    after_number=after,
                    until_number=until,
                    limit=page_size,
                    max_events=self.config.max_events_per_session,
                )
                .mappings()
                .one()
            )
            return ExtractPage(
                row["first_number"],
                row["last_number"],
                row["sessions"],
                row["events"],
                (row["sessions_json"] or "").encode(),
                (row["events_json"] or "").encode(),
            )

        return self._keyset_pages(batch_id, page_size, after_number, until_number, read, lambda page: page.last_number)

    def _keyset_pages(
        self,
        batch_id: str,
        page_size: int,
        after_number: int,
        until_number: int | None,
        read: Callable[[Connection, int, int], P],
        last_number: Callable[[P], int],
    ) -> Iterator[P]:
        """The keyset loop of the page iterators: each page is its own short read; a short page is the last."""
        if page_size < 1:
            raise InvalidInput.field("page_size", f"must be >= 1, got {page_size}")
        with self.db.transaction(write=False) as conn:
            require_batch(self.db, conn, batch_id)
        until = MAX_BIGINT if until_number is None else until_number

        def pages() -> Iterator[P]:
            after = after_number
            while True:
                with self.db.transaction(write=False) as conn:
                    page = read(conn, after, until)
                if not len(page):
                    return
                yield page
                if len(page) < page_size:
                    return
                after = last_number(page)

        return pages()

    def release_batch(self, release_id: str) -> models.ReleaseResult:
        """Release the collecting batch under ``release_id`` (an idempotency key).

        A ``release_id`` seen before answers its original result, even if another batch is collecting by
        now. No collecting batch and an unknown ``release_id``: :class:`NotFound`. Cost does not depend on
        the batch's size.
        """
        rid = validate(models.ReleaseIn, {"release_id": release_id}).release_id
        db = self.db
        for _ in range(3):
            try:
                with db.transaction(write=True) as conn:
                    row = db.run(conn, "find_release", release_id=rid).mappings().first()
                    if row is None and self._lock_collecting_for_release(conn):
                        row = db.run(conn, "release_collecting", release_id=rid, now=self.clock()).mappings().first()
                    if row is None:
                        # A concurrent retry of this release_id may have released the batch we waited on
                        # (PostgreSQL re-checks the UPDATE after its commit and finds nothing collecting):
                        # a fresh statement sees that commit, so answer its result.
                        row = db.run(conn, "find_release", release_id=rid).mappings().first()
                    if row is None:
                        raise NotFound(f"no collecting batch to release under release_id {rid!r}")
                    return models.ReleaseResult(**row)
            except exc.IntegrityError:
                # A concurrent retry of the same release_id committed first (unique release_id): re-read it.
                continue
        raise Conflict(f"release_id {rid!r} is being released concurrently; retry")

    def _lock_collecting_for_release(self, conn: Connection) -> bool:
        """Wait until no registration holds the collecting batch, and lock it; False when none is collecting.

        Only after this does the release read its clock, so ``released_at`` is never earlier than a member's
        ``registered_at``. A batch that commits after this lock's snapshot is not released by this call.
        SQLite needs nothing: the transaction already holds the database's write lock.
        """
        if not self.db.has("lock_collecting_for_release"):
            return True
        return self.db.run(conn, "lock_collecting_for_release").first() is not None

    def get_batch(self, batch_id: str) -> models.BatchInfo:
        """A batch's status and the range of its session numbers."""
        with self.db.transaction(write=False) as conn:
            row = require_batch(self.db, conn, batch_id)
            stats = self.db.run(conn, "batch_number_stats", batch_id=batch_id).mappings().one()
        return models.BatchInfo(**row, **stats)

    def list_batches(self, status: str | None = None, limit: int = 100) -> list[models.BatchInfo]:
        """Batches, newest first."""
        if status not in (None, "collecting", "released"):
            raise InvalidInput.field("status", f"must be collecting or released, got {status!r}")
        if limit < 1:
            raise InvalidInput.field("limit", f"must be >= 1, got {limit}")
        with self.db.transaction(write=False) as conn:
            rows = self.db.run(conn, "list_batches", status=status, limit=limit).mappings().all()
        return [models.BatchInfo(**r) for r in rows]

    def batch_metrics(self, batch_id: str) -> models.BatchMetrics:
        """Search-quality metrics of a batch (see :class:`clickstream.models.BatchMetrics`), computed now.

        For a released batch they are also kept, with its position curve (positions 1..:data:`KEPT_POSITIONS`),
        and the batch list, the batch summary, the metrics series and :meth:`batch_positions` show the kept
        ones. Computed in one read snapshot, kept in a short write of its own, and only when that is safe: no
        user was erased since the snapshot (their sessions may be in it), and the kept computation did not see
        more (see :meth:`_keep`). A batch deleted meanwhile (retention) is simply not kept.

        :raises NotFound: unknown ``batch_id``.
        """
        computed = self._compute(batch_id)
        if computed.released:
            self._keep(computed)
        return computed.metrics

    def _compute(self, batch_id: str) -> _Computed:
        """The metrics and the kept position curve of a batch, read in one snapshot whose first read is the
        erasure generation (the tombstone count) that :meth:`_keep` compares."""
        db = self.db
        with db.transaction(write=False) as conn:
            if db.has("snapshot_read"):  # PostgreSQL: one snapshot for every query below (SQLite has one)
                db.run(conn, "snapshot_read")
            generation = int(db.run(conn, "erasure_generation").scalar_one())
            batch = require_batch(db, conn, batch_id)
            s = db.run(conn, "batch_session_counts", batch_id=batch_id).mappings().one()
            e = db.run(conn, "batch_event_counts", batch_id=batch_id).mappings().one()
            rr_sum = float(db.run(conn, "batch_rr_sum", batch_id=batch_id).scalar() or 0)
            curve = self._position_curve(conn, batch_id, KEPT_POSITIONS)
        n = s["sessions"]

        def ratio(x: float) -> float | None:
            return round(x / n, 6) if n else None

        metrics = models.BatchMetrics(
            batch_id=batch_id,
            sessions=n,
            events=e["events"],
            clicks=e["clicks"],
            sessions_with_click=e["sessions_with_click"],
            click_through_rate=ratio(e["sessions_with_click"]),
            mean_reciprocal_rank=ratio(rr_sum),
            no_click_rate=ratio(n - e["sessions_with_click"]),
            irrelevant_rate=ratio(s["irrelevant"]),
            late_events=e["late_events"],
        )
        return _Computed(metrics, curve, generation, batch["status"] == "released")

    def _keep(self, computed: _Computed) -> bool:
        """Keep a released batch's computed metrics; whether they were kept.

        The write first waits for erasures in flight (PostgreSQL: ``lock_erasures``; SQLite's write lock
        serialises it already), then ``store_batch_metrics`` keeps only if the tombstone count is still the one
        of the computation's snapshot (an erasure since may have deleted the kept row, and the snapshot holds
        the erased sessions) and the computation saw at least as many events and irrelevant flags as the kept
        one (they only grow in a released batch, so fewer means an older snapshot). The database decides; no
        clock does. A batch deleted since (retention: the foreign key) is not kept either.
        """
        db = self.db
        try:
            with db.transaction(write=True) as conn:
                if db.has("lock_erasures"):
                    db.run(conn, "lock_erasures")
                kept = db.run(
                    conn,
                    "store_batch_metrics",
                    **computed.metrics.model_dump(),
                    positions=dumps(computed.curve),
                    generation=computed.generation,
                    computed_at=self.clock(),
                ).rowcount
        except exc.IntegrityError:  # the batch row was deleted after the EXISTS check (a concurrent purge)
            kept = 0
        if not kept:
            log.info("batch %s: computed metrics not kept (erasure, purge or a newer computation)", computed.batch_id)
        return bool(kept)

    def _position_curve(self, conn: Connection, batch_id: str, max_position: int) -> list[tuple[int, int]]:
        """``(shown, clicks)`` for positions 1..``max_position`` of a batch (see :meth:`batch_positions`)."""
        lengths = [(r.n, r.sessions) for r in self.db.run(conn, "batch_result_lengths", batch_id=batch_id)]
        rows = self.db.run(conn, "batch_position_clicks", batch_id=batch_id, max_position=max_position)
        clicks: dict[int, int] = {r.position: r.clicks for r in rows}
        return [
            (sum(sessions for n, sessions in lengths if n >= position), clicks.get(position, 0))
            for position in range(1, max_position + 1)
        ]

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

    # ------------------------------------------------------------------- the batch overview (UI page)

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
        batch is counted now and has no metrics.

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
        """One batch as :meth:`list_batches_page` shows it (a released batch without kept metrics gets them
        computed now). :raises NotFound: unknown ``batch_id``."""
        with self.db.transaction(write=False) as conn:
            row = self.db.run(conn, "batch_summary", batch_id=batch_id).mappings().first()
        found = self._summaries([row] if row is not None else [], READ_COMPUTE_BUDGET)
        if not found:
            raise NotFound(f"batch_id {batch_id!r} not found")
        return found[0]

    def metrics_series(self, limit: int = 100) -> models.MetricsSeries:
        """The kept metrics of the last ``limit`` released batches (1..:data:`MAX_METRICS_SERIES`), oldest
        first: the points of the page's plots. Computes nothing: a batch without kept metrics yet is left out
        (:meth:`list_batches_page`, :meth:`compute_missing_metrics` and the metrics task compute them)."""
        int_between("limit", limit, 1, MAX_METRICS_SERIES)
        with self.db.transaction(write=False) as conn:
            rows = self.db.run(conn, "released_metrics", limit=limit).mappings().all()
        points = []
        for summary in reversed(self._summaries(rows, 0)):
            if summary.metrics is None or summary.sessions is None or summary.events is None:
                continue
            assert summary.released_at is not None  # released batches only
            points.append(
                models.MetricsPoint(
                    batch_id=summary.batch_id,
                    released_at=summary.released_at,
                    sessions=summary.sessions,
                    events=summary.events,
                    **summary.metrics.model_dump(),
                )
            )
        return models.MetricsSeries(metrics=points)

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
                metrics = _quality(row)
            elif budget > 0:
                budget -= 1
                log.info("batch %s: released without kept metrics; computing them", batch_id)
                try:
                    computed = self._compute(batch_id)
                except NotFound:
                    continue
                try:
                    self._keep(computed)
                except StoreUnavailable as err:
                    log.warning("batch %s: computed metrics not kept (%s); answering them anyway", batch_id, err)
                m = computed.metrics
                sessions, events = m.sessions, m.events
                metrics = _quality(m.model_dump())
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

    def record_dataset(self, batch_id: str, manifest_path: str) -> None:
        """Record where the dataset of released batch ``batch_id`` is: its manifest's path or URI (shown as
        ``dataset`` by :meth:`list_batches_page`). Recording again replaces it.

        :raises InvalidInput: an empty ``manifest_path``, or one over 4096 characters.
        :raises NotFound: unknown ``batch_id``.
        :raises Conflict: the batch is still collecting.
        """
        path = optional_text("manifest_path", manifest_path, 4096)
        if path is None:
            raise InvalidInput.field("manifest_path", "must be a path or URI, got None")
        db = self.db
        with db.transaction(write=True) as conn:
            if db.run(conn, "record_dataset", batch_id=batch_id, dataset=path).rowcount == 0:
                require_batch(db, conn, batch_id)
                raise Conflict(f"batch_id {batch_id!r} is collecting: a dataset is written from a released batch")


#: Largest ``limit`` of :meth:`BatchOperations.list_batches_page`.
MAX_BATCHES_PAGE = 100
#: Largest ``limit`` of :meth:`BatchOperations.metrics_series`.
MAX_METRICS_SERIES = 1000
#: Largest ``max_position`` of :meth:`BatchOperations.batch_positions`.
MAX_POSITION = 100
#: Positions of the curve kept with a released batch's metrics (the page's default ``max_position``).
KEPT_POSITIONS = 20
#: Released batches without kept metrics that one read (a batch list, a batch summary) computes at most;
#: the others answer ``metrics`` None until a later read or the metrics task computes them.
READ_COMPUTE_BUDGET = 2


@dataclass(frozen=True)
class _Computed:
    """A metrics computation: the metrics, the curve of :data:`KEPT_POSITIONS` positions, the erasure
    generation its snapshot started with, and whether the batch was released then."""

    metrics: models.BatchMetrics
    curve: list[tuple[int, int]]
    generation: int
    released: bool

    @property
    def batch_id(self) -> str:
        return self.metrics.batch_id


def _quality(row: Mapping[str, Any] | RowMapping) -> models.BatchQuality:
    """The page's names for kept metrics (a ``batch_summary`` row) or computed ones (the same keys)."""
    return models.BatchQuality(
        ctr=row["click_through_rate"],
        mrr=row["mean_reciprocal_rank"],
        no_click_rate=row["no_click_rate"],
        irrelevant_rate=row["irrelevant_rate"],
        late_events=row["late_events"],
    )
