"""The asyncio client and writer: :class:`AsyncClickstreamClient`, the methods of
:class:`~clickstream_client.ClickstreamClient` as coroutines (the same names, arguments and answers), and
:class:`AsyncBulkWriter`, the asyncio :class:`~clickstream_client.BulkWriter` (loaded on first use of either
name: ``import clickstream_client`` does not import asyncio)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from clickstream_client import routes
from clickstream_client._common import GZIP_LEVEL, ClientBase, page_parts
from clickstream_client.errors import ClickstreamError, TooLargeError
from clickstream_client.writers import Body, Buffered, WriterBase, log, request_body_of

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

Item = Mapping[str, Any]


class AsyncClickstreamClient(ClientBase):
    """An asyncio client of the clickstream REST API served by Airflow's API server.

    One client may be shared by many tasks of one event loop (it holds one ``httpx.AsyncClient`` pool); use it
    as ``async with AsyncClickstreamClient(...) as client``, or call :meth:`aclose`.
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            token=token,
            username=username,
            password=password,
            compress=compress,
            compress_level=compress_level,
        )
        self._auth_lock: asyncio.Lock | None = None  # made in the loop (3.9 binds a lock to a loop when made)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    # ------------------------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClickstreamClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _lock(self) -> asyncio.Lock:
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        return self._auth_lock

    # ------------------------------------------------------------------------------------ auth

    async def login(self) -> str:
        """Get a new token from ``POST /auth/token`` with the client's credentials, use it and return it.

        :raises AuthError: wrong credentials (401/403).
        :raises ValueError: the client has no credentials.
        """
        response = await self._http.post("/auth/token", json=self._credentials())
        if response.status_code not in (200, 201):
            raise ClickstreamError.from_response(response)
        self._token = response.json()["access_token"]
        return self._token

    async def _auth_header(self) -> tuple[dict[str, str], str | None]:
        token = self._token
        if token is None and self._username is not None:
            async with self._lock():
                if self._token is None:
                    await self.login()
                token = self._token
        return ({"Authorization": f"Bearer {token}"} if token else {}), token

    # ------------------------------------------------------------------------------------ requests

    async def request(self, call: routes.Call, *, compress: bool | None = None) -> httpx.Response:
        """Send ``call``; renew the token once on a 401.

        :param compress: gzip the body (default: the client's ``compress``).
        :raises ClickstreamError: a non-2xx answer.
        :raises httpx.TransportError: the server could not be reached or the connection failed.
        """
        url, content, headers = self._prepare(call, compress)
        auth, sent_token = await self._auth_header()
        response = await self._http.request(
            call.method, url, content=content, params=call.params, headers={**headers, **auth}
        )
        if response.status_code == 401 and self._username is not None:
            async with self._lock():
                if self._token == sent_token:  # not renewed by another task meanwhile
                    await self.login()
            auth, _ = await self._auth_header()
            response = await self._http.request(
                call.method, url, content=content, params=call.params, headers={**headers, **auth}
            )
        if not response.is_success:
            raise ClickstreamError.from_response(response)
        return response

    async def call(self, call: routes.Call, *, compress: bool | None = None) -> Any:
        """Send ``call`` and return its answer (through :meth:`parse_answer`)."""
        response = await self.request(call, compress=compress)
        return self.parse_answer(call.answer, response.json())

    # ------------------------------------------------------------------------------------ sessions

    async def register_session(self, session: Item) -> RegisterResult:
        """Register a session (``POST /clickstream/session``): ``session_id``, ``search_query``,
        ``search_results``, ..., ``created_at`` (ms; the server's time of receipt when omitted).

        :returns: its batch and number; ``status`` ``registered`` or ``already_registered`` (a safe retry).
        :raises ConflictError: the ``session_id`` is registered with other content.
        :raises InvalidInputError: a field is invalid (``detail`` names it).
        """
        return await self.call(routes.register_session(session))

    async def get_session(self, session_id: str, events_limit: int | None = None) -> SessionOut:
        """A session with its events, earliest first (``GET /clickstream/session``).

        :raises NotFoundError: unknown session.
        """
        return await self.call(routes.get_session(session_id, events_limit))

    async def push_events(self, session_id: str, events: Iterable[Item]) -> PushEventsResult:
        """Store events of a session, registered or not yet (``POST /clickstream/session/events``); an
        ``event_id`` already stored counts in ``duplicates``."""
        return await self.call(routes.push_events(session_id, events))

    async def mark_irrelevant(self, session_id: str) -> IrrelevantResult:
        """Mark a session irrelevant (``POST /clickstream/session/irrelevant``); idempotent.

        :raises NotFoundError: unknown session.
        """
        return await self.call(routes.mark_irrelevant(session_id))

    async def use_for_improvement(self, session_id: str) -> UseForImprovementResult:
        """Queue a session for model improvement (``POST /clickstream/session/use-for-improvement``):
        ``status`` ``marked``, ``already_marked`` or ``skipped`` (with its ``reason``).

        :raises NotFoundError: unknown session.
        """
        return await self.call(routes.use_for_improvement(session_id))

    # ------------------------------------------------------------------------------------ batches

    async def get_batch_sessions(
        self, batch_id: str, after_number: int = 0, limit: int = 10, events_limit: int = 100
    ) -> BatchSessionsPage:
        """One page of a batch's sessions numbered above ``after_number`` (``GET /clickstream/batch/sessions``);
        pass the previous page's ``last_number`` for the next one.

        :raises NotFoundError: unknown batch.
        """
        return await self.call(routes.get_batch_sessions(batch_id, after_number, limit, events_limit))

    async def iter_batch_sessions(
        self, batch_id: str, page_size: int = 1000, events_limit: int = 100, after_number: int = 0
    ) -> AsyncIterator[BatchSession]:
        """Every session of a batch numbered above ``after_number``, in order, one page request at a time (keyset
        ``after_number = last_number`` until a page is empty: each session once, even while sessions are added)."""
        after = after_number
        while True:
            page = await self.get_batch_sessions(
                batch_id, after_number=after, limit=page_size, events_limit=events_limit
            )
            sessions, last = page_parts(page)
            if not sessions or last is None:
                return
            for session in sessions:
                yield session
            after = last

    async def release_batch(self, release_id: str) -> ReleaseResult:
        """Release the collecting batch under ``release_id`` (``POST /clickstream/batch/release``); retrying with
        the same ``release_id`` answers the same result.

        :raises NotFoundError: no collecting batch and an unknown ``release_id``.
        """
        return await self.call(routes.release_batch(release_id))

    async def list_batches_page(
        self, limit: int = 20, before: str | None = None, release_id: str | None = None
    ) -> BatchList:
        """Batches newest first, with counts, metrics and dataset (``GET /clickstream/batches``); ``before``: the
        previous page's ``next_before``."""
        return await self.call(routes.list_batches_page(limit, before, release_id))

    async def get_batch_summary(self, batch_id: str) -> BatchSummary:
        """One batch (``GET /clickstream/batches/{batch_id}``).

        :raises NotFoundError: unknown batch.
        """
        return await self.call(routes.get_batch_summary(batch_id))

    async def batch_positions(self, batch_id: str, max_position: int = 20) -> BatchPositions:
        """Click-through rate by result position (``GET /clickstream/batches/{batch_id}/positions``)."""
        return await self.call(routes.batch_positions(batch_id, max_position))

    async def metrics_series(self, limit: int = 100) -> MetricsSeries:
        """The metrics of the last ``limit`` released batches, oldest first (``GET /clickstream/metrics``)."""
        return await self.call(routes.metrics_series(limit))

    # ------------------------------------------------------------------------------------ search analytics

    async def top_searches(self, *args: Any, **kwargs: Any) -> SearchesPage:
        """Top searches of released batches (``GET /clickstream/analytics/searches``); arguments as
        :func:`clickstream_client.routes.top_searches`."""
        return await self.call(routes.top_searches(*args, **kwargs))

    async def searches_without_results(self, *args: Any, **kwargs: Any) -> SearchesPage:
        """Searches with sessions without results (``GET /clickstream/analytics/searches/no-results``)."""
        return await self.call(routes.searches_without_results(*args, **kwargs))

    async def searches_without_clicks(self, *args: Any, **kwargs: Any) -> SearchesPage:
        """Searches with sessions without a click (``GET /clickstream/analytics/searches/no-clicks``)."""
        return await self.call(routes.searches_without_clicks(*args, **kwargs))

    async def top_hits(self, *args: Any, **kwargs: Any) -> HitsPage:
        """Top hits (objects) of released batches (``GET /clickstream/analytics/hits``)."""
        return await self.call(routes.top_hits(*args, **kwargs))

    async def query_analytics(self, query: str, **kwargs: Any) -> QueryAnalytics:
        """One query over released batches (``GET /clickstream/analytics/queries/{query}``)."""
        return await self.call(routes.query_analytics(query, **kwargs))

    # ------------------------------------------------------------------------------------ labels

    async def batch_propensities(self, batch_id: str) -> BatchPropensities:
        """A released batch's examination curve, θ per position beside the raw CTR, and the fit's report
        (``GET /clickstream/batches/{batch_id}/propensities``); 409 when no labels are kept for it (yet)."""
        return await self.call(routes.batch_propensities(batch_id))

    async def batch_judgments(
        self, batch_id: str, query: str | None = None, limit: int = 100, after: str | None = None
    ) -> JudgmentsPage:
        """A keyset page of a released batch's judgments, raw CTR vs debiased γ per (query, object)
        (``GET /clickstream/batches/{batch_id}/judgments``); pass ``next_after`` as ``after`` for the next."""
        return await self.call(routes.batch_judgments(batch_id, query, limit, after))

    # ------------------------------------------------------------------------------------ admin

    async def erase_user(self, user_id: str) -> EraseResult:
        """Erase every session, event and improvement mark of a user (``POST /clickstream/user/erase``);
        needs an administrator."""
        return await self.call(routes.erase_user(user_id))

    # ------------------------------------------------------------------------------------ bulk

    async def bulk(
        self, sessions: Iterable[Item] = (), events: Iterable[Item] = (), *, compress: bool | None = None
    ) -> BulkResult:
        """Register sessions and store events in one request (``POST /clickstream/bulk``); each item is validated
        and counted on its own (invalid ones are listed in ``rejected``); retrying changes nothing.

        :param events: objects as for :meth:`push_events` plus their ``session_id``.
        :param compress: gzip the body (default: the client's ``compress``).
        :raises InvalidInputError: more than ``[clickstream] max_bulk_items`` items, or not the bulk shape.
        :raises TooLargeError: the body (decompressed) is larger than ``[clickstream] max_request_bytes``.
        """
        return await self.call(routes.bulk(sessions, events), compress=compress)

    async def send_bulk(self, body: dict[str, list[dict[str, Any]]], *, compress: bool | None = None) -> dict[str, Any]:
        """``POST /clickstream/bulk`` of a ready body (``{"sessions": [...], "events": [...]}``); the answer's
        decoded JSON (not passed through :meth:`parse_answer`). What the writers send with."""
        response = await self.request(routes.Call("POST", "/bulk", "BulkResult", body=body), compress=compress)
        return response.json()

    def writer(self, **kwargs: Any) -> AsyncBulkWriter:
        """An :class:`~clickstream_client.AsyncBulkWriter` sending through this client; ``kwargs`` as for it."""

        return AsyncBulkWriter(self, **kwargs)


