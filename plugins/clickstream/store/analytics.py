"""Search analytics by query: computed per released batch by the metrics step, kept, and read over ranges.

Computing (:meth:`AnalyticsOperations.compute_batch_analytics`) runs the aggregation pass
(:func:`clickstream.store.aggregation.aggregate_batch`, shared with the training-signal labels) in one read
snapshot whose first read is the erasure generation, then keeps, in a short write of its own:

* the batch's exact totals (``cs_batch_analytics``): every rate of the batch stays exact;
* the queries of three top lists of ``[clickstream] analytics_top_n`` (N) each, by normalized query: by
  sessions, by sessions without results, by sessions without a click (``cs_batch_query``, raw sums and the
  query's 20-position curve, so ranges merge exactly), and each kept query's top :data:`QUERY_OBJECTS`
  objects by impressions (``cs_batch_query_object``);
* the top N objects by impressions (``cs_batch_object``).

It keeps only what is safe, with the discipline of the kept metrics: no user was erased since the snapshot
(the tombstone count is unchanged; the keep-write waits for erasures in flight), and no kept computation
saw more events or irrelevant flags (an older snapshot). An erasure deletes the kept analytics of the
batches that held the user's sessions (:mod:`clickstream.store.erasure`); retention deletes them with the
batch (ON DELETE CASCADE).

Reads select one released batch (``batch_id``), the batches released in ``[from_ms, to_ms)``, or the
``last`` N released batches (default: the last one), and merge the kept rows of the batches that have them
(the others are listed as ``missing``). A key (query or object) absent from a batch whose list was cut (it
had more distinct keys than it kept) may have counts there that were not kept: its merged counts are then
lower bounds, and its row says so (``lower_bound``). Pages are keyset pages over the merged rows, sorted by
the chosen value then by the key, with an opaque ``after`` cursor (the previous page's ``next_after``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, exc

from clickstream import models
from clickstream.signal.normalize import normalize_query
from clickstream.store.aggregation import (
    QUERY_POSITIONS,
    BatchAggregate,
    BatchTotals,
    ObjectStats,
    QueryStats,
    aggregate_batch,
    label_event_types,
)
from clickstream.store.base import StoreBase
from clickstream.store.batches import require_batch
from clickstream.store.checks import int_between, optional_text
from clickstream.store.db import dumps, loads
from clickstream.store.errors import Conflict, InvalidInput, NotFound
from clickstream.store.labels import QUERY_LABELS
from clickstream.store.metrics import ComputedMetrics, metrics_of, store_metrics

log = logging.getLogger(__name__)

#: Largest ``limit`` of an analytics page.
MAX_ANALYTICS_PAGE = 1000
#: Most released batches one analytics read merges (``last`` at most this; a longer range is refused).
MAX_ANALYTICS_BATCHES = 1000
#: Top objects kept for each kept query of a batch (by impressions).
QUERY_OBJECTS = 20
#: Orders of :meth:`AnalyticsOperations.top_searches` (``count``: sessions).
SEARCH_ORDERS = ("count", "ctr", "no_click_rate", "avg_click_position")
#: Orders of :meth:`AnalyticsOperations.top_hits`.
HIT_ORDERS = ("impressions", "clicks", "ctr", "mean_position")


def ratio(x: float, n: float) -> float | None:
    """``x / n`` rounded to 6 digits (as the batch metrics), None when ``n`` is 0."""
    return round(x / n, 6) if n else None


@dataclass(frozen=True)
class Selection:
    """The released batches a read covers: those with kept analytics (rows of ``analytics_batches``,
    newest first) and those without yet (``missing``)."""

    kept: list[RowMapping]
    missing: list[str]

    @property
    def ids(self) -> str:
        return dumps([b["batch_id"] for b in self.kept]) or "[]"

    @property
    def cut_queries(self) -> int:
        return sum(1 for b in self.kept if b["kept_queries"] < b["distinct_queries"])

    @property
    def cut_objects(self) -> int:
        return sum(1 for b in self.kept if b["kept_objects"] < b["distinct_objects"])

    def answer(self) -> models.AnalyticsRange:
        def total(name: str) -> Any:
            return sum(b[name] for b in self.kept)

        keyword, clicked = total("keyword_sessions"), total("sessions_with_click")
        return models.AnalyticsRange(
            batches=[b["batch_id"] for b in self.kept],
            missing=self.missing,
            cut_batches=sum(
                1
                for b in self.kept
                if b["kept_queries"] < b["distinct_queries"] or b["kept_objects"] < b["distinct_objects"]
            ),
            sessions=total("sessions"),
            keyword_sessions=keyword,
            payload_search_sessions=total("payload_search_sessions"),
            sessions_with_click=clicked,
            click_through_rate=ratio(clicked, keyword),
            no_click_rate=ratio(keyword - clicked, keyword),
            mean_reciprocal_rank=ratio(float(total("rr_sum")), keyword),
            avg_click_position=ratio(total("click_position_sum"), total("clicks_on_results")),
            no_result_sessions=total("no_result_sessions"),
            irrelevant_sessions=total("irrelevant_sessions"),
        )


def search_row(query: str, r: RowMapping | dict[str, Any], lower_bound: bool) -> dict[str, Any]:
    """A :class:`~clickstream.models.SearchRow`'s fields from summed per-query columns."""
    n, clicked = int(r["sessions"]), int(r["sessions_with_click"])
    return {
        "query": query,
        "sessions": n,
        "sessions_with_click": clicked,
        "click_through_rate": ratio(clicked, n),
        "no_click_sessions": n - clicked,
        "no_click_rate": ratio(n - clicked, n),
        "clicks": int(r["clicks_on_results"]),
        "avg_click_position": ratio(int(r["click_position_sum"]), int(r["clicks_on_results"])),
        "mean_reciprocal_rank": ratio(float(r["rr_sum"]), n),
        "mean_results_shown": ratio(int(r["results_shown_sum"]), n),
        "no_result_sessions": int(r["no_result_sessions"]),
        "irrelevant_sessions": int(r["irrelevant_sessions"]),
        "lower_bound": lower_bound,
    }


