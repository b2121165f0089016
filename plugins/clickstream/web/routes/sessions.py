"""Routes of one session: register, read, push events, mark irrelevant, use for improvement."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from clickstream import models
from clickstream.store import StoreConfig
from clickstream.web.deps import require_write
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep

_WRITE = [Depends(require_write)]


def sessions_router(config: StoreConfig) -> APIRouter:
    """The ``/session`` routes; ``config`` gives the bounds declared on query parameters.

    (Query parameters use defaults, not ``Annotated``: with postponed annotations a bound taken from
    ``config`` could not be resolved inside ``Annotated``.)
    """
    router = APIRouter(prefix="/session", tags=["sessions"])

    @router.post(
        "",
        response_model=models.RegisterResult,
        dependencies=_WRITE,
        responses=error_responses(400, 401, 403, 409, 422, 503),
        summary="Register a session",
    )
    def register_session(body: models.SessionIn, store: StoreDep) -> models.RegisterResult:
        """Register a search session in the collecting batch; it gets the batch's next ``session_number``.

        Re-registering the same content answers ``status: already_registered`` (safe to retry); other
        content under a known ``session_id`` is a 409 and the stored session is kept. ``created_at`` is in
        milliseconds and must lie in the live-ingestion window (default 24 h back, 5 min ahead).
        """
        return store.get().register_session(body)

    @router.get(
        "",
        response_model=models.SessionOut,
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Get a session with its events",
    )
    def get_session(
        store: StoreDep,
        session_id: str = Query(min_length=1, max_length=128, description="the session's id"),
        events_limit: int | None = Query(
            None, ge=0, le=config.max_events, description="at most this many events, earliest first; all when omitted"
        ),
    ) -> models.SessionOut:
        """A session by id with its events (earliest first), its batch and its session number."""
        return store.get().get_session(session_id, events_limit=events_limit)

    @router.post(
        "/events",
        response_model=models.PushEventsResult,
        dependencies=_WRITE,
        responses=error_responses(400, 401, 403, 422, 503),
        summary="Push events of a session",
    )
    def push_events(body: models.PushEventsIn, store: StoreDep) -> models.PushEventsResult:
        """Store events (clicks, ...) of a session, registered or not yet.

        An ``event_id`` already stored for the session is counted in ``duplicates`` and not stored again.
        """
        return store.get().push_events(body.session_id, body.events)

    @router.post(
        "/irrelevant",
        response_model=models.IrrelevantResult,
        dependencies=_WRITE,
        responses=error_responses(400, 401, 403, 404, 422, 503),
        summary="Mark a session irrelevant",
    )
    def mark_irrelevant(body: models.SessionIdIn, store: StoreDep) -> models.IrrelevantResult:
        """Flag a session as irrelevant (explicit negative feedback). Idempotent: ``changed`` says whether
        this call changed it."""
        return store.get().mark_irrelevant(body.session_id)

    @router.post(
        "/use-for-improvement",
        response_model=models.UseForImprovementResult,
        dependencies=_WRITE,
        responses=error_responses(400, 401, 403, 404, 422, 503),
        summary="Queue a session for model improvement",
    )
    def use_for_improvement(body: models.SessionIdIn, store: StoreDep) -> models.UseForImprovementResult:
        """Queue the session for model improvement if it is eligible; the answer says what happened.

        ``status`` is ``marked``, ``already_marked`` or ``skipped`` (``reason``: ``payload_search`` or
        ``no_events``: no event on one of its results and not marked irrelevant).
        """
        return store.get().use_for_improvement(body.session_id)

    return router
