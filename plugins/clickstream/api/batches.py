"""Routes of batches: page through a batch's sessions, release the collecting batch."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from clickstream import models
from clickstream.api.deps import StoreDep, require_write
from clickstream.api.errors import error_responses
from clickstream.store import StoreConfig


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
    ) -> models.BatchSessionsPage:
        """Sessions of the batch numbered above ``after_number``, ascending, with their events.

        ``last_number`` is the number of the page's last session (null when the page is empty): pass it
        as ``after_number`` to get the next page. An unknown ``batch_id`` is a 404.
        """
        return store.get().get_batch_sessions(
            batch_id, after_number=after_number, limit=limit, events_limit=events_limit
        )

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