def hit_row(object_id: str, impressions: int, clicks: int, position_sum: int, lower_bound: bool) -> models.HitRow:
    return models.HitRow(
        object_id=object_id,
        impressions=impressions,
        clicks=clicks,
        click_through_rate=ratio(clicks, impressions),
        mean_position=ratio(position_sum, impressions),
        lower_bound=lower_bound,
    )


def encode_cursor(order: str, direction: str, value: Any, key: str) -> str:
    """The opaque ``after`` cursor of a row: its ordering, sort value and key."""
    return base64.urlsafe_b64encode(dumps([order, direction, value, key]).encode()).decode().rstrip("=")  # type: ignore[union-attr]


def decode_cursor(after: str, order: str, direction: str) -> tuple[Any, str]:
    """``(value, key)`` of an ``after`` cursor made for this ordering; :class:`InvalidInput` naming ``after``."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
        cursor_order, cursor_direction, value, key = raw
        ok = isinstance(key, str) and (value is None or isinstance(value, (int, float)))
    except (ValueError, TypeError, binascii.Error):
        ok = False
    if not ok:
        raise InvalidInput.field("after", "not a cursor of this answer: pass the previous page's next_after")
    if (cursor_order, cursor_direction) != (order, direction):
        raise InvalidInput.field(
            "after", f"a cursor of order_by={cursor_order} direction={cursor_direction}, not of this ordering"
        )
    return value, key


def keyset_page(
    rows: Sequence[Any],
    value: Callable[[Any], Any],
    key: Callable[[Any], str],
    *,
    order: str,
    direction: str,
    limit: int,
    after: str | None,
) -> tuple[list[Any], str | None]:
    """One page of ``rows`` sorted by ``value`` (``direction``; None values last either way), then ``key``
    ascending, starting after the cursor ``after``; the page and the next cursor (None: last page)."""
    sign = -1 if direction == "desc" else 1

    def sort_key(v: Any, k: str) -> tuple[bool, float, str]:
        return (v is None, 0 if v is None else sign * v, k)

    ordered = sorted(rows, key=lambda r: sort_key(value(r), key(r)))
    if after is not None:
        start = sort_key(*decode_cursor(after, order, direction))
        ordered = [r for r in ordered if sort_key(value(r), key(r)) > start]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, encode_cursor(order, direction, value(page[-1]), key(page[-1])) if more else None


class AnalyticsOperations(StoreBase):
    # ------------------------------------------------------------------------------------ computing

    def compute_batch_analytics(self, batch_id: str) -> models.AnalyticsComputed:
        """Compute the search analytics of released batch ``batch_id`` and keep them (see the module
        docstring): one aggregation pass in one read snapshot, kept in a short write of its own when safe
        (``kept`` false otherwise: a user erased since the snapshot, the batch purged, a newer computation
        kept). Running it again replaces what is kept. :meth:`metrics_step` does this and the batch metrics
        from the same pass.

        :raises NotFound: unknown ``batch_id``.
        :raises Conflict: the batch is still collecting.
        """
        aggregate, generation, released = self._aggregate(batch_id, detail=True)
        if not released:
            raise Conflict(f"batch_id {batch_id!r} is collecting: analytics are kept for released batches")
        return self._keep_computed(aggregate, generation, None)

    def metrics_step(self, batch_id: str) -> models.MetricsStep:
        """The metrics step of the release DAG: the batch's metrics (:meth:`batch_metrics`) and, for a released
        batch, its search analytics (:meth:`compute_batch_analytics`), from ONE aggregation pass in one read
        snapshot (the metrics are derived from the pass's batch-wide sums), then kept in one short write, each
        under its own check (the erasure generation of the snapshot; no newer computation kept). A collecting
        batch gets its metrics only (``analytics`` None), nothing kept, as :meth:`batch_metrics`.

        :raises NotFound: unknown ``batch_id``.
        """
        aggregate, generation, released = self._aggregate(batch_id, detail=None)
        computed = metrics_of(aggregate, generation, released)
        if not released:
            return models.MetricsStep(metrics=computed.metrics, analytics=None)
        analytics = self._keep_computed(aggregate, generation, computed)
        return models.MetricsStep(metrics=computed.metrics, analytics=analytics)

    def _aggregate(self, batch_id: str, *, detail: bool | None) -> tuple[BatchAggregate, int, bool]:
        """The aggregation pass over ``batch_id`` in one snapshot whose first read is the erasure generation:
        the pass, the generation, whether the batch is released. ``detail`` None: the per-query detail only
        for a released batch; False for a collecting one (or with ``detail`` True) the pass is skipped."""
        db = self.db
        with db.transaction(write=False) as conn:
            if db.has("snapshot_read"):  # PostgreSQL: one snapshot for every query below (SQLite has one)
                db.run(conn, "snapshot_read")
            generation = int(db.run(conn, "erasure_generation").scalar_one())
            released = require_batch(db, conn, batch_id)["status"] == "released"
            if detail and not released:
                return BatchAggregate(batch_id, [], {}, {}, BatchTotals()), generation, released
            aggregate = aggregate_batch(
                db,
                conn,
                batch_id,
                label_event_types=label_event_types(self.config.label_event_types),
                detail=released if detail is None else detail,
            )
        return aggregate, generation, released

    def _keep_computed(
        self, aggregate: BatchAggregate, generation: int, metrics: ComputedMetrics | None
    ) -> models.AnalyticsComputed:
        """Choose what a released batch keeps of its pass (the top lists), keep it (with ``metrics`` when
        given, in the same write), and say what was computed and kept."""
        batch_id = aggregate.batch_id
        top_n = self.config.analytics_top_n
        queries = kept_queries(aggregate, top_n)
        objects = sorted(aggregate.objects.values(), key=lambda o: (-o.impressions, o.object_id))[:top_n]
        totals = aggregate.totals
        summary = models.AnalyticsComputed(
            batch_id=batch_id,
            kept=False,
            sessions=totals.sessions,
            keyword_sessions=totals.keyword_sessions,
            distinct_queries=len(aggregate.queries),
            kept_queries=len(queries),
            distinct_objects=len(aggregate.objects),
            kept_objects=len(objects),
            top_n=top_n,
        )
        kept = self._keep_analytics(aggregate, queries, objects, summary, generation, metrics)
        return summary.model_copy(update={"kept": kept})

    def _keep_analytics(
        self,
        aggregate: BatchAggregate,
        queries: list[tuple[QueryStats, tuple[bool, bool, bool]]],
        objects: list[ObjectStats],
        summary: models.AnalyticsComputed,
        generation: int,
        metrics: ComputedMetrics | None = None,
    ) -> bool:
        """The keep-write: waits for erasures in flight (PostgreSQL: ``lock_erasures``; SQLite's write lock
        serialises it already), keeps ``metrics`` when given (``store_batch_metrics`` decides), checks
        ``analytics_keep_allowed``, then replaces the batch's kept rows; whether the analytics were kept."""
        db, batch_id, totals = self.db, aggregate.batch_id, aggregate.totals
        query_rows, query_objects = [], []
        for q, (by_sessions, by_no_results, by_no_clicks) in queries:
            top = sorted(q.objects.values(), key=lambda o: (-o.impressions, o.object_id))[:QUERY_OBJECTS]
            query_rows.append(
                {
                    "batch_id": batch_id,
                    "query_key": q.key,
                    "sessions": q.sessions,
                    "sessions_with_click": q.sessions_with_click,
                    "rr_sum": q.rr_sum,
                    "click_position_sum": q.click_position_sum,
                    "clicks_on_results": q.clicks_on_results,
                    "results_shown_sum": q.results_shown_sum,
                    "no_result_sessions": q.no_result_sessions,
                    "irrelevant_sessions": q.irrelevant_sessions,
                    "distinct_objects": len(q.objects),
                    "kept_objects": len(top),
                    "positions": dumps(q.positions),
                    "top_sessions": by_sessions,
                    "top_no_results": by_no_results,
                    "top_no_clicks": by_no_clicks,
                }
            )
            query_objects += [
                {
                    "batch_id": batch_id,
                    "query_key": q.key,
                    "object_id": o.object_id,
                    "impressions": o.impressions,
                    "clicks": o.clicks,
                    "position_sum": o.position_sum,
                }
                for o in top
            ]
        object_rows = [
            {
                "batch_id": batch_id,
                "object_id": o.object_id,
                "impressions": o.impressions,
                "clicks": o.clicks,
                "position_sum": o.position_sum,
            }
            for o in objects
        ]
        try:
            with db.transaction(write=True) as conn:
                if db.has("lock_erasures"):
                    db.run(conn, "lock_erasures")
                now = self.clock()
                if metrics is not None and not store_metrics(db, conn, metrics, now):
                    log.info("batch %s: computed metrics not kept (erasure, purge or a newer computation)", batch_id)
                allowed = db.run(
                    conn,
                    "analytics_keep_allowed",
                    batch_id=batch_id,
                    generation=generation,
                    events=totals.events,
                    irrelevant_all=totals.irrelevant_all,
                ).first()
                if allowed is None:
                    log.info("batch %s: computed analytics not kept (erasure, purge or a newer computation)", batch_id)
                    return False
                db.run(conn, "delete_batch_analytics", batch_id=batch_id)
                db.run(
                    conn,
                    "insert_batch_analytics",
                    batch_id=batch_id,
                    sessions=totals.sessions,
                    events=totals.events,
                    irrelevant_all=totals.irrelevant_all,
                    keyword_sessions=totals.keyword_sessions,
                    payload_search_sessions=totals.payload_search_sessions,
                    sessions_with_click=totals.sessions_with_click,
                    rr_sum=totals.rr_sum,
                    click_position_sum=totals.click_position_sum,
                    clicks_on_results=totals.clicks_on_results,
                    results_shown_sum=totals.results_shown_sum,
                    no_result_sessions=totals.no_result_sessions,
                    irrelevant_sessions=totals.irrelevant_sessions,
                    impressions=totals.impressions,
                    distinct_queries=summary.distinct_queries,
                    kept_queries=summary.kept_queries,
                    distinct_objects=summary.distinct_objects,
                    kept_objects=summary.kept_objects,
                    top_n=summary.top_n,
                    generation=generation,
                    computed_at=now,
                )
                for name, rows in (
                    ("insert_batch_queries", query_rows),
                    ("insert_batch_query_objects", query_objects),
                    ("insert_batch_objects", object_rows),
                ):
                    for start in range(0, len(rows), INSERT_CHUNK):
                        db.run(conn, name, rows=dumps(rows[start : start + INSERT_CHUNK]))
        except exc.IntegrityError:  # the batch row was deleted after the check (a concurrent purge)
            return False
        return True

    def compute_missing_analytics(self, limit: int = 10) -> models.AnalyticsBackfill:
        """Compute and keep the analytics of up to ``limit`` (1..:data:`MAX_ANALYTICS_BATCHES`) released
        batches that have none kept, newest release first: after the upgrade to version 4, after an
        erasure, or for batches released outside the release DAG. The metrics task runs it after each
        release; run it repeatedly (until ``more`` is false) to backfill everything."""
        int_between("limit", limit, 1, MAX_ANALYTICS_BATCHES)
        with self.db.transaction(write=False) as conn:
            missing = list(self.db.run(conn, "released_without_analytics", limit=limit + 1).scalars())
        computed = []
        for batch_id in missing[:limit]:
            try:
                if self.compute_batch_analytics(batch_id).kept:
                    computed.append(batch_id)
            except NotFound:  # purged meanwhile
                continue
        return models.AnalyticsBackfill(computed=computed, more=len(missing) > limit)

    # ------------------------------------------------------------------------------------ reading

    def top_searches(
        self,
        order_by: str = "count",
        direction: str = "desc",
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.SearchesPage:
        """The queries of the selected batches, merged, ordered by ``order_by`` (``count``: sessions,
        ``ctr``, ``no_click_rate``, ``avg_click_position``; ties by query), a keyset page at a time.

        :raises InvalidInput: a bad ordering, ``limit``, ``after`` or batch selection (named).
        :raises NotFound: unknown ``batch_id``. :raises Conflict: ``batch_id`` is collecting.
        """
        value = _SEARCH_VALUES.get(order_by)
        if value is None:
            raise InvalidInput.field("order_by", f"must be one of {', '.join(SEARCH_ORDERS)}, got {order_by!r}")
        return self._searches(order_by, value, direction, limit, after, None, batch_id, from_ms, to_ms, last)

    def searches_without_results(
        self,
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
        order_by: str = "no_result_sessions",
        direction: str = "desc",
    ) -> models.SearchesPage:
        """The queries with sessions without results (empty ``search_results``), most such sessions first
        (``order_by`` ``no_result_sessions``); the selection as :meth:`top_searches`. ``order_by``
        ``no_result_sessions`` (default) or one of :data:`SEARCH_ORDERS`, ``direction`` as :meth:`top_searches`."""
        value = (
            _SEARCH_VALUES.get(order_by) if order_by != "no_result_sessions" else (lambda r: r["no_result_sessions"])
        )
        if value is None:
            raise InvalidInput.field(
                "order_by", f"must be no_result_sessions or one of {', '.join(SEARCH_ORDERS)}, got {order_by!r}"
            )
        return self._searches(
            order_by,
            value,
            direction,
            limit,
            after,
            lambda r: r["no_result_sessions"] > 0,
            batch_id,
            from_ms,
            to_ms,
            last,
        )

    def searches_without_clicks(
        self,
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
        order_by: str = "no_click_sessions",
        direction: str = "desc",
    ) -> models.SearchesPage:
        """The queries with sessions without a click, most such sessions first (``order_by``
        ``no_click_sessions``); the selection as :meth:`top_searches`. ``order_by``
        ``no_click_sessions`` (default) or one of :data:`SEARCH_ORDERS`, ``direction`` as :meth:`top_searches`."""
        value = _SEARCH_VALUES.get(order_by) if order_by != "no_click_sessions" else (lambda r: r["no_click_sessions"])
        if value is None:
            raise InvalidInput.field(
                "order_by", f"must be no_click_sessions or one of {', '.join(SEARCH_ORDERS)}, got {order_by!r}"
            )
        return self._searches(
            order_by,
            value,
            direction,
            limit,
            after,
            lambda r: r["no_click_sessions"] > 0,
            batch_id,
            from_ms,
            to_ms,
            last,
        )

    def _searches(
        self,
        order: str,
        value: Callable[[dict[str, Any]], Any],
        direction: str,
        limit: int,
        after: str | None,
        keep: Callable[[dict[str, Any]], bool] | None,
        batch_id: str | None,
        from_ms: int | None,
        to_ms: int | None,
        last: int | None,
    ) -> models.SearchesPage:
        direction = _direction(direction)
        int_between("limit", limit, 1, MAX_ANALYTICS_PAGE)
        after = optional_text("after", after, 1024)
        db = self.db
        with db.transaction(write=False) as conn:
            selection = self._select(conn, batch_id, from_ms, to_ms, last)
            merged = db.run(conn, "analytics_merged_queries", batch_ids=selection.ids).mappings().all()
        cut = selection.cut_queries
        rows = [search_row(r["query_key"], r, int(r["cut_batches"]) < cut) for r in merged]
        if keep is not None:
            rows = [r for r in rows if keep(r)]
        page, next_after = keyset_page(
            rows, value, lambda r: r["query"], order=order, direction=direction, limit=limit, after=after
        )
        return models.SearchesPage(
            range=selection.answer(),
            order_by=order,
            direction=direction,
            searches=[models.SearchRow(**r) for r in page],
            total=len(rows),
            next_after=next_after,
        )

    def top_hits(
        self,
        order_by: str = "impressions",
        direction: str = "desc",
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.HitsPage:
        """The objects shown in the selected batches' keyword sessions, merged, ordered by ``order_by``
        (``impressions``, ``clicks``, ``ctr``, ``mean_position``; ties by object id), a keyset page at a time;
        the selection as :meth:`top_searches`."""
        if order_by not in HIT_ORDERS:
            raise InvalidInput.field("order_by", f"must be one of {', '.join(HIT_ORDERS)}, got {order_by!r}")
        direction = _direction(direction)
        int_between("limit", limit, 1, MAX_ANALYTICS_PAGE)
        after = optional_text("after", after, 1024)
        db = self.db
        with db.transaction(write=False) as conn:
            selection = self._select(conn, batch_id, from_ms, to_ms, last)
            merged = db.run(conn, "analytics_merged_objects", batch_ids=selection.ids).mappings().all()
        cut = selection.cut_objects
        rows = [
            hit_row(
                r["object_id"],
                int(r["impressions"]),
                int(r["clicks"]),
                int(r["position_sum"]),
                int(r["cut_batches"]) < cut,
            )
            for r in merged
        ]
        field = {"ctr": "click_through_rate"}.get(order_by, order_by)
        page, next_after = keyset_page(
            rows,
            lambda h: getattr(h, field),
            lambda h: h.object_id,
            order=order_by,
            direction=direction,
            limit=limit,
            after=after,
        )
        return models.HitsPage(
            range=selection.answer(),
            order_by=order_by,
            direction=direction,
            hits=page,
            total=len(rows),
            next_after=next_after,
        )

    def query_analytics(
        self,
        query: str,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.QueryAnalytics:
        """One query (normalized: NFKC, lower case, trimmed, whitespace collapsed) over the selected batches:
        its sums, one point a batch (oldest first), its click-through rate by position (1..20) and its top
        objects. ``labels``: the judgments the labels step kept for the query in the selected batches (raw
        CTR vs debiased ``γ`` per object and batch, the largest ``γ`` first, at most
        :data:`~clickstream.store.labels.QUERY_LABELS`); None when none is kept.

        :raises InvalidInput: an empty ``query`` (after normalization) or one over 1024 characters, or a bad
            batch selection (named).
        """
        text = optional_text("query", query, 1024)
        key = normalize_query(text or "")
        if not key:
            raise InvalidInput.field("query", "must hold a word: it is empty once normalized")
        db = self.db
        with db.transaction(write=False) as conn:
            selection = self._select(conn, batch_id, from_ms, to_ms, last)
            rows = db.run(conn, "analytics_query_rows", query_key=key, batch_ids=selection.ids).mappings().all()
            object_rows = (
                db.run(conn, "analytics_query_objects", query_key=key, batch_ids=selection.ids).mappings().all()
            )
            every = dumps([b["batch_id"] for b in selection.kept] + selection.missing) or "[]"
            label_rows = (  # the training-signal labels kept for this query (clickstream.store.labels)
                db.run(conn, "labels_query_judgments", query_key=key, batch_ids=every, limit=QUERY_LABELS)
                .mappings()
                .all()
            )
        by_batch = {r["batch_id"]: r for r in rows}
        zero = dict.fromkeys(_QUERY_SUMS, 0)
        points, totals = [], dict(zero)
        curve = [[0, 0] for _ in range(QUERY_POSITIONS)]
        query_lower = objects_lower = False
        for b in reversed(selection.kept):  # oldest first
            row = by_batch.get(b["batch_id"])
            cut = b["kept_queries"] < b["distinct_queries"]
            if row is None:
                query_lower = query_lower or cut
                objects_lower = objects_lower or cut
            else:
                objects_lower = objects_lower or row["kept_objects"] < row["distinct_objects"]
                for name in _QUERY_SUMS:
                    totals[name] += row[name]
                for i, (shown, clicks) in enumerate(loads(row["positions"])[:QUERY_POSITIONS]):
                    curve[i][0] += int(shown)
                    curve[i][1] += int(clicks)
            points.append(
                models.QueryBatchPoint(
                    **search_row(key, row or zero, row is None and cut),
                    batch_id=b["batch_id"],
                    released_at=b["released_at"],
                    kept=row is not None,
                )
            )
        objects: dict[str, list[int]] = {}
        seen: dict[str, set[str]] = {}
        for r in object_rows:
            o = objects.setdefault(r["object_id"], [0, 0, 0])
            o[0] += int(r["impressions"])
            o[1] += int(r["clicks"])
            o[2] += int(r["position_sum"])
            seen.setdefault(r["object_id"], set()).add(r["batch_id"])
        with_query = len(by_batch)
        top = [
            hit_row(oid, imp, clk, pos, query_lower or (objects_lower and len(seen[oid]) < with_query))
            for oid, (imp, clk, pos) in objects.items()
        ]
        top.sort(key=lambda h: (-h.impressions, h.object_id))
        return models.QueryAnalytics(
            query=key,
            range=selection.answer(),
            summary=models.SearchRow(**search_row(key, totals, query_lower)),
            batches=points,
            positions=[
                models.PositionCtr(position=p, shown=shown, clicks=clicks, ctr=ratio(clicks, shown))
                for p, (shown, clicks) in enumerate(curve, start=1)
            ],
            top_objects=top[:QUERY_OBJECTS],
            labels=[dict(r) for r in label_rows] or None,
        )

    def _select(
        self, conn: Connection, batch_id: str | None, from_ms: int | None, to_ms: int | None, last: int | None
    ) -> Selection:
        """The released batches of a read: ``batch_id``, or released in ``[from_ms, to_ms)``, or the ``last``
        N (default: the last one). One of the three forms; each bound checked, naming the field."""
        db = self.db
        ranged = from_ms is not None or to_ms is not None
        if batch_id is not None:
            batch_id = optional_text("batch_id", batch_id, 128)
            if ranged or last is not None:
                raise InvalidInput.field("batch_id", "give batch_id, or from/to, or last: not several")
        if last is not None:
            int_between("last", last, 1, MAX_ANALYTICS_BATCHES)
            if ranged:
                raise InvalidInput.field("last", "give from/to or last, not both")
        for name, bound in (("from", from_ms), ("to", to_ms)):
            if bound is not None:
                int_between(name, bound, 0, models.MAX_BIGINT)
        if from_ms is not None and to_ms is not None and to_ms <= from_ms:
            raise InvalidInput.field("to", f"must be after from ({from_ms}), got {to_ms}")
        if batch_id is None and not ranged and last is None:
            last = 1
        limit = last if last is not None else MAX_ANALYTICS_BATCHES + 1
        rows = (
            db.run(conn, "analytics_batches", batch_id=batch_id, from_ms=from_ms, to_ms=to_ms, limit=limit)
            .mappings()
            .all()
        )
        if batch_id is not None and not rows:
            require_batch(db, conn, batch_id)  # NotFound when unknown
            raise Conflict(f"batch_id {batch_id!r} is collecting: analytics are kept for released batches")
        if len(rows) > MAX_ANALYTICS_BATCHES:
            raise InvalidInput.field(
                "from", f"the range holds more than {MAX_ANALYTICS_BATCHES} released batches; narrow it"
            )
        return Selection(
            kept=[r for r in rows if r["computed_at"] is not None],
            missing=[r["batch_id"] for r in rows if r["computed_at"] is None],
        )


def kept_queries(aggregate: BatchAggregate, top_n: int) -> list[tuple[QueryStats, tuple[bool, bool, bool]]]:
    """The queries a batch keeps: the union of its top ``top_n`` by sessions, by sessions without results
    (those with any) and by sessions without a click (those with any), ties by key; each with its flags
    (in which list it is)."""
    qs = list(aggregate.queries.values())
    by_sessions = {q.key for q in sorted(qs, key=lambda q: (-q.sessions, q.key))[:top_n]}
    no_results = sorted((q for q in qs if q.no_result_sessions), key=lambda q: (-q.no_result_sessions, q.key))
    no_clicks = sorted((q for q in qs if q.no_click_sessions), key=lambda q: (-q.no_click_sessions, q.key))
    by_no_results = {q.key for q in no_results[:top_n]}
    by_no_clicks = {q.key for q in no_clicks[:top_n]}
    return [
        (q, (q.key in by_sessions, q.key in by_no_results, q.key in by_no_clicks))
        for q in sorted(qs, key=lambda q: q.key)
        if q.key in by_sessions or q.key in by_no_results or q.key in by_no_clicks
    ]


def _direction(direction: str) -> str:
    if direction not in ("asc", "desc"):
        raise InvalidInput.field("direction", f"must be asc or desc, got {direction!r}")
    return direction


#: Rows of the JSON insert statements of the keep-write (one statement a chunk).
INSERT_CHUNK = 5000
#: The summed columns of a kept query row.
_QUERY_SUMS = (
    "sessions",
    "sessions_with_click",
    "rr_sum",
    "click_position_sum",
    "clicks_on_results",
    "results_shown_sum",
    "no_result_sessions",
    "irrelevant_sessions",
)
_SEARCH_VALUES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "count": lambda r: r["sessions"],
    "ctr": lambda r: r["click_through_rate"],
    "no_click_rate": lambda r: r["no_click_rate"],
    "avg_click_position": lambda r: r["avg_click_position"],
}
