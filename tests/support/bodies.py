"""Request bodies of the clickstream API for tests: a session and a click, with timestamps of now."""

from __future__ import annotations

from typing import Any

from clickstream.store import now_ms


def now() -> int:
    """Milliseconds since epoch."""
    return now_ms()


def session_body(session_id: str = "sess-1", **overrides: Any) -> dict[str, Any]:
    """A ``POST /session`` body (two results, user ``user-123``, created now) with ``overrides``."""
    body = {
        "session_id": session_id,
        "search_query": "ai transformer",
        "search_results": [{"object_id": "obj-1", "rank": 1.0}, {"object_id": "obj-2", "rank": 0.5}],
        "search_meta": {"latency_ms": 210},
        "payload_filter": {"task": "classification"},
        "sort_by": {"field": "stars", "order": "desc"},
        "user_id": "user-123",
        "created_at": now(),
    }
    body.update(overrides)
    return body


def click(event_id: str = "evt-1", object_id: str = "obj-1", **overrides: Any) -> dict[str, Any]:
    """A click event on ``object_id``, created now."""
    return {
        "event_id": event_id,
        "object_id": object_id,
        "event_type": "click",
        "created_at": now(),
        "meta": {"clicked_rank": 1},
        **overrides,
    }
