"""The fast path of the row mapping: request bodies decoded and checked by msgspec, in C, without pydantic.

The models (:mod:`clickstream.models`) build about a dozen pydantic objects per session; validating a
``POST /bulk`` of 1,000 items with them, and dumping their JSON columns again, cost most of its time. The
structs here are the same rules as the models, checked while msgspec decodes a body (JSON text, or Python
values already parsed); the stored columns, their JSON text and the content hash are then built from the
structs.

The contract, which ``tests/store/test_fastrows.py`` and ``tests/history/test_fast.py`` check against the
models on generated valid and invalid bodies: **a body is taken here only if the models accept it, and then
gives the same values and the same content hash** (:func:`clickstream.store.rows.content_hash`). Whatever is
not taken (invalid bodies, but also valid ones in shapes these structs do not take: numbers as strings, a
NUL escape, non-finite floats, a lone surrogate...) returns ``None`` and goes through the models, so a
refusal's reason is always the models' message.

The rules, as in :mod:`clickstream.models`: unknown fields are refused (``forbid_unknown_fields``); ids and
``event_type`` have their length bounds (in characters); timestamps are integers from
:data:`~clickstream.models.MIN_MILLIS` (below: seconds, refused) to :data:`~clickstream.models.MAX_BIGINT`;
``sort_by.order`` is ``asc`` or ``desc``; ``rank`` is a finite number; free-form objects are JSON objects;
text must be storable (no NUL character, no lone surrogate: the JSON decoder refuses a lone surrogate,
encoding refuses one in a Python string, and the text of every stored column is checked for NUL).

Live ingestion's bodies (:class:`LiveSession`, :class:`LiveEvent`: ``created_at`` may be omitted) are here;
the history import's rows (``created_at`` required, a session row's events) are in
:mod:`clickstream.history.fast`, on the same pieces.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from clickstream import models

SessionId = Annotated[str, Meta(min_length=1, max_length=128)]
UserId = Annotated[str, Meta(min_length=1, max_length=256)]
ShortId = Annotated[str, Meta(min_length=1, max_length=256)]
EventType = Annotated[str, Meta(min_length=1, max_length=64)]
Millis = Annotated[int, Meta(ge=models.MIN_MILLIS, le=models.MAX_BIGINT)]

#: An item given as its JSON text: bytes, or a ``msgspec.Raw`` (a slice of a request body).
JsonText = bytes | msgspec.Raw

#: What decoding or converting a body that is not taken raises (every one of them means "ask the models").
NOT_TAKEN = (msgspec.DecodeError, msgspec.ValidationError, UnicodeEncodeError, ValueError, TypeError, RecursionError)


class Result(Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`clickstream.models.SearchResult` (same fields, same order)."""

    object_id: ShortId
    rank: float | None = None
    meta: dict[str, Any] | None = None


