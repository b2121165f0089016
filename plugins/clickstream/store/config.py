"""The store's tunables, the fixed limits of the Clickstream page's reads, and the clock."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StoreConfig:
    """Tunables of the store; every one has the default documented in docs/store.md. Inside Airflow they
    come from the ``[clickstream]`` config section (same names).

    :param max_page: largest ``limit`` of a batch page.
    :param max_events: largest ``events_limit`` of a batch page.
    :param window_back_ms: live ingestion rejects timestamps older than this (default 24 h).
    :param window_ahead_ms: live ingestion rejects timestamps further in the future (default 5 min).
    :param max_attempts: improvement marks failing this many times end as ``failed``.
    :param claim_stale_ms: a mark left in ``processing`` this long is handed out again.
    :param max_results: most ``search_results`` a session may have.
    :param max_json_bytes: largest free-form JSON object (``search_meta``, ``payload_filter``, a result's or
        an event's ``meta``), in bytes of its UTF-8 JSON text.
    :param max_events_per_session: events a session holds at most; later ones are counted ``over_limit``
        and not stored, and reads of a session return at most this many.
    :param max_bulk_items: most items (sessions + events) of one ``ingest_bulk``.
    :param analytics_top_n: queries (by sessions, by no-result sessions, by no-click sessions) and objects
        (by impressions) kept per released batch by the search analytics (:mod:`clickstream.store.analytics`).
    :param label_event_types: event types (comma-separated) that count as a positive for the training-signal
        labels (``label_clicks`` of :func:`clickstream.store.aggregation.aggregate_batch`).
    :param label_max_position: the labels step estimates the examination propensity ``θ`` of positions
        1..this (:mod:`clickstream.store.labels`); impressions further down are left out of the fit.
    :param max_ips_weight: the largest inverse-propensity weight of a training pair (``1/θ`` clipped here).
    """

    max_page: int = 1000
    max_events: int = 1000
    window_back_ms: int = 24 * 3600 * 1000
    window_ahead_ms: int = 5 * 60 * 1000
    max_attempts: int = 3
    claim_stale_ms: int = 3600 * 1000
    max_results: int = 1000
    max_json_bytes: int = 64 * 1024
    max_events_per_session: int = 10_000
    max_bulk_items: int = 1000
    analytics_top_n: int = 1000
    label_event_types: str = "click"
    label_max_position: int = 20
    max_ips_weight: float = 10.0


# The fixed limits of the batch overview (the Clickstream page's reads; not tunables): the REST routes declare
# the same bounds, so the API's own validation answers them.

#: Largest ``limit`` of :meth:`~clickstream.store.SessionStore.list_batches_page`.
MAX_BATCHES_PAGE = 100
#: Largest ``limit`` of :meth:`~clickstream.store.SessionStore.metrics_series` and
#: :meth:`~clickstream.store.SessionStore.compute_missing_metrics`.
MAX_METRICS_SERIES = 1000
#: Largest ``max_position`` of :meth:`~clickstream.store.SessionStore.batch_positions`.
MAX_POSITION = 100
#: Positions of the curve kept with a released batch's metrics (the page's default ``max_position``).
KEPT_POSITIONS = 20
#: Released batches without kept metrics that one read (a batch list, a batch summary) computes at most;
#: the others answer ``metrics`` None until a later read or the metrics task computes them.
READ_COMPUTE_BUDGET = 2


def now_ms() -> int:
    """Milliseconds since the epoch: the store's time unit."""
    return time.time_ns() // 1_000_000
