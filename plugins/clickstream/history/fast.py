"""The history import's fast path: a row decoded, checked and turned into the load's columns without pydantic.

The model fallback (:mod:`clickstream.history.checks`) validates rows with the live models
(:class:`clickstream.models.SessionIn`, :class:`~clickstream.models.EventIn`), which build about a dozen
pydantic objects per session row and would cost most of the import's time. This module gives the same
answer for the rows that are valid, at a fraction of the cost: msgspec decodes a JSON Lines line (or
converts a Parquet row) straight into typed structs and checks every field rule of the models while doing
so, in C; the load's columns, the JSON text and the content hash are then built from the structs.

The contract, which ``tests/history/test_fast.py`` checks against the live models on generated
valid and invalid rows: **this path accepts a row only if the models accept it, and then produces the
same values and the same content hash** (:func:`clickstream.store.rows.content_hash`). Whatever it does
not accept (invalid rows, but also valid rows in shapes it does not take: numbers as strings, a NUL
escape, non-finite floats, a lone surrogate...) returns ``None`` and goes through the models, so the
reasons of refused rows are exactly the models' messages.

The rules, as in :mod:`clickstream.models`: unknown fields are refused (``forbid_unknown_fields``); ids
and ``event_type`` have their length bounds (in characters); timestamps are integers from
:data:`~clickstream.models.MIN_MILLIS` (below: seconds, refused) to :data:`~clickstream.models.MAX_BIGINT`;
``sort_by.order`` is ``asc`` or ``desc``; ``rank`` is a finite number; free-form objects are JSON objects;
text must be storable (no NUL character, no lone surrogate: the JSON decoder refuses a lone surrogate,
encoding refuses one in a Python string, and the text of every stored column is checked for NUL); a
history row's ``created_at`` is required. The size limits of live ingestion (``max_results``,
``max_json_bytes``, and ``max_events_per_session`` for a row's events) are not rules of the models: they are
applied after this path or the models, to the columns either gives
(:func:`clickstream.history.checks.limit_refusal`). The pieces shared with live ingestion's fast path (the
structs of a search result and a sort, the field bounds, the JSON text, the content hash) are in
:mod:`clickstream.store.fastrows`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from clickstream.store.fastrows import (
    EventType,
    LiveSession,
    Millis,
    SessionId,
    ShortId,
    all_finite,
    content_hash,
    json_text,
    plain_text,
)


class _Event(Struct, forbid_unknown_fields=True, kw_only=True):
    """An event of a history file (:class:`clickstream.models.EventIn`, ``created_at`` required)."""

    event_id: ShortId
    object_id: ShortId
    event_type: EventType = "click"
    created_at: Millis
    meta: dict[str, Any] | None = None


class _EventRow(_Event, forbid_unknown_fields=True, kw_only=True):
    """An event row: the event plus its ``session_id``."""

    session_id: SessionId


class _SessionRow(LiveSession, forbid_unknown_fields=True, kw_only=True):
    """A session row: a registration body (:class:`~clickstream.store.fastrows.LiveSession`, same fields in the
    same order) whose ``created_at`` is required, with its events."""

    created_at: Millis
    events: list[_Event] = []


_DECODE_SESSION = msgspec.json.Decoder(_SessionRow).decode
_DECODE_EVENT = msgspec.json.Decoder(_EventRow).decode
_ENCODE = msgspec.json.Encoder().encode  # field order of the models, as the store's JSON columns

#: A session's columns for the load: the stored columns (:data:`clickstream.store.rows.SESSION_COLUMNS`, JSON
#: columns as text), then ``events``: the row's events as one JSON array (None when it has none, or when they
#: are given as :data:`EventColumns` instead: see ``embed_events``).
SessionColumns = tuple[Any, ...]
#: An event's columns (:data:`clickstream.store.rows.EVENT_COLUMNS`), ``meta`` as JSON text.
EventColumns = tuple[Any, ...]


class FastSession:
    """A valid session row: its columns (:data:`SessionColumns`), how many events it has, and those of them
    that are not in the columns as a JSON array as :data:`EventColumns`. (The model fallback of
    :func:`clickstream.history.checks.check_row` gives its rows in this shape too.)"""

    __slots__ = ("columns", "event_columns", "events")

    def __init__(self, columns: SessionColumns, events: int, event_columns: list[EventColumns]):
        self.columns = columns
        self.events = events
        self.event_columns = event_columns

    @property
    def embedded(self) -> int:
        """How many of its events are in its columns, as one JSON array."""
        return self.events - len(self.event_columns)


class FastEvent:
    """A valid event row: its ``session_id`` and its columns (:data:`EventColumns`)."""

    __slots__ = ("columns", "session_id")

    def __init__(self, session_id: str, columns: EventColumns):
        self.session_id = session_id
        self.columns = columns


def is_event_line(raw: bytes) -> bool:
    """Whether a JSON Lines line is to be tried as an event row (a guess: a wrong one only costs the slow
    path, since the structs refuse unknown fields)."""
    return b'"event_id"' in raw and b'"search_results"' not in raw and b'"events"' not in raw


def decode_line(raw: bytes, *, embed_events: bool = True) -> FastSession | FastEvent | None:
    """A JSON Lines line as a valid row, or None: not valid, or not a shape this path takes.

    :param embed_events: a session row's events go in its columns as one JSON array; else in
        :attr:`FastSession.event_columns`.
    """
    try:
        if is_event_line(raw):
            return _event(_DECODE_EVENT(raw))
        return _session(_DECODE_SESSION(raw), embed_events)
    except (msgspec.DecodeError, UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return None


def convert_row(
    row: dict[str, Any], *, finite: bool = False, embed_events: bool = True
) -> FastSession | FastEvent | None:
    """A row already parsed into Python values (Parquet) as a valid row, or None.

    Python values may hold what JSON text cannot (NaN, infinities, lone surrogates), so free-form values
    and ranks are checked for finite numbers here, unless ``finite`` (the caller knows there is none: the
    values were decoded from JSON text by msgspec); text is checked when it is encoded. ``embed_events``:
    as for :func:`decode_line`.
    """
    try:
        if "event_id" in row:
            event = msgspec.convert(row, _EventRow)
            if not (finite or all_finite(event.meta)):
                return None
            return _event(event)
        session = msgspec.convert(row, _SessionRow)
        if not finite and not (
            all_finite(session.search_meta)
            and all_finite(session.payload_filter)
            and all(all_finite(r.meta) and all_finite(r.rank) for r in session.search_results)
            and all(all_finite(e.meta) for e in session.events)
        ):
            return None
        return _session(session, embed_events)
    except (msgspec.ValidationError, UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return None


def _event_columns(e: _Event) -> EventColumns:
    return (plain_text(e.event_id), plain_text(e.object_id), plain_text(e.event_type), e.created_at, json_text(e.meta))


def _event(row: _EventRow) -> FastEvent:
    return FastEvent(plain_text(row.session_id), _event_columns(row))


def _session(s: _SessionRow, embed_events: bool) -> FastSession:
    if s.search_query is not None:
        plain_text(s.search_query)
    if s.user_id is not None:
        plain_text(s.user_id)
    columns = (
        plain_text(s.session_id),
        s.search_query,
        json_text(s.search_results),
        json_text(s.search_meta),
        json_text(s.payload_filter),
        json_text(s.sort_by),
        s.user_id,
        s.created_at,
        s.is_irrelevant,
        s.is_payload_search,
        content_hash(s),
        json_text(s.events) if embed_events and s.events else None,
    )
    if embed_events or not s.events:
        return FastSession(columns, len(s.events), [])
    # The events' text (ids, event_type, meta) is checked once, in the JSON text of them all: a NUL character
    # or a lone surrogate in any of them raises here, as plain_text / json_text would.
    json_text(s.events)
    return FastSession(
        columns,
        len(s.events),
        [
            (e.event_id, e.object_id, e.event_type, e.created_at, None if e.meta is None else _ENCODE(e.meta).decode())
            for e in s.events
        ],
    )