class SortBy(Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`clickstream.models.SortBy`."""

    field: Annotated[str, Meta(min_length=1)]
    order: Literal["asc", "desc"]


class LiveSession(Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`clickstream.models.SessionIn`: a registration body (``created_at`` may be omitted); its fields
    are exactly :data:`BODY_FIELDS` (:func:`content_hash` encodes it as the body)."""

    session_id: SessionId
    search_query: str | None = None
    search_results: list[Result] = []
    search_meta: dict[str, Any] | None = None
    payload_filter: dict[str, Any] | None = None
    sort_by: SortBy | None = None
    user_id: UserId | None = None
    created_at: Millis | None = None
    is_irrelevant: bool = False
    is_payload_search: bool = False


class LiveEvent(Struct, forbid_unknown_fields=True, kw_only=True):
    """:class:`clickstream.models.BulkEventIn`: an event body plus its ``session_id``."""

    event_id: ShortId
    object_id: ShortId
    event_type: EventType = "click"
    created_at: Millis | None = None
    meta: dict[str, Any] | None = None
    session_id: SessionId


_DECODE_LIVE_SESSION = msgspec.json.Decoder(LiveSession).decode
_DECODE_LIVE_EVENT = msgspec.json.Decoder(LiveEvent).decode
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
BODY_FIELDS = tuple(models.SessionIn.model_fields)


def all_finite(value: Any) -> bool:
    """Whether a Python value holds only finite numbers (JSON text decoded by msgspec always does)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


def json_text(value: Any) -> str | None:
    """JSON text of a value for a JSON column (None stays None: SQL NULL); ValueError for a NUL character."""
    if value is None:
        return None
    data = _ENCODE(value)
    if _NUL in data:
        raise ValueError("NUL character")
    return data.decode()


def plain_text(text: str) -> str:
    """``text`` if storable: ValueError for a NUL character, UnicodeEncodeError for a lone surrogate."""
    if "\x00" in text:
        raise ValueError("NUL character")
    if not text.isascii():
        text.encode("utf-8")
    return text


def content_hash(s: Any) -> str:
    """:func:`clickstream.store.rows.content_hash` of a session struct (its :data:`BODY_FIELDS`; a history
    row's events excluded): SHA-256 of the registration body's JSON as ``json.dumps(body, sort_keys=True,
    separators=(",", ":"))`` writes it.

    msgspec writes that very text for ASCII text and the usual numbers; otherwise (non-ASCII text, which
    ``json.dumps`` escapes, and exponent-form numbers) the body is written by ``json.dumps`` itself.
    """
    # a LiveSession is the body itself (its fields are BODY_FIELDS): encoded as it is, no dict built
    body = s if type(s) is LiveSession else {name: getattr(s, name) for name in BODY_FIELDS}
    canonical = _ENCODE_SORTED(body)
    if not canonical.isascii() or b"0e" in canonical.translate(_DIGITS_TO_ZERO) or b"0.0000" in canonical:
        canonical = json.dumps(msgspec.to_builtins(body), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def live_session(item: Any) -> tuple[LiveSession, tuple[str, str | None, str | None, str | None]] | None:
    """A registration body as a checked :class:`LiveSession` and its JSON columns (``search_results``,
    ``search_meta``, ``payload_filter``, ``sort_by`` as text), or None: not valid, or a shape not taken here
    (the models decide). ``item`` is its JSON text (bytes, or a ``msgspec.Raw``) or its parsed values (a
    dict); anything else (a model instance: validated already) is not taken."""
    try:
        if isinstance(item, dict):
            s = msgspec.convert(item, LiveSession)
            if not (
                all_finite(s.search_meta)
                and all_finite(s.payload_filter)
                and all(all_finite(r.meta) and all_finite(r.rank) for r in s.search_results)
            ):
                return None
        elif isinstance(item, (bytes, msgspec.Raw)):
            s = _DECODE_LIVE_SESSION(item)
        else:
            return None
        plain_text(s.session_id)
        if s.search_query is not None:
            plain_text(s.search_query)
        if s.user_id is not None:
            plain_text(s.user_id)
        results = json_text(s.search_results)
        assert results is not None  # a list is never None
        return s, (results, json_text(s.search_meta), json_text(s.payload_filter), json_text(s.sort_by))
    except NOT_TAKEN:
        return None


def live_event(item: Any) -> tuple[LiveEvent, str | None] | None:
    """An event body with its ``session_id`` as a checked :class:`LiveEvent` and its ``meta`` as JSON text, or
    None (the models decide): as :func:`live_session`."""
    try:
        if isinstance(item, dict):
            e = msgspec.convert(item, LiveEvent)
            if not all_finite(e.meta):
                return None
        elif isinstance(item, (bytes, msgspec.Raw)):
            e = _DECODE_LIVE_EVENT(item)
        else:
            return None
        plain_text(e.session_id)
        plain_text(e.event_id)
        plain_text(e.object_id)
        plain_text(e.event_type)
        return e, json_text(e.meta)
    except NOT_TAKEN:
        return None


def parsed(item: Any) -> Any:
    """An item as the models take it: JSON text parsed as ``json.loads`` parses a request body (the fallback
    of an item :func:`live_session` / :func:`live_event` did not take), anything else as it is."""
    if isinstance(item, (bytes, msgspec.Raw)):
        return json.loads(bytes(item))
    return item


def encode(value: Any) -> str:
    """JSON text of a statement's JSON parameter (the rows of a bulk write): msgspec's, which writes a
    ``msgspec.Raw`` (a column's JSON text, e.g. an event's ``meta``) as the JSON value it holds."""
    return _ENCODE(value).decode()