# ---------------------------------------------------------------------------------------------- the writer


class AsyncBulkWriter(WriterBase):
    """:class:`BulkWriter` for asyncio: the same arguments, totals and delivery, sent by a task of the running
    event loop (started by the first ``add_*``, or by ``async with``). ``add_*``, :meth:`flush` and
    :meth:`close` are coroutines; ``add_*`` wait for room while the buffer is full (back-pressure).

    :param client: the :class:`~clickstream_client.AsyncClickstreamClient` to send with (``close_client``:
        :meth:`close` also closes it). Other arguments as for :class:`BulkWriter`; the callbacks run in the
        event loop.
    """

    def __init__(self, client: AsyncClickstreamClient, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._cond: asyncio.Condition | None = None  # made in the loop (3.9 binds it to a loop when made)
        self._task: asyncio.Task[None] | None = None

    def _started(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._task = asyncio.ensure_future(self._run())
        return self._cond

    # ------------------------------------------------------------------------------------ adding

    async def add_session(self, session: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Buffer a session (as for ``register_session``); wait up to ``timeout`` s for room.

        :raises TimeoutError: no room within ``timeout``.
        """
        await self._add(self._items(session, None, ()), timeout)

    async def add_event(self, session_id: str, event: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Buffer one event of ``session_id``; see :meth:`add_events`."""
        await self._add(self._items(None, session_id, [event]), timeout)

    async def add_events(
        self, session_id: str, events: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> None:
        """Buffer events of a session (registered or not yet), as for ``push_events``.

        :raises TimeoutError: no room within ``timeout`` (the events before the one that did not fit are
            buffered).
        """
        await self._add(self._items(None, session_id, events), timeout)

    async def _add(self, items: list[tuple[bool, dict[str, Any]]], timeout: float | None) -> None:
        if self._closing:
            raise RuntimeError("the writer is closed")
        cond = self._started()
        before = len(self._buffer)
        if before + len(items) <= self.max_buffer_items:  # room: no lock, no wait (the common case)
            self._append(items)
            # wake the sender only when this changes what it waits for: the first item (its age clock) or
            # max_items reached; while it is sending it looks at the buffer again before it waits
            if before == 0 or before < self.max_items <= len(self._buffer):
                async with cond:
                    cond.notify_all()
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        async with cond:
            for item in items:
                while len(self._buffer) >= self.max_buffer_items and not self._closing:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"the writer's buffer stayed full ({len(self._buffer)} items) for {timeout} s"
                        )
                    try:
                        await asyncio.wait_for(cond.wait(), remaining)
                    except TimeoutError:
                        pass
                if self._closing:
                    raise RuntimeError("the writer is closed")
                self._append([item])
                if len(self._buffer) in (1, self.max_items):
                    cond.notify_all()

    def _append(self, items: list[tuple[bool, dict[str, Any]]]) -> None:
        now = time.monotonic()
        for is_session, body in items:
            self._seq += 1
            self._buffer.append(Buffered(self._seq, now, is_session, body))

    # ------------------------------------------------------------------------------------ flushing

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything added so far and wait until it was delivered or given up on.

        :raises TimeoutError: not done within ``timeout``.
        :raises BulkDeliveryError: items could not be delivered (raised once per failure).
        """
        cond = self._started()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with cond:
            target = self._seq
            self._flush_upto = max(self._flush_upto, target)
            cond.notify_all()
            while self._done_seq < target and self._task is not None and not self._task.done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"flush not done after {timeout} s ({self.pending} items pending)")
                try:
                    await asyncio.wait_for(cond.wait(), remaining)
                except TimeoutError:
                    pass
        self._raise_failures()

    async def close(self) -> None:
        """Send what is left, stop the writer's task (and close the client if ``close_client``).

        :raises BulkDeliveryError: items could not be delivered (in this call or before, not yet raised).
        """
        if not self._closed:
            self._closed = True
            if self._cond is not None:
                async with self._cond:
                    self._closing = True
                    self._close_deadline = time.monotonic() + self.max_retry_s
                    self._cond.notify_all()
            self._closing = True
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.close_client:
            await self.client.aclose()
        self._raise_failures()

    async def __aenter__(self) -> AsyncBulkWriter:
        self._started()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _raise_failures(self) -> None:
        failure = self._new_failures()
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------------------------ the task

    async def _run(self) -> None:
        cond = self._cond
        assert cond is not None
        while True:
            async with cond:
                while True:
                    wait = self._ready()
                    if wait == 0:
                        break
                    if wait is None and self._closing:
                        return
                    try:
                        await asyncio.wait_for(cond.wait(), wait)
                    except TimeoutError:
                        pass
                chunk = self._take()
                cond.notify_all()  # room for waiting add_*
            try:
                await self._deliver(chunk, time.monotonic() + self.max_retry_s)
            except Exception as err:
                log.exception("clickstream bulk writer: unexpected error")
                self._fail(chunk, err)
            finally:
                self._done_seq = chunk[-1].seq
                self._inflight = 0
                async with cond:
                    cond.notify_all()

    async def _deliver(self, chunk: list[Buffered], deadline: float) -> None:
        body = request_body_of(chunk)
        try:
            data = await self._send_with_retry(body, deadline)
        except TooLargeError as err:
            if len(chunk) == 1:
                self._fail(chunk, err)
                return
            log.info("clickstream bulk writer: %d items are too large for one request; splitting", len(chunk))
            half = len(chunk) // 2
            await self._deliver(chunk[:half], deadline)
            await self._deliver(chunk[half:], deadline)
            return
        except (ClickstreamError, httpx.HTTPError) as err:
            self._fail(chunk, err)
            return
        self._count(data, body)

    async def _send_with_retry(self, body: Body, own_deadline: float) -> dict[str, Any]:
        attempt = 0
        while True:
            outage = self._out_of_time()
            if outage is not None:
                raise outage
            try:
                data = await self.client.send_bulk(body, compress=self.compress)
                self._outage = None
                return data
            except (ClickstreamError, httpx.HTTPError) as err:
                delay = self._retry_delay(err, attempt, own_deadline)
                if delay is None:
                    raise
            attempt += 1
            await asyncio.sleep(delay)
