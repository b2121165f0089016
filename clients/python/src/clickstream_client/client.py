"""The synchronous client: :class:`ClickstreamClient`, one method a route of the clickstream API."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from clickstream_client import routes
from clickstream_client._common import GZIP_LEVEL, ClientBase, page_parts
from clickstream_client.errors import ClickstreamError

if TYPE_CHECKING:
    from clickstream_client.types import (
        BatchList,
        BatchPositions,
        BatchPropensities,
        BatchSession,
        BatchSessionsPage,
        BatchSummary,
        BulkResult,
        EraseResult,
        HitsPage,
        IrrelevantResult,
        JudgmentsPage,
        MetricsSeries,
        PushEventsResult,
        QueryAnalytics,
        RegisterResult,
        ReleaseResult,
        SearchesPage,
        SessionOut,
        UseForImprovementResult,
    )
    from clickstream_client.writers import BulkWriter

Item = Mapping[str, Any]


class ClickstreamClient(ClientBase):
    """A client of the clickstream REST API served by Airflow's API server.

    Thread-safe: one client may be shared by many threads (it holds one ``httpx.Client`` connection pool).
    Answers are the JSON objects the server sent (``dict``; their shapes are the ``TypedDict``s of
    :mod:`clickstream_client.types`). A non-2xx answer raises :class:`~clickstream_client.ClickstreamError`
    (or its subclass for the status); network failures propagate as ``httpx.TransportError``.

    :param base_url: the Airflow API server's root, e.g. ``http://localhost:8080`` (with the path of
        ``[api] base_url``, if it has one); routes are under ``<base_url>/clickstream``.
    :param token: a JWT to send as ``Authorization: Bearer``.
    :param username: user name of an Airflow user; with ``password``, the client gets its token from
        ``POST <base_url>/auth/token`` on first use and gets a new one when an answer is 401 (expired).
    :param password: that user's password.
    :param timeout: seconds for each request (connect, read, write, pool).
    :param compress: gzip the bodies of write requests (``Content-Encoding: gzip``); the writers do by default.
    :param compress_level: zlib level (1 fastest .. 9 smallest).
    :param transport: an ``httpx`` transport (for tests, proxies, retries at the connection level).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        compress: bool = False,
        compress_level: int = GZIP_LEVEL,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            token=token,
            username=username,
            password=password,
            compress=compress,
            compress_level=compress_level,
        )
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
        response = self._http.post("/auth/token", json=self._credentials())
        if response.status_code not in (200, 201):
            raise ClickstreamError.from_response(response)
        self._token = response.json()["access_token"]
        return self._token

    def _auth_header(self) -> tuple[dict[str, str], str | None]:
        token = self._token
        if token is None and self._username is not None:
            with self._auth_lock:
                if self._token is None:
                    self.login()
                token = self._token
        return ({"Authorization": f"Bearer {token}"} if token else {}), token

    # ------------------------------------------------------------------------------------ requests

    def request(self, call: routes.Call, *, compress: bool | None = None) -> httpx.Response:
        """Send ``call``; renew the token once on a 401.

        :param compress: gzip the body (default: the client's ``compress``).
        :raises ClickstreamError: a non-2xx answer.
        :raises httpx.TransportError: the server could not be reached or the connection failed.
        """
        url, content, headers = self._prepare(call, compress)
        auth, sent_token = self._auth_header()
        response = self._http.request(
            call.method, url, content=content, params=call.params, headers={**headers, **auth}
        )
        if response.status_code == 401 and self._username is not None:
            with self._auth_lock:
                if self._token == sent_token:  # not renewed by another thread meanwhile
                    self.login()
            auth, _ = self._auth_header()
            response = self._http.request(
                call.method, url, content=content, params=call.params, headers={**headers, **auth}
            )
        if not response.is_success:
            raise ClickstreamError.from_response(response)
        return response

    def call(self, call: routes.Call, *, compress: bool | None = None) -> Any:
        """Send ``call`` and return its answer (through :meth:`parse_answer`)."""
        return self.parse_answer(call.answer, self.request(call, compress=compress).json())

    # ------------------------------------------------------------------------------------ sessions

    def register_session(self, session: Item) -> RegisterResult:
        """Register a session (``POST /clickstream/session``): ``session_id``, ``search_query``,
        ``search_results``, ..., ``created_at`` (ms; the server's time of receipt when omitted).

        :returns: its batch and number; ``status`` ``registered`` or ``already_registered`` (a safe retry).
        :raises ConflictError: the ``session_id`` is registered with other content.
        :raises InvalidInputError: a field is invalid (``detail`` names it).
        """
        return self.call(routes.register_session(session))

    def get_session(self, session_id: str, events_limit: int | None = None) -> SessionOut:
        """A session with its events, earliest first (``GET /clickstream/session``).

        :raises NotFoundError: unknown session.
        """
        return self.call(routes.get_session(session_id, events_limit))

    def push_events(self, session_id: str, events: Iterable[Item]) -> PushEventsResult:
        """Store events of a session, registered or not yet (``POST /clickstream/session/events``); an
        ``event_id`` already stored counts in ``duplicates``."""
        return self.call(routes.push_events(session_id, events))

    def mark_irrelevant(self, session_id: str) -> IrrelevantResult:
        """Mark a session irrelevant (``POST /clickstream/session/irrelevant``); idempotent.

        :raises NotFoundError: unknown session.
        """
        return self.call(routes.mark_irrelevant(session_id))

    def use_for_improvement(self, session_id: str) -> UseForImprovementResult:
        """Queue a session for model improvement (``POST /clickstream/session/use-for-improvement``):
        ``status`` ``marked``, ``already_marked`` or ``skipped`` (with its ``reason``).

        :raises NotFoundError: unknown session.
        """
        return self.call(routes.use_for_improvement(session_id))

    # ------------------------------------------------------------------------------------ batches

    def get_batch_sessions(
        self, batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100
    ) -> BatchSessionsPage:
        """One page of a batch's sessions numbered above ``after_number`` (``GET /clickstream/batch/sessions``);
        pass the previous page's ``last_number`` for the next one.

        :raises NotFoundError: unknown batch.
        """
        return self.call(routes.get_batch_sessions(batch_id, after_number, limit, events_limit))

    def iter_batch_sessions(
        self, batch_id: str, page_size: int = 1000, events_limit: int = 100, after_number: int = 0
    ) -> Iterator[BatchSession]:
        """Every session of a batch numbered above ``after_number``, in order, one page request at a time (keyset
        ``after_number = last_number`` until a page is empty: each session once, even while sessions are added)."""
        after = after_number
        while True:
            page = self.get_batch_sessions(batch_id, after_number=after, limit=page_size, events_limit=events_limit)
            sessions, last = page_parts(page)
            if not sessions or last is None:
                return
            yield from sessions
            after = last

    def release_batch(self, release_id: str) -> ReleaseResult:
        """Release the collecting batch under ``release_id`` (``POST /clickstream/batch/release``); retrying with
        the same ``release_id`` answers the same result.

        :raises NotFoundError: no collecting batch and an unknown ``release_id``.
        """
        return self.call(routes.release_batch(release_id))

    def list_batches_page(self, limit: int = 20, before: str | None = None, release_id: str | None = None) -> BatchList:
        """Batches newest first, with counts, metrics and dataset (``GET /clickstream/batches``); ``before``: the
        previous page's ``next_before``."""
        return self.call(routes.list_batches_page(limit, before, release_id))

    def get_batch_summary(self, batch_id: str) -> BatchSummary:
        """One batch (``GET /clickstream/batches/{batch_id}``).

        :raises NotFoundError: unknown batch.
        """
        return self.call(routes.get_batch_summary(batch_id))

    def batch_positions(self, batch_id: str, max_position: int = 20) -> BatchPositions:
        """Click-through rate by result position (``GET /clickstream/batches/{batch_id}/positions``)."""
        return self.call(routes.batch_positions(batch_id, max_position))

    def metrics_series(self, limit: int = 100) -> MetricsSeries:
        """The metrics of the last ``limit`` released batches, oldest first (``GET /clickstream/metrics``)."""
        return self.call(routes.metrics_series(limit))

    # ------------------------------------------------------------------------------------ search analytics

    def top_searches(self, *args: Any, **kwargs: Any) -> SearchesPage:
        """Top searches of released batches (``GET /clickstream/analytics/searches``); arguments as
        :func:`clickstream_client.routes.top_searches`."""
        return self.call(routes.top_searches(*args, **kwargs))

    def searches_without_results(self, *args: Any, **kwargs: Any) -> SearchesPage:
        """Searches with sessions without results (``GET /clickstream/analytics/searches/no-results``)."""
        return self.call(routes.searches_without_results(*args, **kwargs))

    def searches_without_clicks(self, *args: Any, **kwargs: Any) -> SearchesPage:
        """Searches with sessions without a click (``GET /clickstream/analytics/searches/no-clicks``)."""
        return self.call(routes.searches_without_clicks(*args, **kwargs))

    def top_hits(self, *args: Any, **kwargs: Any) -> HitsPage:
        """Top hits (objects) of released batches (``GET /clickstream/analytics/hits``)."""
        return self.call(routes.top_hits(*args, **kwargs))

    def query_analytics(self, query: str, **kwargs: Any) -> QueryAnalytics:
        """One query over released batches (``GET /clickstream/analytics/queries/{query}``)."""
        return self.call(routes.query_analytics(query, **kwargs))

    # ------------------------------------------------------------------------------------ labels

    def batch_propensities(self, batch_id: str) -> BatchPropensities:
        """A released batch's examination curve, θ per position beside the raw CTR, and the fit's report
        (``GET /clickstream/batches/{batch_id}/propensities``); 409 when no labels are kept for it (yet)."""
        return self.call(routes.batch_propensities(batch_id))

    def batch_judgments(
        self, batch_id: str, query: str | None = None, limit: int = 100, after: str | None = None
    ) -> JudgmentsPage:
        """A keyset page of a released batch's judgments, raw CTR vs debiased γ per (query, object)
        (``GET /clickstream/batches/{batch_id}/judgments``); pass ``next_after`` as ``after`` for the next."""
        return self.call(routes.batch_judgments(batch_id, query, limit, after))

    # ------------------------------------------------------------------------------------ admin

    def erase_user(self, user_id: str) -> EraseResult:
        """Erase every session, event and improvement mark of a user (``POST /clickstream/user/erase``);
        needs an administrator."""
        return self.call(routes.erase_user(user_id))

    # ------------------------------------------------------------------------------------ bulk

    def bulk(
        self, sessions: Iterable[Item] = (), events: Iterable[Item] = (), *, compress: bool | None = None
    ) -> BulkResult:
        """Register sessions and store events in one request (``POST /clickstream/bulk``); each item is validated
        and counted on its own (invalid ones are listed in ``rejected``); retrying changes nothing.

        :param events: objects as for :meth:`push_events` plus their ``session_id``.
        :param compress: gzip the body (default: the client's ``compress``).
        :raises InvalidInputError: more than ``[clickstream] max_bulk_items`` items, or not the bulk shape.
        :raises TooLargeError: the body (decompressed) is larger than ``[clickstream] max_request_bytes``.
        """
        return self.call(routes.bulk(sessions, events), compress=compress)

    def send_bulk(self, body: dict[str, list[dict[str, Any]]], *, compress: bool | None = None) -> dict[str, Any]:
        """``POST /clickstream/bulk`` of a ready body (``{"sessions": [...], "events": [...]}``); the answer's
        decoded JSON (not passed through :meth:`parse_answer`). What the writers send with."""
        return self.request(routes.Call("POST", "/bulk", "BulkResult", body=body), compress=compress).json()

    def writer(self, **kwargs: Any) -> BulkWriter:
        """A :class:`~clickstream_client.BulkWriter` sending through this client; ``kwargs`` as for it."""
        from clickstream_client.writers import BulkWriter

        return BulkWriter(self, **kwargs)
