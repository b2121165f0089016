"""Administrative routes: erasure of a user's data."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from clickstream import models
from clickstream.web.deps import require_admin
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep


def admin_router() -> APIRouter:
    """The ``/user`` routes (administrators only)."""
    router = APIRouter(prefix="/user", tags=["admin"])

    @router.post(
        "/erase",
        response_model=models.EraseResult,
        dependencies=[Depends(require_admin)],
        responses=error_responses(400, 401, 403, 422, 503),
        summary="Erase a user's data",
    )
    def erase_user(body: models.UserIdIn, store: StoreDep) -> models.EraseResult:
        """Remove every session, event and improvement mark of ``user_id`` in one transaction.

        Answers the counts removed and the batches that held the user's sessions: datasets already
        extracted from released batches are outside the store and must be handled separately. A user with
        no data answers zero counts.
        """
        return store.get().erase_user(body.user_id)

    return router
