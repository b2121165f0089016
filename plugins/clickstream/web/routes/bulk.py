"""``POST /bulk``: many sessions and events in one request, each item accounted for in the answer."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from clickstream import models
from clickstream.web.deps import require_write
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep


def bulk_router() -> APIRouter:
    """The ``/bulk`` route (its bounds, ``max_bulk_items`` and the item limits, are the store's)."""
    router = APIRouter(tags=["sessions"])

    @router.post(
        "/bulk",
        response_model=models.BulkResult,
        dependencies=[Depends(require_write)],
        responses=error_responses(400, 401, 403, 413, 422, 503),
        summary="Register sessions and push events in bulk",
    )
    def bulk(body: models.BulkIn, store: StoreDep) -> models.BulkResult:
        """Register ``sessions`` (each as for ``POST /session``) and store ``events`` (each as an item of
        ``POST /session/events`` plus its ``session_id``); either list may be omitted.

        Sessions are written before events, so events of a session registered in the same request attach
        to it. Every item is counted once: ``sessions.registered`` + ``sessions.already_registered`` +
        ``events.stored`` + ``events.duplicates`` + ``events.over_limit`` + ``len(rejected)`` = items sent.
        An invalid item, or a session conflicting with what is stored, is listed in ``rejected`` (``item``
        such as ``sessions[3]``, and the reason naming the field) and does not stop the others. A 200 means
        everything reported stored is committed; retrying the same request changes nothing.

        More than ``[clickstream] max_bulk_items`` items (default 1000) is a 422 and stores nothing; a
        body over ``[clickstream] max_request_bytes`` (default 8 MiB) is a 413.
        """
        return store.get().ingest_bulk(body.sessions, body.events)

    return router
