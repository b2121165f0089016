"""Routes of the training-signal labels (reads, any authenticated user): a released batch's examination curve,
``/batches/{batch_id}/propensities``, and its judgments (raw CTR vs debiased relevance per (query, object)),
``/batches/{batch_id}/judgments``, keyset-paged. Both answer 404 for an unknown batch and 409 while the batch
has no kept labels (collecting, or not fitted yet: the release DAG's labels task fits them)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query

from clickstream import models
from clickstream.store.labels import MAX_JUDGMENTS_PAGE
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep


def labels_router() -> APIRouter:
    """The labels routes under ``/batches/{batch_id}`` (reads: any authenticated user, viewers included)."""
    router = APIRouter(tags=["training-signal labels"])
    errors = error_responses(401, 403, 404, 409, 422, 503)

    @router.get(
        "/batches/{batch_id}/propensities",
        response_model=models.BatchPropensities,
        responses=errors,
        summary="A batch's examination curve",
    )
    def batch_propensities(
        store: StoreDep, batch_id: str = Path(min_length=1, max_length=128, description="a released batch")
    ) -> models.BatchPropensities:
        """The position-based click model's examination propensity ``theta`` per position (1..``[clickstream]
        label_max_position``) of a released batch, beside the raw click-through rate, with its standard
        error; ``theta`` is null where the batch cannot identify it (``reason`` says why). ``report``: what
        the fit left out (payload searches, irrelevant sessions), its convergence and identifiability."""
        return store.get().batch_propensities(batch_id)

    @router.get(
        "/batches/{batch_id}/judgments",
        response_model=models.JudgmentsPage,
        responses=errors,
        summary="A batch's debiased judgments",
    )
    def batch_judgments(
        store: StoreDep,
        batch_id: str = Path(min_length=1, max_length=128, description="a released batch"),
        query: str | None = Query(
            None, min_length=1, max_length=1024, description="only this query (normalized like the analytics)"
        ),
        limit: int = Query(100, ge=1, le=MAX_JUDGMENTS_PAGE, description="at most this many rows"),
        after: str | None = Query(None, min_length=1, max_length=4096, description="the previous page's next_after"),
    ) -> models.JudgmentsPage:
        """Raw CTR vs debiased relevance ``gamma`` (the CTR at position 1) per (normalized query, object) of a
        released batch, by (query, object_id), a keyset page at a time. The store keeps the judgments of the
        batch's top ``[clickstream] analytics_top_n`` queries by impressions; the dataset's ``judgments``
        table has every pair."""
        return store.get().batch_judgments(batch_id, query, limit, after)

    return router
