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
(:func:`clickstream.history.checks.limit_refusal`).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from clickstream import models

_SessionId = Annotated[str, Meta(min_length=1, max_length=128)]
_UserId = Annotated[str, Meta(min_length=1, max_length=256)]
_ShortId = Annotated[str, Meta(min_length=1, max_length=256)]
_Millis = Annotated[int, Meta(ge=models.MIN_MILLIS, le=models.MAX_BIGINT)]


class _Result(Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`clickstream.models.SearchResult` (same fields, same order)."""

    object_id: _ShortId
    rank: float | None = None
    meta: dict[str, Any] | None = None


class _SortBy(Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`clickstream.models.SortBy`."""

    field: Annotated[str, Meta(min_length=1)]
    order: Literal["asc", "desc"]


class _Event(Struct, forbid_unknown_fields=True, kw_only=True):
    """An event of a history file (:class:`clickstream.models.EventIn`, ``created_at`` required)."""

    event_id: _ShortId
    object_id: _ShortId
    event_type: Annotated[str, Meta(min_length=1, max_length=64)] = "click"
    created_at: _Millis
    meta: dict[str, Any] | None = None


class _EventRow(_Event, forbid_unknown_fields=True, kw_only=True):
    """An event row: the event plus its ``session_id``."""

    session_id: _SessionId


class _SessionRow(Struct, forbid_unknown_fields=True, kw_only=True):
    """A session row (:class:`clickstream.models.SessionIn`, ``created_at`` required) with its events."""

    session_id: _SessionId
    search_query: str | None = None
    search_results: list[_Result] = []
    search_meta: dict[str, Any] | None = None
    payload_filter: dict[str, Any] | None = None
    sort_by: _SortBy | None = None
    user_id: _UserId | None = None
    created_at: _Millis
    is_irrelevant: bool = False
    is_payload_search: bool = False
    events: list[_Event] = []


_DECODE_SESSION = msgspec.json.Decoder(_SessionRow).decode
_DECODE_EVENT = msgspec.json.Decoder(_EventRow).decode
_ENCODE = msgspec.json.Encoder().encode  # field order of the models, as the store's JSON columns
_ENCODE_SORTED = msgspec.json.Encoder(order="sorted").encode  # keys sorted, as the content hash wants
#: Number spellings where msgspec and Python's ``json.dumps`` differ (``1e16`` / ``1e+16``, ``0.00001`` /
#: ``1e-05``) are the exponent forms and the long fraction: a canonical text holding a digit followed by
#: ``e`` or the text ``0.0000`` is hashed the slow way (a string that merely looks like one only costs
#: that slow way). Digits are mapped to ``0`` first, so that one ``in`` test finds any of them (a regular
#: expression cost more than the rest of the row).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NUL = b"\\u0000"
#: The registration body's fields (the content hash covers them, and only them).
_BODY_FIELDS = tuple(models.SessionIn.model_fields)

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
            if not (finite or _finite(event.meta)):
                return None
            return _event(event)
        session = msgspec.convert(row, _SessionRow)
        if not finite and not (
            _finite(session.search_meta)
            and _finite(session.payload_filter)
            and all(_finite(r.meta) and _finite(r.rank) for r in session.search_results)
            and all(_finite(e.meta) for e in session.events)
        ):
            return None
        return _session(session, embed_events)
    except (msgspec.ValidationError, UnicodeEncodeError, ValueError, TypeError, RecursionError):
        return None


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _text(value: Any) -> str | None:
    """JSON text of a value for a JSON column (None stays None: SQL NULL); ValueError for a NUL character."""
    if value is None:
        return None
    data = _ENCODE(value)
    if _NUL in data:
        raise ValueError("NUL character")
    return data.decode()


def _plain(text: str) -> str:
    """``text`` if storable: ValueError for a NUL character, UnicodeEncodeError for a lone surrogate."""
    if "\x00" in text:
        raise ValueError("NUL character")
    if not text.isascii():
        text.encode("utf-8")
    return text


def _event_columns(e: _Event) -> EventColumns:
    return (_plain(e.event_id), _plain(e.object_id), _plain(e.event_type), e.created_at, _text(e.meta))


def _event(row: _EventRow) -> FastEvent:
    return FastEvent(_plain(row.session_id), _event_columns(row))


def _session(s: _SessionRow, embed_events: bool) -> FastSession:
    if s.search_query is not None:
        _plain(s.search_query)
    if s.user_id is not None:
        _plain(s.user_id)
    columns = (
        _plain(s.session_id),
        s.search_query,
        _text(s.search_results),
        _text(s.search_meta),
        _text(s.payload_filter),
        _text(s.sort_by),
        s.user_id,
        s.created_at,
        s.is_irrelevant,
        s.is_payload_search,
        content_hash(s),
        _text(s.events) if embed_events and s.events else None,
    )
    if embed_events or not s.events:
        return FastSession(columns, len(s.events), [])
    # The events' text (ids, event_type, meta) is checked once, in the JSON text of them all: a NUL character
    # or a lone surrogate in any of them raises here, as _plain / _text would.
    _text(s.events)
    return FastSession(
        columns,
        len(s.events),
        [
            (e.event_id, e.object_id, e.event_type, e.created_at, None if e.meta is None else _ENCODE(e.meta).decode())
            for e in s.events
        ],
    )


def content_hash(s: _SessionRow) -> str:
    """:func:`clickstream.store.rows.content_hash` of the session (its events excluded): SHA-256 of the
    registration body's JSON as ``json.dumps(body, sort_keys=True, separators=(",", ":"))`` writes it.

    msgspec writes that very text for ASCII text and the usual numbers; otherwise (non-ASCII text, which
    ``json.dumps`` escapes, and exponent-form numbers) the body is written by ``json.dumps`` itself.
    """
    body = {name: getattr(s, name) for name in _BODY_FIELDS}
    canonical = _ENCODE_SORTED(body)
    if not canonical.isascii() or b"0e" in canonical.translate(_DIGITS_TO_ZERO) or b"0.0000" in canonical:
        canonical = json.dumps(msgspec.to_builtins(body), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()
