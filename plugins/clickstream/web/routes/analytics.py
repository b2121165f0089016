"""Routes of the search analytics by query (reads, any authenticated user): ``/analytics/searches``,
``/analytics/searches/no-results``, ``/analytics/searches/no-clicks``, ``/analytics/hits`` and
``/analytics/queries/{query}``, over one released batch (``batch_id``), the batches released in
``[from, to)`` (ms since epoch), or the ``last`` N released batches (default: the last one)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from clickstream import models
from clickstream.store.analytics import MAX_ANALYTICS_BATCHES, MAX_ANALYTICS_PAGE
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep


class Selection:
    """The batch selection every analytics route takes (query parameters)."""

    def __init__(
        self,
        batch_id: str | None = Query(None, min_length=1, max_length=128, description="one released batch"),
        from_: int | None = Query(
            None, alias="from", ge=0, le=models.MAX_BIGINT, description="batches released at or after this (ms)"
        ),
        to: int | None = Query(None, ge=0, le=models.MAX_BIGINT, description="batches released before this (ms)"),
        last: int | None = Query(
            None, ge=1, le=MAX_ANALYTICS_BATCHES, description="the last this many released batches (default 1)"
        ),
    ):
        self.batch_id, self.from_ms, self.to_ms, self.last = batch_id, from_, to, last


SelectionDep = Annotated[Selection, Depends()]
LIMIT = Query(100, ge=1, le=MAX_ANALYTICS_PAGE, description="at most this many rows")
AFTER = Query(None, min_length=1, max_length=1024, description="the previous page's next_after")
DIRECTION = Query("desc", description="asc or desc (ties: by key, ascending)")


def analytics_router() -> APIRouter:
    """The ``/analytics`` routes (reads: any authenticated user, viewers included)."""
    router = APIRouter(prefix="/analytics", tags=["search analytics"])
    errors = error_responses(401, 403, 404, 409, 422, 503)

    @router.get("/searches", response_model=models.SearchesPage, responses=errors, summary="Top searches")
    def top_searches(
        store: StoreDep,
        sel: SelectionDep,
        order_by: Literal["count", "ctr", "no_click_rate", "avg_click_position"] = Query(
            "count", description="count (sessions), ctr, no_click_rate or avg_click_position"
        ),
        direction: Literal["asc", "desc"] = DIRECTION,
        limit: int = LIMIT,
        after: str | None = AFTER,
    ) -> models.SearchesPage:
        """The normalized queries of the selected batches, their counts merged, a keyset page at a time. A row
        whose query fell outside a batch's kept top N has ``lower_bound`` true: its counts are lower bounds."""
        return store.get().top_searches(
            order_by,
            direction,
            limit,
            after,
            batch_id=sel.batch_id,
            from_ms=sel.from_ms,
            to_ms=sel.to_ms,
            last=sel.last,
        )

    @router.get(
        "/searches/no-results",
        response_model=models.SearchesPage,
        responses=errors,
        summary="Searches without results",
    )
    def searches_without_results(
        store: StoreDep, sel: SelectionDep, limit: int = LIMIT, after: str | None = AFTER
    ) -> models.SearchesPage:
        """The queries with sessions whose search results were empty, most such sessions first."""
        return store.get().searches_without_results(
            limit, after, batch_id=sel.batch_id, from_ms=sel.from_ms, to_ms=sel.to_ms, last=sel.last
        )

    @router.get(
        "/searches/no-clicks",
        response_model=models.SearchesPage,
        responses=errors,
        summary="Searches without clicks",
    )
    def searches_without_clicks(
        store: StoreDep, sel: SelectionDep, limit: int = LIMIT, after: str | None = AFTER
    ) -> models.SearchesPage:
        """The queries with sessions without a click, most such sessions first."""
        return store.get().searches_without_clicks(
            limit, after, batch_id=sel.batch_id, from_ms=sel.from_ms, to_ms=sel.to_ms, last=sel.last
        )

    @router.get("/hits", response_model=models.HitsPage, responses=errors, summary="Top hits (objects)")
    def top_hits(
        store: StoreDep,
        sel: SelectionDep,
        order_by: Literal["impressions", "clicks", "ctr", "mean_position"] = Query(
            "impressions", description="impressions, clicks, ctr or mean_position"
        ),
        direction: Literal["asc", "desc"] = DIRECTION,
        limit: int = LIMIT,
        after: str | None = AFTER,
    ) -> models.HitsPage:
        """The objects shown in the selected batches' keyword sessions, merged, a keyset page at a time."""
        return store.get().top_hits(
            order_by,
            direction,
            limit,
            after,
            batch_id=sel.batch_id,
            from_ms=sel.from_ms,
            to_ms=sel.to_ms,
            last=sel.last,
        )

    @router.get(
        "/queries/{query}", response_model=models.QueryAnalytics, responses=errors, summary="One query over time"
    )
    def query_analytics(
        store: StoreDep,
        sel: SelectionDep,
        query: str = Path(min_length=1, max_length=1024, description="the query (normalized before lookup)"),
    ) -> models.QueryAnalytics:
        """One query (normalized) over the selected batches: its sums, one point a batch, its click-through
        rate by position (1..20), its top objects; ``labels`` (the training signal) is null until kept."""
        return store.get().query_analytics(
            query, batch_id=sel.batch_id, from_ms=sel.from_ms, to_ms=sel.to_ms, last=sel.last
        )

    return router
