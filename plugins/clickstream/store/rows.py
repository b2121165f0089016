"""Row mapping: registration bodies to stored columns, stored rows to the API's shapes, and pages."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping

from clickstream import models
from clickstream.store.db import dumps, loads


def content_hash(session: models.SessionIn) -> str:
    """Stable digest of a registration body: equal bodies (whatever their key order) hash equal."""
    canonical = json.dumps(session.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def session_columns(session: models.SessionIn, now: int | None = None) -> dict[str, Any]:
    """The stored columns of a registration body (JSON as text, and its content hash). Live registration,
    ``ingest_bulk`` and the history import write sessions through this one mapping, so a re-registration of
    an imported session is recognised as ``already_registered``.

    An omitted ``created_at`` is stored as ``now`` (the time of receipt) while the content hash keeps it
    omitted, so a retry of the same body, received later, is still ``already_registered``.
    """
    return {
        "session_id": session.session_id,
        "search_query": session.search_query,
        "search_results": dumps([r.model_dump() for r in session.search_results]),
        "search_meta": dumps(session.search_meta),
        "payload_filter": dumps(session.payload_filter),
        "sort_by": dumps(session.sort_by.model_dump() if session.sort_by else None),
        "user_id": session.user_id,
        "created_at": session.created_at if session.created_at is not None else now,
        "is_irrelevant": session.is_irrelevant,
        "is_payload_search": session.is_payload_search,
        "content_hash": content_hash(session),
    }


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


@dataclass(frozen=True)
class ExtractPage:
    """One page of a batch in the extraction layout of :mod:`clickstream.dataset`, as JSON lines.

    ``sessions_json`` holds one JSON object per session (``SESSIONS_SCHEMA``: free-form objects as JSON
    text, ``search_results[].meta`` too, ``n_events``), ``events_json`` one per event (``EVENTS_SCHEMA``,
    with ``event_index``, earliest first), both in session order. A reader turns them into Arrow without
    building Python objects per value. ``len(page)`` is its number of sessions.
    """

    first_number: int
    last_number: int
    sessions: int
    events: int
    sessions_json: bytes
    events_json: bytes

    def __len__(self) -> int:
        return self.sessions
