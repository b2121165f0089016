"""Routes of batches: page through a batch's sessions, release the collecting batch; and the batch overview
behind the Clickstream page (``/batches``, ``/metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from clickstream import models
from clickstream.store import StoreConfig
from clickstream.store.config import MAX_BATCHES_PAGE, MAX_METRICS_SERIES, MAX_POSITION
from clickstream.web.deps import require_write
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep
from clickstream.web.responses import json_response


def batches_router(config: StoreConfig) -> APIRouter:
    """The ``/batch`` routes; ``config`` gives the page bounds (``[clickstream] max_page``, ``max_events``)."""
    router = APIRouter(prefix="/batch", tags=["batches"])

    @router.get(
        "/sessions",
        response_model=models.BatchSessionsPage,
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Page through a batch's sessions",
    )
    def get_batch_sessions(
        request: Request,
        store: StoreDep,
        batch_id: str = Query(min_length=1, max_length=128, description="the batch to read"),
        after_number: int = Query(
            0,
            ge=0,
            le=models.MAX_BIGINT,
            description="sessions numbered above this; pass the previous page's last_number",
        ),
        limit: int = Query(
            min(10, config.max_page), ge=1, le=config.max_page, description="at most this many sessions"
        ),
        events_limit: int = Query(
            min(100, config.max_events),
            ge=0,
            le=config.max_events,
            description="at most this many events per session, earliest first; 0 for none",
        ),
    ) -> Response:
        """Sessions of the batch numbered above ``after_number``, ascending, with their events.

        ``last_number`` is the number of the page's last session (null when the page is empty): pass it
        as ``after_number`` to get the next page. An unknown ``batch_id`` is a 404.
        """
        # The store answers the page's JSON (built by the database on PostgreSQL): it is passed through, with
        # no validation and serialisation of the model per value (response_model documents its shape), and
        # compressed in this worker thread (clickstream.web.responses).
        page = store.get().get_batch_sessions_json(
            batch_id, after_number=after_number, limit=limit, events_limit=events_limit
        )
        return json_response(request, page)

    @router.post(
        "/release",
        response_model=models.ReleaseResult,
        dependencies=[Depends(require_write)],
        responses=error_responses(400, 401, 403, 404, 409, 422, 503),
        summary="Release the collecting batch",
    )
    def release_batch(body: models.ReleaseIn, store: StoreDep) -> models.ReleaseResult:
        """Close the collecting batch under ``release_id`` and make it available downstream.

        ``release_id`` is an idempotency key: a retry answers the original result, even if another batch
        is collecting by now. No collecting batch and an unknown ``release_id``: 404.
        """
        return store.get().release_batch(body.release_id)

    return router


def overview_router() -> APIRouter:
    """The batch overview (reads): ``/batches``, ``/batches/{batch_id}``, ``/batches/{batch_id}/positions``
    and ``/metrics``, what the Clickstream page in the Airflow UI shows."""
    router = APIRouter(tags=["batch overview"])

    @router.get(
        "/batches",
        response_model=models.BatchList,
        responses=error_responses(401, 403, 422, 503),
        summary="List batches, newest first",
    )
    def list_batches(
        store: StoreDep,
        limit: int = Query(20, ge=1, le=MAX_BATCHES_PAGE, description="at most this many batches"),
        before: str | None = Query(
            None,
            min_length=1,
            max_length=128,
            description="batches older than this one: the previous page's next_before",
        ),
        release_id: str | None = Query(
            None, min_length=1, max_length=512, description="only the batch released under this release_id"
        ),
    ) -> models.BatchList:
        """Batches newest first, each with its status, counts, metrics (null while collecting) and dataset.

        Keyset-paged: pass ``next_before`` as ``before`` for the next page (null: no older batch); ``before``
        need not exist any more. A released batch's metrics and counts are those kept when they were computed
        (by the release DAG's metrics task, or by a read of a batch released otherwise: at most two a request;
        the others answer ``metrics``, ``sessions`` and ``events`` null until a later read computes them).
        """
        return store.get().list_batches_page(limit, before, release_id)

    @router.get(
        "/batches/{batch_id}",
        response_model=models.BatchSummary,
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Get one batch",
    )
    def get_batch(
        store: StoreDep, batch_id: str = Path(min_length=1, max_length=128, description="the batch")
    ) -> models.BatchSummary:
        """One batch as ``GET /batches`` lists it (metrics computed now if none are kept yet); an unknown
        ``batch_id`` is a 404."""
        return store.get().get_batch_summary(batch_id)

    @router.get(
        "/batches/{batch_id}/positions",
        response_model=models.BatchPositions,
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Click-through rate by result position",
    )
    def batch_positions(
        store: StoreDep,
        batch_id: str = Path(min_length=1, max_length=128, description="the batch"),
        max_position: int = Query(20, ge=1, le=MAX_POSITION, description="positions 1 to this"),
    ) -> models.BatchPositions:
        """For each result position 1..``max_position``: the sessions with a result there (``shown``), those
        with a click on it (``clicks``) and ``ctr`` = clicks / shown (null when shown is 0). A result listed
        twice in a session counts at its first position. A released batch with kept metrics answers from the
        curve kept with them (``max_position`` up to 20). An unknown ``batch_id`` is a 404."""
        return store.get().batch_positions(batch_id, max_position)

    @router.get(
        "/metrics",
        response_model=models.MetricsSeries,
        responses=error_responses(401, 403, 422, 503),
        summary="Metrics of the last released batches, oldest first",
    )
    def metrics_series(
        store: StoreDep,
        limit: int = Query(100, ge=1, le=MAX_METRICS_SERIES, description="the last this many released batches"),
    ) -> models.MetricsSeries:
        """The kept metrics of the last ``limit`` released batches, oldest release first (the points of a plot);
        computes none: a batch whose metrics are not computed yet is left out."""
        return store.get().metrics_series(limit)

    return router
