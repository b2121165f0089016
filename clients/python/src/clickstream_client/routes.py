"""The API's routes as :class:`Call` values: what to send and which schema answers. Both clients send the same
calls (:class:`~clickstream_client.ClickstreamClient` and :class:`~clickstream_client.AsyncClickstreamClient`
each have one method a function here, of the same name).

Adding a route: a function here returning its :class:`Call` (the answer's schema name as in
:mod:`clickstream_client.types`), then a three-line method of that name in ``client.py`` and in ``aio.py``.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

__all__ = ["Call", "as_json", "encode_json"]


class Call(NamedTuple):
    """One request: ``method`` and ``path`` under ``/clickstream``, query ``params``, a JSON ``body``, and the
    name of the schema of its answer (``answer``, a name of :mod:`clickstream_client.types`)."""

    method: str
    path: str
    answer: str
    params: dict[str, Any] | None = None
    body: Any = None


def as_json(item: Any) -> dict[str, Any]:
    """A JSON-ready copy of a request item: a mapping, or a model with ``model_dump`` (pydantic), whose unset
    optional (None) fields are left out."""
    dump = getattr(item, "model_dump", None)
    if dump is not None:
        value = dump(mode="json", exclude_none=True)
        if isinstance(value, dict):
            return value
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"expected a mapping or a model with model_dump(), got {type(item).__name__}")


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_none=True)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_json(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON (models and mappings inside it as well)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default).encode()


def _segment(value: str) -> str:
    return quote(value, safe="")


def _selection(
    params: dict[str, Any], batch_id: str | None, from_ms: int | None, to_ms: int | None, last: int | None
) -> dict[str, Any]:
    """Query parameters of an analytics call: ``params`` and the batch selection, None values left out."""
    every = {**params, "batch_id": batch_id, "from": from_ms, "to": to_ms, "last": last}
    return {k: v for k, v in every.items() if v is not None}


# ------------------------------------------------------------------------------------------ sessions


def register_session(session: Any) -> Call:
    return Call("POST", "/session", "RegisterResult", body=as_json(session))


def get_session(session_id: str, events_limit: int | None = None) -> Call:
    params: dict[str, Any] = {"session_id": session_id}
    if events_limit is not None:
        params["events_limit"] = events_limit
    return Call("GET", "/session", "SessionOut", params=params)


def push_events(session_id: str, events: Iterable[Any]) -> Call:
    body = {"session_id": session_id, "events": [as_json(event) for event in events]}
    return Call("POST", "/session/events", "PushEventsResult", body=body)


def mark_irrelevant(session_id: str) -> Call:
    return Call("POST", "/session/irrelevant", "IrrelevantResult", body={"session_id": session_id})


def use_for_improvement(session_id: str) -> Call:
    return Call("POST", "/session/use-for-improvement", "UseForImprovementResult", body={"session_id": session_id})


# ------------------------------------------------------------------------------------------ batches


def get_batch_sessions(batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100) -> Call:
    params = {"batch_id": batch_id, "after_number": after_number, "limit": limit, "events_limit": events_limit}
    return Call("GET", "/batch/sessions", "BatchSessionsPage", params=params)


def release_batch(release_id: str) -> Call:
    return Call("POST", "/batch/release", "ReleaseResult", body={"release_id": release_id})


def list_batches_page(limit: int = 20, before: str | None = None, release_id: str | None = None) -> Call:
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        params["before"] = before
    if release_id is not None:
        params["release_id"] = release_id
    return Call("GET", "/batches", "BatchList", params=params)


def get_batch_summary(batch_id: str) -> Call:
    return Call("GET", f"/batches/{_segment(batch_id)}", "BatchSummary")


def batch_positions(batch_id: str, max_position: int = 20) -> Call:
    params = {"max_position": max_position}
    return Call("GET", f"/batches/{_segment(batch_id)}/positions", "BatchPositions", params=params)


def metrics_series(limit: int = 100) -> Call:
    return Call("GET", "/metrics", "MetricsSeries", params={"limit": limit})


# ------------------------------------------------------------------------------------------ search analytics


def top_searches(
    order_by: str = "count",
    direction: str = "desc",
    limit: int = 100,
    after: str | None = None,
    *,
    batch_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    last: int | None = None,
) -> Call:
    params = {"order_by": order_by, "direction": direction, "limit": limit, "after": after}
    return Call("GET", "/analytics/searches", "SearchesPage", params=_selection(params, batch_id, from_ms, to_ms, last))


def searches_without_results(
    limit: int = 100,
    after: str | None = None,
    *,
    batch_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    last: int | None = None,
) -> Call:
    params = _selection({"limit": limit, "after": after}, batch_id, from_ms, to_ms, last)
    return Call("GET", "/analytics/searches/no-results", "SearchesPage", params=params)


def searches_without_clicks(
    limit: int = 100,
    after: str | None = None,
    *,
    batch_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    last: int | None = None,
) -> Call:
    params = _selection({"limit": limit, "after": after}, batch_id, from_ms, to_ms, last)
    return Call("GET", "/analytics/searches/no-clicks", "SearchesPage", params=params)


def top_hits(
    order_by: str = "impressions",
    direction: str = "desc",
    limit: int = 100,
    after: str | None = None,
    *,
    batch_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    last: int | None = None,
) -> Call:
    params = {"order_by": order_by, "direction": direction, "limit": limit, "after": after}
    return Call("GET", "/analytics/hits", "HitsPage", params=_selection(params, batch_id, from_ms, to_ms, last))


def query_analytics(
    query: str,
    *,
    batch_id: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
    last: int | None = None,
) -> Call:
    params = _selection({}, batch_id, from_ms, to_ms, last)
    return Call("GET", f"/analytics/queries/{_segment(query)}", "QueryAnalytics", params=params)


# ------------------------------------------------------------------------------------------ labels


def batch_propensities(batch_id: str) -> Call:
    return Call("GET", f"/batches/{_segment(batch_id)}/propensities", "BatchPropensities")


def batch_judgments(batch_id: str, query: str | None = None, limit: int = 100, after: str | None = None) -> Call:
    params = {k: v for k, v in {"query": query, "limit": limit, "after": after}.items() if v is not None}
    return Call("GET", f"/batches/{_segment(batch_id)}/judgments", "JudgmentsPage", params=params)


# ------------------------------------------------------------------------------------------ admin, bulk


def erase_user(user_id: str) -> Call:
    return Call("POST", "/user/erase", "EraseResult", body={"user_id": user_id})


def bulk(sessions: Iterable[Any] = (), events: Iterable[Any] = ()) -> Call:
    body = {"sessions": [as_json(s) for s in sessions], "events": [as_json(e) for e in events]}
    return Call("POST", "/bulk", "BulkResult", body=body)
