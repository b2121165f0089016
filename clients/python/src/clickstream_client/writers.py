"""Buffered writers for collectors: :class:`BulkWriter` (a background thread) and
:class:`~clickstream_client.aio.AsyncBulkWriter` (an asyncio task, in :mod:`clickstream_client.aio`).
Both buffer sessions and events and send them with ``POST /clickstream/bulk``, gzip-compressed.

Sending: when ``max_items`` items are buffered (sessions and events count together), when the oldest is
``max_age_s`` old, on ``flush()`` and on ``close()`` (also at the end of a ``with`` / ``async with`` block).
Items go out in the order they were added, at most ``max_items`` per request, sessions before events within a
request (events may arrive before their session anyway).

Delivery: a request that fails with 502, 503, 504 or a transport error (connection refused, reset, timeout) is
sent again after an exponential backoff with jitter (at least the server's ``Retry-After``), until
``max_retry_s`` have passed since its first attempt. That is safe because every write is idempotent: a session
registered again with the same content is ``already_registered``, an event with a known ``event_id`` is a
duplicate. A 413 splits the request in halves (down to single items); other 4xx are not retried. Requests that
could not be delivered are kept in ``undelivered`` (with their error in ``errors``) and ``flush()`` / ``close()``
raise :class:`~clickstream_client.BulkDeliveryError` for them (each failure once).

Items rejected one by one in a 200 answer (invalid field, conflicting re-registration, ...) are rejected for
good: they are listed in ``rejected``, logged at WARNING, and given to ``on_rejected(rejection, item)`` with
the item as it was sent.

Back-pressure: ``add_*`` wait while ``max_buffer_items`` items are buffered (for example while a request is being
retried), or raise ``TimeoutError`` after their ``timeout``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from clickstream_client.errors import BulkDeliveryError, ClickstreamError, TooLargeError
from clickstream_client.routes import as_json

if TYPE_CHECKING:
    from clickstream_client.client import ClickstreamClient

__all__ = ["RETRY_STATUSES", "BulkWriter", "WriterBase"]

log = logging.getLogger("clickstream_client.writers")

#: HTTP statuses the writers retry (the server or a proxy in front of it is briefly unavailable).
RETRY_STATUSES = frozenset({502, 503, 504})

#: Transport errors that are not worth retrying: the request is malformed on our side.
_PERMANENT_TRANSPORT_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)

Body = dict[str, list[dict[str, Any]]]


class Buffered(NamedTuple):
    seq: int
    added: float  # time.monotonic() when added
    is_session: bool
    body: dict[str, Any]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def request_body_of(chunk: list[Buffered]) -> Body:
    return {
        "sessions": [item.body for item in chunk if item.is_session],
        "events": [item.body for item in chunk if not item.is_session],
    }


class WriterBase:
    """Settings, totals, item preparation and result counting of :class:`BulkWriter` and
    :class:`~clickstream_client.AsyncBulkWriter` (no I/O, no waiting here; not for use on its own)."""

    def __init__(
        self,
        client: Any,
        *,
        max_items: int = 1000,
        max_age_s: float = 1.0,
        max_retry_s: float = 300.0,
        max_buffer_items: int | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        compress: bool = True,
        on_result: Callable[[Any], Any] | None = None,
        on_rejected: Callable[[Any, dict[str, Any]], Any] | None = None,
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
        self.compress = compress
        self.on_result = on_result
        self.on_rejected = on_rejected
        self.stamp_created_at = stamp_created_at
        self.close_client = close_client

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
        self.rejected: list[Any] = []
        #: bulk requests answered 200, and requests sent again after a retryable failure
        self.requests = 0
        self.retries = 0
        #: request bodies that could not be delivered, and the error of each
        self.undelivered: list[Body] = []
        self.errors: list[BaseException] = []

        self._buffer: deque[Buffered] = deque()
        self._seq = 0  # seq of the last item added
        self._done_seq = 0  # every item with seq <= this was delivered or given up on
        self._flush_upto = 0  # deliver every item with seq <= this now
        self._inflight = 0
        self._closing = False
        self._closed = False
        self._close_deadline: float | None = None
        self._reported = 0  # failures already raised by flush()/close()
        self._outage: Exception | None = None  # the retryable error the last request gave up on

    @property
    def pending(self) -> int:
        """Items buffered or being sent."""
        return len(self._buffer) + self._inflight

    def _prepare(self, item: Any) -> dict[str, Any]:
        body = as_json(item)
        if self.stamp_created_at and body.get("created_at") is None:
            body["created_at"] = _now_ms()
        return body

    def _items(self, session: Any | None, session_id: str | None, events: Iterable[Any]) -> list[tuple[bool, dict]]:
        if session is not None:
            return [(True, self._prepare(session))]
        items = []
        for event in events:
            body = self._prepare(event)
            body["session_id"] = session_id
            items.append((False, body))
        return items

    def _ready(self) -> float | None:
        """0 when a request should go now, else the seconds until the oldest item is due (None: nothing
        buffered)."""
        if not self._buffer:
            return None
        if len(self._buffer) >= self.max_items or self._closing or self._flush_upto >= self._buffer[0].seq:
            return 0.0
        return max(0.0, self.max_age_s - (time.monotonic() - self._buffer[0].added))

    def _take(self) -> list[Buffered]:
        count = min(self.max_items, len(self._buffer))
        chunk = [self._buffer.popleft() for _ in range(count)]
        self._inflight = count
        return chunk

    def _deadline(self, own: float) -> float:
        close = self._close_deadline
        return own if close is None else min(own, close)

    def _retry_delay(self, error: Exception, attempt: int, own_deadline: float) -> float | None:
        """Seconds to wait before sending again after ``error``, or None: raise it (not retryable, or out of
        time)."""
        if isinstance(error, ClickstreamError):
            if error.status not in RETRY_STATUSES:
                return None
            hint = error.retry_after
        elif isinstance(error, httpx.TransportError) and not isinstance(error, _PERMANENT_TRANSPORT_ERRORS):
            hint = None
        else:
            return None
        remaining = self._deadline(own_deadline) - time.monotonic()
        if remaining <= 0:
            self._outage = error
            return None
        delay = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt) * random.uniform(0.5, 1.0)
        if hint is not None:
            delay = max(delay, min(hint, self.backoff_max_s))
        self.retries += 1
        log.warning(
            "clickstream bulk writer: %s: %s; retry %d in %.1f s", type(error).__name__, error, attempt + 1, delay
        )
        return min(delay, remaining)

    def _out_of_time(self) -> Exception | None:
        """Closing, out of time, and the last request gave up on an outage: that error (do not wait out one
        request timeout per remaining request)."""
        outage = self._outage
        if outage is not None and self._close_deadline is not None and time.monotonic() >= self._close_deadline:
            return outage
        return None

    def _count(self, data: dict[str, Any], body: Body) -> None:
        self.requests += 1
        sessions, events = data.get("sessions") or {}, data.get("events") or {}
        self.registered += sessions.get("registered", 0)
        self.already_registered += sessions.get("already_registered", 0)
        self.stored += events.get("stored", 0)
        self.duplicates += events.get("duplicates", 0)
        self.over_limit += events.get("over_limit", 0)
        self.erased += sessions.get("erased", 0) + events.get("erased", 0)
        parse = self.client.parse_answer
        for raw in data.get("rejected") or ():
            rejection = parse("BulkRejection", raw)
            self.rejected.append(rejection)
            log.warning(
                "clickstream bulk writer: %s (session_id %r) rejected: %s",
                raw.get("item"),
                raw.get("session_id"),
                raw.get("error"),
            )
            if self.on_rejected is not None:
                try:
                    self.on_rejected(rejection, _sent_item(body, str(raw.get("item", ""))))
                except Exception:
                    log.exception("clickstream bulk writer: on_rejected callback failed")
        if self.on_result is not None:
            try:
                self.on_result(parse("BulkResult", data))
            except Exception:
                log.exception("clickstream bulk writer: on_result callback failed")

    def _fail(self, chunk: list[Buffered], err: BaseException) -> None:
        log.error("clickstream bulk writer: %d item(s) not delivered: %s: %s", len(chunk), type(err).__name__, err)
        self.undelivered.append(request_body_of(chunk))
        self.errors.append(err)

    def _new_failures(self) -> BulkDeliveryError | None:
        new = len(self.undelivered) - self._reported
        if new <= 0:
            return None
        self._reported = len(self.undelivered)
        return BulkDeliveryError(self.undelivered[-new:], self.errors[-new:])


def _sent_item(body: Body, item: str) -> dict[str, Any]:
    """The item ``sessions[3]`` / ``events[0]`` of a request body (empty if the server named another)."""
    name, _, rest = item.partition("[")
    try:
        return body[name][int(rest.rstrip("]"))]
    except (KeyError, ValueError, IndexError):
        return {}


# ---------------------------------------------------------------------------------------------- threads


class BulkWriter(WriterBase):
    """Buffers sessions and events and sends them with ``POST /clickstream/bulk`` from a background thread
    (see the module's text for when and how). ``add_*`` are thread-safe.

    :param client: the :class:`~clickstream_client.ClickstreamClient` to send with.
    :param max_items: items per request (at most the server's ``[clickstream] max_bulk_items``, 1000).
    :param max_age_s: send when the oldest buffered item is this old.
    :param max_retry_s: give up on a request after retrying it this long (also about the longest
        :meth:`close` waits for the rest, plus one request timeout).
    :param max_buffer_items: ``add_*`` block while this many items wait (default ``2 * max_items``).
    :param backoff_initial_s: first retry delay; it doubles on each retry.
    :param backoff_max_s: the longest retry delay.
    :param compress: gzip request bodies (``Content-Encoding: gzip``; default on).
    :param on_result: called with every bulk answer, in the writer's thread (so it must not call ``add_*``,
        which could wait for that thread).
    :param on_rejected: called with each item the server rejected for good (the rejection, and the item as
        sent), in the writer's thread.
    :param stamp_created_at: give items without ``created_at`` the client's clock time when they are added
        (milliseconds), so their time does not include how long they waited in the buffer or in retries.
    :param close_client: also close ``client`` in :meth:`close`.
    """

    def __init__(self, client: ClickstreamClient, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clickstream-bulk-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ adding

    def add_session(self, session: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Buffer a session (as for ``register_session``); wait up to ``timeout`` s for room.

        :raises TimeoutError: no room within ``timeout``.
        """
        self._add(self._items(session, None, ()), timeout)

    def add_event(self, session_id: str, event: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Buffer one event of ``session_id``; see :meth:`add_events`."""
        self._add(self._items(None, session_id, [event]), timeout)

    def add_events(self, session_id: str, events: Iterable[Mapping[str, Any]], *, timeout: float | None = None) -> None:
        """Buffer events of a session (registered or not yet), as for ``push_events``.

        :raises TimeoutError: no room within ``timeout`` (the events before the one that did not fit are
            buffered).
        """
        self._add(self._items(None, session_id, events), timeout)

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
                self._buffer.append(Buffered(self._seq, time.monotonic(), is_session, body))
                if len(self._buffer) in (1, self.max_items):  # what the sender waits for (it re-checks after a send)
                    self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Items buffered or being sent."""
        with self._cond:
            return len(self._buffer) + self._inflight

    # ------------------------------------------------------------------------------------ flushing

    def flush(self, timeout: float | None = None) -> None:
        """Send everything added so far and wait until it was delivered or given up on.

        :raises TimeoutError: not done within ``timeout``.
        :raises BulkDeliveryError: items could not be delivered (raised once per failure).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            while self._done_seq < target and self._thread.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"flush not done after {timeout} s ({self.pending} items pending)")
                self._cond.wait(remaining)
        self._raise_failures()

    def close(self) -> None:
        """Send what is left, stop the writer's thread (and close the client if ``close_client``).

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
            failure = self._new_failures()
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    wait = self._ready()
                    if wait == 0:
                        break
                    if wait is None and self._closing:
                        return
                    self._cond.wait(wait)
                chunk = self._take()
                self._cond.notify_all()  # room for blocked add_*
            try:
                self._deliver(chunk, time.monotonic() + self.max_retry_s)
            except BaseException as err:
                log.exception("clickstream bulk writer: unexpected error")
                with self._cond:
                    self._fail(chunk, err)
            finally:
                with self._cond:
                    self._done_seq = chunk[-1].seq
                    self._inflight = 0
                    self._cond.notify_all()

    def _deliver(self, chunk: list[Buffered], deadline: float) -> None:
        body = request_body_of(chunk)
        try:
            data = self._send_with_retry(body, deadline)
        except TooLargeError as err:
            if len(chunk) == 1:
                with self._cond:
                    self._fail(chunk, err)
                return
            log.info("clickstream bulk writer: %d items are too large for one request; splitting", len(chunk))
            half = len(chunk) // 2
            self._deliver(chunk[:half], deadline)
            self._deliver(chunk[half:], deadline)
            return
        except (ClickstreamError, httpx.HTTPError) as err:
            with self._cond:
                self._fail(chunk, err)
            return
        self._count(data, body)

    def _send_with_retry(self, body: Body, own_deadline: float) -> dict[str, Any]:
        attempt = 0
        while True:
            outage = self._out_of_time()
            if outage is not None:
                raise outage
            try:
                data = self.client.send_bulk(body, compress=self.compress)
                self._outage = None
                return data
            except (ClickstreamError, httpx.HTTPError) as err:
                delay = self._retry_delay(err, attempt, own_deadline)
                if delay is None:
                    raise
            attempt += 1
            time.sleep(delay)
