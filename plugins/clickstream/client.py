"""A Python client of the clickstream REST API, and a buffered writer for collectors.

It needs only ``httpx`` and ``pydantic`` (no Airflow), so it runs in any search service or collector
process. Answers are the pydantic models of :mod:`clickstream.models`.

Usage::

    from clickstream.client import ClickstreamClient, NotFoundError

    with ClickstreamClient("http://localhost:8080", username="search-service", password="s3cret") as client:
        client.register_session({"session_id": "sess-1", "search_query": "ai transformer",
                                 "search_results": [{"object_id": "obj-1", "rank": 1.0}]})
        client.push_events("sess-1", [{"event_id": "evt-1", "object_id": "obj-1"}])
        session = client.get_session("sess-1")          # a SessionOut
        try:
            client.get_session("sess-typo")
        except NotFoundError as err:
            print(err.status, err.detail)                # 404 session_id 'sess-typo' not found

        # Collectors: buffer items and send them with POST /clickstream/bulk, retrying outages.
        with client.writer(max_items=1000, max_age_s=1.0) as writer:   # close() flushes the rest
            writer.add_session({"session_id": "sess-2", "search_results": []})
            writer.add_event("sess-2", {"event_id": "evt-1", "object_id": "obj-1"})
        print(writer.registered, writer.stored, writer.rejected)

Errors
    A non-2xx answer raises :class:`ClickstreamError` (or its subclass for the status:
    :class:`AuthError` 401/403, :class:`NotFoundError` 404, :class:`ConflictError` 409,
    :class:`TooLargeError` 413, :class:`InvalidInputError` 422, :class:`UnavailableError` 503) with
    ``status``, ``detail`` and ``errors``. Network failures (connection refused, timeouts, a connection
    dropped mid-answer) are **not** wrapped: they propagate as ``httpx.TransportError`` subclasses
    (``httpx.ConnectError``, ``httpx.ReadTimeout``, ...). :class:`BulkWriter` retries both kinds where
    that is safe.

Authentication
    Pass a ``token`` (a JWT of Airflow's auth manager) or a ``username`` and ``password``: the client then
    gets a token from ``POST /auth/token`` on first use, and once more when an answer is 401 (token
    expired). Both may be given: the token is used first, the credentials renew it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from clickstream import models

__all__ = [
    "AuthError",
    "BulkDeliveryError",
    "BulkWriter",
    "ClickstreamClient",
    "ClickstreamError",
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "TooLargeError",
    "UnavailableError",
]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)

#: HTTP statuses :class:`BulkWriter` retries (the server or a proxy in front of it is briefly unavailable).
RETRY_STATUSES = frozenset({502, 503, 504})

#: Transport errors that are not worth retrying: the request is malformed on our side.
_PERMANENT_TRANSPORT_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


# ---------------------------------------------------------------------------------------------- errors


class ClickstreamError(Exception):
    """A non-2xx answer of the clickstream API (or of ``POST /auth/token``).

    :param status: the HTTP status.
    :param detail: the answer's ``detail`` (a human-readable text naming the offending field or id), or
        its text when the answer is not the API's JSON error.
    :param errors: the answer's structured ``errors`` list (one entry per offending field), if any.
    :param retry_after: the ``Retry-After`` header in seconds, if the server sent one (503).
    """

    def __init__(
        self, status: int, detail: str, errors: list[dict[str, Any]] | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClickstreamError:
        """The exception (of the subclass for ``response.status_code``) for an error answer."""
        errors = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "detail" in body:
            raw = body["detail"]
            detail = raw if isinstance(raw, str) else _compact_json(raw)
            if isinstance(body.get("errors"), list):
                errors = body["errors"]
        else:
            detail = response.text.strip() or response.reason_phrase or "error"
        retry_after: float | None = None
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        status = response.status_code
        kind = _ERROR_CLASSES.get(status, ClickstreamError)
        return kind(status, detail, errors, retry_after=retry_after)


class AuthError(ClickstreamError):
    """401 (no token, token expired, wrong credentials) or 403 (invalid token, role lacks the permission)."""


class NotFoundError(ClickstreamError):
    """404: unknown session, batch, or nothing to release."""


class ConflictError(ClickstreamError):
    """409: a ``session_id`` registered again with other content (the stored session is kept)."""


class TooLargeError(ClickstreamError):
    """413: the request body is larger than ``[clickstream] max_request_bytes``."""


class InvalidInputError(ClickstreamError):
    """422: invalid input; ``detail`` names the field (``body.created_at: ...``) and ``errors`` lists them."""


class UnavailableError(ClickstreamError):
    """503: the session store is unreachable or busy; retry after ``retry_after`` seconds."""


_ERROR_CLASSES: dict[int, type[ClickstreamError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    422: InvalidInputError,
    503: UnavailableError,
}


class BulkDeliveryError(Exception):
    """:class:`BulkWriter` could not deliver some items (retries exhausted, or a non-retryable error).

    :param undelivered: the request bodies that were not delivered, each ``{"sessions": [...],
        "events": [...]}`` (the items as they would have been sent; events carry their ``session_id``).
    :param errors: the last error of each undelivered body, in the same order.
    """

    def __init__(self, undelivered: list[dict[str, list[dict[str, Any]]]], errors: list[BaseException]) -> None:
        items = sum(len(body["sessions"]) + len(body["events"]) for body in undelivered)
        last = errors[-1] if errors else None
        super().__init__(
            f"{items} item(s) in {len(undelivered)} request(s) could not be delivered"
            + (f"; last error: {type(last).__name__}: {last}" if last else "")
        )
        self.undelivered = undelivered
        self.errors = errors


def _compact_json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _as_json(item: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready copy of a request item: models without their unset optional (None) fields."""
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", exclude_none=True)
    if isinstance(item, Mapping):
        value = to_jsonable_python(dict(item))
        assert isinstance(value, dict)
        return value
    raise TypeError(f"expected a mapping or a pydantic model, got {type(item).__name__}")


