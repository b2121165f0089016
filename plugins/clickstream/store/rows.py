"""Row mapping: registration bodies to stored columns, stored rows to the API's shapes, and pages."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import RowMapping

from clickstream import models
from clickstream.store.db import dumps, loads


def content_hash(session: models.SessionIn) -> str:
    """Stable digest of a registration body: equal bodies (whatever their key order) hash equal."""
    canonical = json.dumps(session.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


#: The stored columns of a session, in the one order every writer of ``cs_session`` uses: live registration
#: and bulk ingestion (:func:`session_columns`), the history import (its load, its fast path and its model
#: fallback) and the benchmarks' seeding. The import's COPY target (``import_copy_new_sessions``) lists them in
#: this order too, followed by ``batch_id`` and ``registered_at``.
SESSION_COLUMNS = (
    "session_id",
    "search_query",
    "search_results",
    "search_meta",
    "payload_filter",
    "sort_by",
    "user_id",
    "created_at",
    "is_irrelevant",
    "is_payload_search",
    "content_hash",
)
#: The columns of an event the history import (and the benchmarks' seeding) writes besides its ``session_id``,
#: in the order of the import's COPY target (``import_copy_new_events``), which ends with ``received_at``.
EVENT_COLUMNS = ("event_id", "object_id", "event_type", "created_at", "meta")


def session_row(session: models.SessionIn, now: int | None = None) -> tuple[Any, ...]:
    """The stored columns of a registration body, in :data:`SESSION_COLUMNS` order (JSON as text, and its
    content hash). Live registration, ``ingest_bulk`` and the history import write sessions through this one
    mapping, so a re-registration of an imported session is recognised as ``already_registered``.

    An omitted ``created_at`` is stored as ``now`` (the time of receipt) while the content hash keeps it
    omitted, so a retry of the same body, received later, is still ``already_registered``.
    """
    return (
        session.session_id,
        session.search_query,
        dumps([r.model_dump() for r in session.search_results]),
        dumps(session.search_meta),
        dumps(session.payload_filter),
        dumps(session.sort_by.model_dump() if session.sort_by else None),
        session.user_id,
        session.created_at if session.created_at is not None else now,
        session.is_irrelevant,
        session.is_payload_search,
        content_hash(session),
    )


def session_columns(session: models.SessionIn, now: int | None = None) -> dict[str, Any]:
    """:func:`session_row` by column name (:data:`SESSION_COLUMNS`)."""
    return dict(zip(SESSION_COLUMNS, session_row(session, now), strict=True))


def event_row(event: models.EventIn) -> tuple[Any, ...]:
    """The stored columns of an event body, in :data:`EVENT_COLUMNS` order (``meta`` as JSON text)."""
    return (event.event_id, event.object_id, event.event_type, event.created_at, dumps(event.meta))


def new_batch_id(now: int) -> str:
    """Opaque, unique, and sortable by creation: the creation time leads, a random suffix follows."""
    return f"b{now:013d}-{secrets.token_hex(4)}"


def session_dict(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """A ``batch_page`` row as the API's session object (a plain dict: page iterators skip pydantic)."""
    events = loads(row["events"]) or []
    if events and "_seq" in events[0]:  # SQLite: restore the order its aggregate does not guarantee
        events.sort(key=lambda e: (e["created_at"], e["_seq"]))
        for e in events:
            del e["_seq"]
    return {
        "session_number": row["session_number"],
        "session_id": row["session_id"],
        "search_query": row["search_query"],
        "search_results": loads(row["search_results"]) or [],
        "search_meta": loads(row["search_meta"]),
        "payload_filter": loads(row["payload_filter"]),
        "sort_by": loads(row["sort_by"]),
        "user_id": row["user_id"],
        "created_at": row["created_at"],
        "is_irrelevant": bool(row["is_irrelevant"]),
        "events": events,
    }


# The page of GET /batch/sessions as msgspec Structs: models.BatchSessionsPage's fields in its order (a test
# keeps them equal), free-form objects kept as raw JSON text (never parsed).
_NULL = msgspec.Raw(b"null")


class _PageResult(msgspec.Struct):
    object_id: str
    rank: float | None = None
    meta: msgspec.Raw = _NULL


class _PageSortBy(msgspec.Struct):
    field: str
    order: str


class _PageEvent(msgspec.Struct):
    event_id: str
    object_id: str
    event_type: str
    created_at: int
    meta: msgspec.Raw = _NULL


class _PageSession(msgspec.Struct):
    session_number: int
    session_id: str
    search_query: str | None
    search_results: list[_PageResult]
    search_meta: msgspec.Raw
    payload_filter: msgspec.Raw
    sort_by: _PageSortBy | None
    user_id: str | None
    created_at: int
    is_irrelevant: bool
    events: list[_PageEvent]


class _Page(msgspec.Struct):
    batch_id: str
    last_number: int | None
    sessions: list[_PageSession]


#: The Structs of :func:`page_json` by the model whose fields (names and order) each mirrors.
PAGE_STRUCTS: dict[type[Any], type[msgspec.Struct]] = {
    models.SearchResult: _PageResult,
    models.SortBy: _PageSortBy,
    models.Event: _PageEvent,
    models.BatchSession: _PageSession,
    models.BatchSessionsPage: _Page,
}
_decode_sessions = msgspec.json.Decoder(list[_PageSession]).decode
_encode = msgspec.json.Encoder().encode


def page_json(batch_id: str, last_number: int | None, sessions: str) -> bytes:
    """The JSON document of ``GET /batch/sessions`` from ``batch_page_json``'s text of the sessions.

    Re-encoded in C (msgspec), without a Python object per free-form value: every key of the model in the
    model's order (the database's JSONB orders an object's keys its own way), ranks as JSON floats, compact
    and UTF-8, as the page model serialises it (equal once parsed).
    """
    return _encode(_Page(batch_id, last_number, _decode_sessions(sessions)))


@dataclass(frozen=True)
class ExtractPage:
    """One page of a batch in the extraction layout of :mod:`clickstream.dataset`, as JSON lines.

    ``sessions_json`` holds one JSON object per session (``SESSIONS_SCHEMA``: free-form objects as JSON
    text, ``search_results[].meta`` too, ``n_events``), ``events_json`` one per event (``EVENTS_SCHEMA``,
    with ``event_index``, earliest first), both in session order. A reader turns them into Arrow without
    building Python objects per value. ``len(page)`` is its number of sessions.

    On PostgreSQL with ADBC (:meth:`clickstream.store.db.Database.arrow_reader`) the page comes as
    ``columns`` instead, and the JSON texts are empty: an Arrow table of one row per session in session
    order, with the columns of the ``extract_page_arrow`` query (include/sql): the session's scalar columns,
    its results as parallel lists ``result_object_id``, ``result_rank``, ``result_meta``, ``sort_by`` as
    ``sort_by_null``, ``sort_field``, ``sort_order``, and its events as parallel lists ``event_id``,
    ``event_object_id``, ``event_type``, ``event_created_at``, ``event_meta`` (earliest first).
    """

    first_number: int
    last_number: int
    sessions: int
    events: int
    sessions_json: bytes = b""
    events_json: bytes = b""
    columns: Any = None

    def __len__(self) -> int:
        return self.sessions