# ---------------------------------------------------------------------------------------------- client


def _selection(
    params: dict[str, Any], batch_id: str | None, from_ms: int | None, to_ms: int | None, last: int | None
) -> dict[str, Any]:
    """Query parameters of an analytics call: ``params`` and the batch selection, None values left out."""
    every = {**params, "batch_id": batch_id, "from": from_ms, "to": to_ms, "last": last}
    return {k: v for k, v in every.items() if v is not None}


class ClickstreamClient:
    """A client of the clickstream REST API served by Airflow's API server.

    Thread-safe: one client may be shared by many threads (it holds one ``httpx.Client`` connection
    pool).

    :param base_url: the Airflow API server's root, e.g. ``http://localhost:8080`` (with the path of
        ``[api] base_url``, if it has one); routes are under ``<base_url>/clickstream``.
    :param token: a JWT to send as ``Authorization: Bearer``.
    :param username: user name of an Airflow user; with ``password``, the client gets (and renews) its
        token from ``POST <base_url>/auth/token``.
    :param password: that user's password.
    :param timeout: seconds for each request (connect, read, write, pool).
    :param transport: an ``httpx`` transport (for tests, proxies, retries at the connection level).
    """

    prefix = "/clickstream"

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._username = username
        self._password = password
        self._auth_lock = threading.Lock()
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    # ------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ClickstreamClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ auth

    def login(self) -> str:
        """Get a new token from ``POST /auth/token`` with the client's credentials, use it and return it.

        :raises AuthError: wrong credentials (401/403).
        :raises ValueError: the client has no credentials.
        """
        if self._username is None or self._password is None:
            raise ValueError("the client has no username/password to log in with")
        response = self._http.post("/auth/token", json={"username": self._username, "password": self._password})
        if response.status_code not in (200, 201):
            raise ClickstreamError.from_response(response)
        token = response.json()["access_token"]
        self._token = token
        return token

    def _auth_header(self) -> tuple[dict[str, str], str | None]:
        token = self._token
        if token is None and self._username is not None:
            with self._auth_lock:
                if self._token is None:
                    self.login()
                token = self._token
        return ({"Authorization": f"Bearer {token}"} if token else {}), token

    # ------------------------------------------------------------------------------------ requests

    def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """Send a request to ``<base_url>/clickstream<path>``; renew the token once on a 401.

        :raises ClickstreamError: a non-2xx answer.
        :raises httpx.TransportError: the server could not be reached or the connection failed.
        """
        url = self.prefix + path
        headers, sent_token = self._auth_header()
        response = self._http.request(method, url, json=json, params=params, headers=headers)
        if response.status_code == 401 and self._username is not None:
            with self._auth_lock:
                if self._token == sent_token:  # not renewed by another thread meanwhile
                    self.login()
            headers, _ = self._auth_header()
            response = self._http.request(method, url, json=json, params=params, headers=headers)
        if not response.is_success:
            raise ClickstreamError.from_response(response)
        return response

    def _call(
        self, model: type[_M], method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> _M:
        return model.model_validate_json(self._request(method, path, json=json, params=params).content)

    # ------------------------------------------------------------------------------------ sessions

    def register_session(self, session: models.SessionIn | Mapping[str, Any]) -> models.RegisterResult:
        """Register a session (``POST /clickstream/session``).

        :param session: the session: ``session_id``, ``search_query``, ``search_results``, ...,
            ``created_at`` (milliseconds; the server's time of receipt when omitted).
        :returns: its batch and number; ``status`` is ``registered`` or ``already_registered`` (the same
            content was registered before: a safe retry).
        :raises ConflictError: the ``session_id`` is registered with other content.
        :raises InvalidInputError: a field is invalid (``detail`` names it).
        """
        return self._call(models.RegisterResult, "POST", "/session", json=_as_json(session))

    def get_session(self, session_id: str, events_limit: int | None = None) -> models.SessionOut:
        """A session with its events, earliest first (``GET /clickstream/session``).

        :param session_id: the session.
        :param events_limit: at most this many events (all when ``None``).
        :raises NotFoundError: unknown session.
        """
        params: dict[str, Any] = {"session_id": session_id}
        if events_limit is not None:
            params["events_limit"] = events_limit
        return self._call(models.SessionOut, "GET", "/session", params=params)

    def push_events(
        self, session_id: str, events: Iterable[models.EventIn | Mapping[str, Any]]
    ) -> models.PushEventsResult:
        """Store events of a session, registered or not yet (``POST /clickstream/session/events``).

        :param session_id: the session.
        :param events: the events (``event_id``, ``object_id``, ``event_type``, ``created_at``, ``meta``).
        :returns: how many were stored; an ``event_id`` already stored counts in ``duplicates``.
        """
        body = {"session_id": session_id, "events": [_as_json(event) for event in events]}
        return self._call(models.PushEventsResult, "POST", "/session/events", json=body)

    def mark_irrelevant(self, session_id: str) -> models.IrrelevantResult:
        """Mark a session irrelevant (``POST /clickstream/session/irrelevant``); idempotent.

        :param session_id: the session.
        :raises NotFoundError: unknown session.
        """
        return self._call(models.IrrelevantResult, "POST", "/session/irrelevant", json={"session_id": session_id})

    def use_for_improvement(self, session_id: str) -> models.UseForImprovementResult:
        """Queue a session for model improvement (``POST /clickstream/session/use-for-improvement``).

        :param session_id: the session.
        :returns: ``status`` ``marked``, ``already_marked`` or ``skipped`` (with its ``reason``).
        :raises NotFoundError: unknown session.
        """
        return self._call(
            models.UseForImprovementResult, "POST", "/session/use-for-improvement", json={"session_id": session_id}
        )

    # ------------------------------------------------------------------------------------ batches

    def get_batch_sessions(
        self, batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100
    ) -> models.BatchSessionsPage:
        """One page of a batch's sessions numbered above ``after_number`` (``GET /clickstream/batch/sessions``).

        :param batch_id: the batch.
        :param after_number: pass the previous page's ``last_number`` (0 for the first page).
        :param limit: at most this many sessions (at most ``[clickstream] max_page``, default 1000).
        :param events_limit: at most this many events per session, earliest first; 0 for none.
        :raises NotFoundError: unknown batch.
        """
        params = {"batch_id": batch_id, "after_number": after_number, "limit": limit, "events_limit": events_limit}
        return self._call(models.BatchSessionsPage, "GET", "/batch/sessions", params=params)

    def iter_batch_sessions(
        self, batch_id: str, page_size: int = 1000, events_limit: int = 100, after_number: int = 0
    ) -> Iterator[models.BatchSession]:
        """Every session of a batch numbered above ``after_number``, in order, one page request at a time.

        Pages with the keyset ``after_number = last_number`` until a page is empty, so each session is
        visited exactly once even while sessions are added.

        :param batch_id: the batch.
        :param page_size: sessions per request (at most ``[clickstream] max_page``, default 1000).
        :param events_limit: at most this many events per session.
        :param after_number: start after this session number.
        """
        after = after_number
        while True:
            page = self.get_batch_sessions(batch_id, after_number=after, limit=page_size, events_limit=events_limit)
            if not page.sessions or page.last_number is None:
                return
            yield from page.sessions
            after = page.last_number

    def release_batch(self, release_id: str) -> models.ReleaseResult:
        """Release the collecting batch under ``release_id`` (``POST /clickstream/batch/release``).

        :param release_id: an idempotency key: retrying with it answers the same result.
        :raises NotFoundError: no collecting batch and an unknown ``release_id``.
        """
        return self._call(models.ReleaseResult, "POST", "/batch/release", json={"release_id": release_id})

    def list_batches_page(
        self, limit: int = 20, before: str | None = None, release_id: str | None = None
    ) -> models.BatchList:
        """Batches newest first, with counts, metrics and dataset (``GET /clickstream/batches``).

        :param limit: at most this many batches (1..100).
        :param before: the previous page's ``next_before``, for the next (older) page.
        :param release_id: only the batch released under this release id.
        :raises NotFoundError: unknown ``before`` batch.
        """
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        if release_id is not None:
            params["release_id"] = release_id
        return self._call(models.BatchList, "GET", "/batches", params=params)

    def get_batch_summary(self, batch_id: str) -> models.BatchSummary:
        """One batch: status, times, counts, metrics, dataset (``GET /clickstream/batches/{batch_id}``).

        :raises NotFoundError: unknown batch.
        """
        return self._call(models.BatchSummary, "GET", f"/batches/{quote(batch_id, safe='')}")

    def batch_positions(self, batch_id: str, max_position: int = 20) -> models.BatchPositions:
        """Click-through rate by result position 1..``max_position`` of a batch
        (``GET /clickstream/batches/{batch_id}/positions``).

        :raises NotFoundError: unknown batch.
        """
        return self._call(
            models.BatchPositions,
            "GET",
            f"/batches/{quote(batch_id, safe='')}/positions",
            params={"max_position": max_position},
        )

    def metrics_series(self, limit: int = 100) -> models.MetricsSeries:
        """The metrics of the last ``limit`` released batches, oldest first (``GET /clickstream/metrics``)."""
        return self._call(models.MetricsSeries, "GET", "/metrics", params={"limit": limit})

    # ---------------------------------------------------------------------------- search analytics

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
        """Top searches of the selected released batches (``GET /clickstream/analytics/searches``): one batch
        (``batch_id``), those released in ``[from_ms, to_ms)``, or the ``last`` N (default: the last one)."""
        params = {"order_by": order_by, "direction": direction, "limit": limit, "after": after}
        return self._call(
            models.SearchesPage, "GET", "/analytics/searches", params=_selection(params, batch_id, from_ms, to_ms, last)
        )

    def searches_without_results(
        self,
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.SearchesPage:
        """Searches with sessions without results (``GET /clickstream/analytics/searches/no-results``)."""
        params = _selection({"limit": limit, "after": after}, batch_id, from_ms, to_ms, last)
        return self._call(models.SearchesPage, "GET", "/analytics/searches/no-results", params=params)

    def searches_without_clicks(
        self,
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.SearchesPage:
        """Searches with sessions without a click (``GET /clickstream/analytics/searches/no-clicks``)."""
        params = _selection({"limit": limit, "after": after}, batch_id, from_ms, to_ms, last)
        return self._call(models.SearchesPage, "GET", "/analytics/searches/no-clicks", params=params)

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
        """Top hits (objects) of the selected released batches (``GET /clickstream/analytics/hits``)."""
        params = {"order_by": order_by, "direction": direction, "limit": limit, "after": after}
        return self._call(
            models.HitsPage, "GET", "/analytics/hits", params=_selection(params, batch_id, from_ms, to_ms, last)
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
        """One query over the selected released batches (``GET /clickstream/analytics/queries/{query}``)."""
        return self._call(
            models.QueryAnalytics,
            "GET",
            f"/analytics/queries/{quote(query, safe='')}",
            params=_selection({}, batch_id, from_ms, to_ms, last),
        )

    # ---------------------------------------------------------------------------- training-signal labels

    def batch_propensities(self, batch_id: str) -> models.BatchPropensities:
        """A released batch's examination curve: θ per position beside the raw CTR, and the fit's report
        (``GET /clickstream/batches/{batch_id}/propensities``).

        :raises NotFoundError: unknown batch. :raises ConflictError: no labels kept for it (yet).
        """
        return self._call(models.BatchPropensities, "GET", f"/batches/{quote(batch_id, safe='')}/propensities")

    def batch_judgments(
        self, batch_id: str, query: str | None = None, limit: int = 100, after: str | None = None
    ) -> models.JudgmentsPage:
        """A keyset page of a released batch's judgments, raw CTR vs debiased γ per (query, object)
        (``GET /clickstream/batches/{batch_id}/judgments``); pass ``next_after`` as ``after`` for the next.

        :raises NotFoundError: unknown batch. :raises ConflictError: no labels kept for it (yet).
        """
        return self._call(
            models.JudgmentsPage,
            "GET",
            f"/batches/{quote(batch_id, safe='')}/judgments",
            params={k: v for k, v in {"query": query, "limit": limit, "after": after}.items() if v is not None},
        )

    # ------------------------------------------------------------------------------------ admin

    def erase_user(self, user_id: str) -> models.EraseResult:
        """Erase every session, event and improvement mark of a user (``POST /clickstream/user/erase``).

        Needs an administrator.

        :param user_id: the user.
        :raises AuthError: 403 when the client's user is not an administrator.
        """
        return self._call(models.EraseResult, "POST", "/user/erase", json={"user_id": user_id})

    # ------------------------------------------------------------------------------------ bulk

    def bulk(
        self,
        sessions: Iterable[models.SessionIn | Mapping[str, Any]] = (),
        events: Iterable[BaseModel | Mapping[str, Any]] = (),
    ) -> models.BulkResult:
        """Register sessions and store events in one request (``POST /clickstream/bulk``).

        Each item is validated and counted on its own: an invalid item is listed in ``rejected`` (with
        its index, ``"sessions[3]"``), the others are written. Retrying a request changes nothing.

        :param sessions: objects as for :meth:`register_session`.
        :param events: objects as for :meth:`push_events` plus their ``session_id``.
        :raises InvalidInputError: more than ``[clickstream] max_bulk_items`` items (default 1000), or a
            body that is not the bulk shape.
        :raises TooLargeError: the body is larger than ``[clickstream] max_request_bytes`` (default 8 MiB).
        """
        body = {"sessions": [_as_json(s) for s in sessions], "events": [_as_json(e) for e in events]}
        return self._send_bulk(body)

    def _send_bulk(self, body: dict[str, list[dict[str, Any]]]) -> models.BulkResult:
        return self._call(models.BulkResult, "POST", "/bulk", json=body)

    def writer(self, **kwargs: Any) -> BulkWriter:
        """A :class:`BulkWriter` sending through this client; ``kwargs`` as for :class:`BulkWriter`."""
        return BulkWriter(self, **kwargs)


# ---------------------------------------------------------------------------------------------- writer


class _Item(NamedTuple):
    seq: int
    added: float  # time.monotonic() when added
    is_session: bool
    body: dict[str, Any]


class BulkWriter:
    """Buffers sessions and events and sends them with ``POST /clickstream/bulk``, retrying outages.

    A background thread sends the buffer when it holds ``max_items`` items (sessions and events count
    together), when its oldest item is ``max_age_s`` old, on :meth:`flush` and on :meth:`close` (also at
    the end of a ``with`` block). Items go out in the order they were added, at most ``max_items`` per
    request, sessions before events within a request (events may arrive before their session anyway).

    Delivery: a request that fails with 502, 503, 504 or a transport error (connection refused, reset,
    timeout) is sent again after an exponential backoff with jitter, until ``max_retry_s`` have passed
    since its first attempt. That is safe because every write is idempotent: a session registered again
    with the same content is ``already_registered``, an event with a known ``event_id`` is a duplicate.
    4xx answers are not retried (a 413 is split in halves first, down to single items). Items that could
    not be delivered are kept in :attr:`undelivered` and logged; :meth:`flush` and :meth:`close` raise
    :class:`BulkDeliveryError` for them (each failure is raised once).

    Items rejected one by one in a 200 answer (invalid field, conflicting re-registration, ...) are not
    errors of the writer: they are counted in :attr:`rejected` and logged at WARNING.

    ``add_*`` are thread-safe. When the buffer holds ``max_buffer_items`` items (for example while a
    request is being retried) they block until there is room (back-pressure), or raise ``TimeoutError``
    after their ``timeout``.

    :param client: the :class:`ClickstreamClient` to send with.
    :param max_items: items per request (at most the server's ``[clickstream] max_bulk_items``, 1000).
    :param max_age_s: send when the oldest buffered item is this old.
    :param max_retry_s: give up on a request after retrying it this long (also the time :meth:`close`
        waits for the rest at most, plus one request timeout).
    :param max_buffer_items: ``add_*`` block while this many items wait (default ``2 * max_items``).
    :param backoff_initial_s: first retry delay; it doubles on each retry.
    :param backoff_max_s: the longest retry delay.
    :param on_result: called with every :class:`~clickstream.models.BulkResult`, in the writer's thread
        (so it must not call ``add_*``, which could wait for that thread).
    :param stamp_created_at: give items without ``created_at`` the client's clock time when they are
        added (milliseconds), so their time does not include how long they waited in the buffer or in
        retries during an outage. Default ``False``: they are sent without one and the server stores its
        time of receipt (retries are safe either way: the server compares a session's content with
        ``created_at`` as sent; but a session added again later without ``created_at`` is
        ``already_registered`` only when it is not stamped).
    :param close_client: also close ``client`` in :meth:`close`.
    """

    def __init__(
        self,
        client: ClickstreamClient,
        *,
        max_items: int = 1000,
        max_age_s: float = 1.0,
        max_retry_s: float = 300.0,
        max_buffer_items: int | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        on_result: Callable[[models.BulkResult], Any] | None = None,
        stamp_created_at: bool = False,
        close_client: bool = False,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.client = client
        self.max_items = max_items
        self.max_age_s = max_age_s
        self.max_retry_s = max_retry_s
        self.max_buffer_items = max(max_buffer_items or 2 * max_items, 1)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_result = on_result
        self.stamp_created_at = stamp_created_at
        self.close_client = close_client

        # running totals (updated by the writer's thread)
        #: sessions registered / already registered (a safe repeat)
        self.registered = 0
        self.already_registered = 0
        #: events stored / already stored (duplicate event_id) / not stored because the session is full
        self.stored = 0
        self.duplicates = 0
        self.over_limit = 0
        #: sessions and events not stored because their user was erased
        self.erased = 0
        #: every item rejected by the server, as the answers listed them
        self.rejected: list[models.BulkRejection] = []
        #: bulk requests answered 200, and requests sent again after a retryable failure
        self.requests = 0
        self.retries = 0
        #: request bodies that could not be delivered, and the error of each
        self.undelivered: list[dict[str, list[dict[str, Any]]]] = []
        self.errors: list[BaseException] = []

        self._cond = threading.Condition()
        self._buffer: deque[_Item] = deque()
        self._seq = 0  # seq of the last item added
        self._done_seq = 0  # every item with seq <= this was delivered or given up on
        self._flush_upto = 0  # deliver every item with seq <= this now
        self._inflight = 0
        self._closing = False
        self._closed = False
        self._close_deadline: float | None = None
        self._reported = 0  # failures already raised by flush()/close()
        self._outage: Exception | None = None  # the retryable error the last request gave up on
        self._thread = threading.Thread(target=self._run, name="clickstream-bulk-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ adding

    def add_session(self, session: models.SessionIn | Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Buffer a session (as for :meth:`ClickstreamClient.register_session`).

        :param session: the session, a mapping or a :class:`~clickstream.models.SessionIn`.
        :param timeout: seconds to wait for room in a full buffer (``None``: as long as it takes).
        :raises TimeoutError: no room within ``timeout``.
        """
        self._add([(True, self._prepare(session))], timeout)

    def add_event(
        self, session_id: str, event: models.EventIn | Mapping[str, Any], *, timeout: float | None = None
    ) -> None:
        """Buffer one event of ``session_id``; see :meth:`add_events`."""
        self.add_events(session_id, [event], timeout=timeout)

    def add_events(
        self, session_id: str, events: Iterable[models.EventIn | Mapping[str, Any]], *, timeout: float | None = None
    ) -> None:
        """Buffer events of a session (as for :meth:`ClickstreamClient.push_events`).

        :param session_id: the session (registered or not yet).
        :param events: the events, mappings or :class:`~clickstream.models.EventIn`.
        :param timeout: seconds to wait for room in a full buffer (``None``: as long as it takes).
        :raises TimeoutError: no room within ``timeout`` (events before the one that did not fit are
            buffered).
        """
        items = []
        for event in events:
            body = self._prepare(event)
            body["session_id"] = session_id
            items.append((False, body))
        self._add(items, timeout)

    def _prepare(self, item: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
        body = _as_json(item)
        if self.stamp_created_at and body.get("created_at") is None:
            body["created_at"] = _now_ms()
        return body

    def _add(self, items: list[tuple[bool, dict[str, Any]]], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            for is_session, body in items:
                while len(self._buffer) >= self.max_buffer_items and not self._closing:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"the writer's buffer stayed full ({len(self._buffer)} items) for {timeout} s"
                        )
                    self._cond.wait(remaining)
                if self._closing:
                    raise RuntimeError("the writer is closed")
                self._seq += 1
                self._buffer.append(_Item(self._seq, time.monotonic(), is_session, body))
                if len(self._buffer) == 1 or len(self._buffer) >= self.max_items:
                    self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items buffered or being sent."""
        with self._cond:
            return len(self._buffer) + self._inflight

    # ------------------------------------------------------------------------------------ flushing

    def flush(self, timeout: float | None = None) -> None:
        """Send everything added so far and wait until it was delivered or given up on.

        :param timeout: seconds to wait (``None``: until done; bounded by ``max_retry_s`` per request).
        :raises TimeoutError: not done within ``timeout``.
        :raises BulkDeliveryError: items could not be delivered (raised once per failure).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            while self._done_seq < target:
                if not self._thread.is_alive():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"flush not done after {timeout} s ({len(self._buffer) + self._inflight} items pending)"
                    )
                self._cond.wait(remaining)
        self._raise_failures()

    def close(self) -> None:
        """Send what is left, stop the writer's thread (and close the client if ``close_client``).

        Waits at most about ``max_retry_s`` (plus one request timeout) for the rest to be delivered.

        :raises BulkDeliveryError: items could not be delivered (in this call or before, not yet raised).
        """
        with self._cond:
            if not self._closed:
                self._closed = True
                self._closing = True
                self._close_deadline = time.monotonic() + self.max_retry_s
                self._cond.notify_all()
        self._thread.join()
        if self.close_client:
            self.client.close()
        self._raise_failures()

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _raise_failures(self) -> None:
        with self._cond:
            new = len(self.undelivered) - self._reported
            if new <= 0:
                return
            self._reported = len(self.undelivered)
            undelivered, errors = self.undelivered[-new:], self.errors[-new:]
        raise BulkDeliveryError(undelivered, errors)

    # ------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._buffer:
                        if (
                            len(self._buffer) >= self.max_items
                            or self._closing
                            or self._flush_upto >= self._buffer[0].seq
                        ):
                            break
                        age = time.monotonic() - self._buffer[0].added
                        if age >= self.max_age_s:
                            break
                        self._cond.wait(self.max_age_s - age)
                    elif self._closing:
                        return
                    else:
                        self._cond.wait()
                count = min(self.max_items, len(self._buffer))
                chunk = [self._buffer.popleft() for _ in range(count)]
                self._inflight = count
                self._cond.notify_all()  # room for blocked add_*
            try:
                self._deliver(chunk, time.monotonic() + self.max_retry_s)
            except BaseException as err:
                log.exception("clickstream bulk writer: unexpected error")
                self._fail(chunk, err)
            finally:
                with self._cond:
                    self._done_seq = chunk[-1].seq
                    self._inflight = 0
                    self._cond.notify_all()

    def _deadline(self, own: float) -> float:
        close = self._close_deadline
        return own if close is None else min(own, close)

    def _deliver(self, chunk: list[_Item], deadline: float) -> None:
        body: dict[str, list[dict[str, Any]]] = {
            "sessions": [item.body for item in chunk if item.is_session],
            "events": [item.body for item in chunk if not item.is_session],
        }
        try:
            result = self._send_with_retry(body, deadline)
        except TooLargeError as err:
            if len(chunk) == 1:
                self._fail(chunk, err)
                return
            log.info("clickstream bulk writer: %d items are too large for one request; splitting", len(chunk))
            half = len(chunk) // 2
            self._deliver(chunk[:half], deadline)
            self._deliver(chunk[half:], deadline)
            return
        except (ClickstreamError, httpx.HTTPError) as err:
            self._fail(chunk, err)
            return
        self._count(result, body)

    def _send_with_retry(self, body: dict[str, list[dict[str, Any]]], own_deadline: float) -> models.BulkResult:
        attempt = 0
        while True:
            outage = self._outage
            if outage is not None and self._close_deadline is not None and time.monotonic() >= self._close_deadline:
                # closing, out of time, and the last request gave up on the same outage: do not wait out one
                # request timeout per remaining request
                raise outage
            try:
                result = self.client._send_bulk(body)
                self._outage = None
                return result
            except ClickstreamError as err:
                if err.status not in RETRY_STATUSES:
                    raise
                error: Exception = err
                hint = err.retry_after
            except httpx.TransportError as err:
                if isinstance(err, _PERMANENT_TRANSPORT_ERRORS):
                    raise
                error, hint = err, None
            remaining = self._deadline(own_deadline) - time.monotonic()
            if remaining <= 0:
                self._outage = error
                raise error
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt) * random.uniform(0.5, 1.0)
            if hint is not None:
                delay = max(delay, min(hint, self.backoff_max_s))
            delay = min(delay, remaining)
            attempt += 1
            self.retries += 1
            log.warning(
                "clickstream bulk writer: %s: %s; retry %d in %.1f s", type(error).__name__, error, attempt, delay
            )
            time.sleep(delay)

    def _count(self, result: models.BulkResult, body: dict[str, list[dict[str, Any]]]) -> None:
        self.requests += 1
        self.registered += result.sessions.registered
        self.already_registered += result.sessions.already_registered
        self.stored += result.events.stored
        self.duplicates += result.events.duplicates
        self.over_limit += result.events.over_limit
        self.erased += result.sessions.erased + result.events.erased
        if result.rejected:
            self.rejected.extend(result.rejected)
            for rejection in result.rejected:
                log.warning(
                    "clickstream bulk writer: %s (session_id %r) rejected: %s",
                    rejection.item,
                    rejection.session_id,
                    rejection.error,
                )
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.exception("clickstream bulk writer: on_result callback failed")

    def _fail(self, chunk: list[_Item], err: BaseException) -> None:
        body: dict[str, list[dict[str, Any]]] = {
            "sessions": [item.body for item in chunk if item.is_session],
            "events": [item.body for item in chunk if not item.is_session],
        }
        log.error("clickstream bulk writer: %d item(s) not delivered: %s: %s", len(chunk), type(err).__name__, err)
        with self._cond:
            self.undelivered.append(body)
            self.errors.append(err)
