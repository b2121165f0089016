"""The history import applies live ingestion's size limits (``max_results``, ``max_json_bytes``) and refuses a
session row carrying more events than ``max_events_per_session``: such rows are invalid rows of the report,
with the reason the live routes give (the field named), on the fast path and on the model fallback alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clickstream.history import ImportReport, import_history, local_sources
from clickstream.store import InvalidInput, NotFound, SessionStore, StoreConfig, create_store_engine

T = 1_701_234_567_890
LIMITS = {"max_results": 3, "max_json_bytes": 100, "max_events_per_session": 3}
BIG = {"k": "x" * 120}  # a JSON object over 100 bytes


@pytest.fixture
def limited(store_url: str) -> Iterator[SessionStore]:
    config = StoreConfig(
        max_results=LIMITS["max_results"],
        max_json_bytes=LIMITS["max_json_bytes"],
        max_events_per_session=LIMITS["max_events_per_session"],
    )
    store = SessionStore(create_store_engine(store_url), config)
    store.migrate()
    yield store
    store.dispose()


def _session(sid: str, **extra: Any) -> dict[str, Any]:
    return {"session_id": sid, "search_results": [{"object_id": "o1", "rank": 1.0}], "created_at": T, **extra}


def _event(eid: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": eid, "object_id": "o1", "created_at": T + 1, **extra}


def _lax(row: dict[str, Any]) -> dict[str, Any]:
    """The same row in a shape only the models take (a number as a string): it goes through the fallback."""
    return {**row, "created_at": str(row["created_at"])}


def _import(store: SessionStore, tmp_path: Path, rows: list[dict[str, Any]]) -> ImportReport:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return import_history(store, local_sources(str(path)), "jsonl", invalid_threshold=1.0)


def _live_refusal(store: SessionStore, row: dict[str, Any]) -> str:
    """The reason the live store gives for a session body (registration) or an event (a bulk item)."""
    if "event_id" in row:
        return store.ingest_bulk(events=[row], check_window=False).rejected[0].error
    with pytest.raises(InvalidInput) as err:
        store.register_session({k: v for k, v in row.items() if k != "events"}, check_window=False)
    return err.value.detail


OVER_LIVE_LIMITS = {
    "results": _session("s-results", search_results=[{"object_id": f"o{i}"} for i in range(4)]),
    "search_meta": _session("s-meta", search_meta=BIG),
    "payload_filter": _session("s-filter", payload_filter=BIG),
    "result_meta": _session("s-rmeta", search_results=[{"object_id": "o1", "meta": BIG}]),
}


@pytest.mark.parametrize("path", ["fast", "models"])
def test_rows_over_the_live_limits_are_refused_as_live(limited: SessionStore, tmp_path: Path, path: str) -> None:
    shape = (lambda r: r) if path == "fast" else _lax
    rows = [
        shape(_session("s-ok", events=[_event("e1")])),
        *(shape(r) for r in OVER_LIVE_LIMITS.values()),
        shape(_session("s-events", events=[_event(f"e{i}") for i in range(4)])),
        shape(_session("s-emeta", events=[_event("e1"), _event("e2", meta=BIG)])),
        shape({**_event("e9", meta=BIG), "session_id": "s-ok"}),
        shape({**_event("e3"), "session_id": "s-ok"}),
    ]
    report = _import(limited, tmp_path, rows)
    assert report.loaded and report.invalid == 7, report.errors
    reasons = {e.line: e.reason for e in report.errors}
    for line, row in enumerate(OVER_LIVE_LIMITS.values(), start=2):
        assert reasons[line] == _live_refusal(limited, row)
    assert reasons[8] == _live_refusal(limited, _event("e9", meta=BIG) | {"session_id": "s-ok"})
    assert reasons[2].startswith("search_results: 4 results; at most 3")
    assert reasons[3].startswith("search_meta: JSON object of")
    assert reasons[5].startswith("search_results.0.meta: JSON object of")
    assert reasons[6] == "events: 4 events; at most 3 a session ([clickstream] max_events_per_session)"
    assert reasons[7].startswith("events.1.meta: JSON object of") and "max_json_bytes" in reasons[7]
    assert reasons[8].startswith("meta: JSON object of") and "max_json_bytes" in reasons[8]
    # the valid rows are loaded, the refused ones are not
    assert [e.event_id for e in limited.get_session("s-ok").events] == ["e1", "e3"]
    for sid in ("s-results", "s-meta", "s-filter", "s-rmeta", "s-events", "s-emeta"):
        with pytest.raises(NotFound):
            limited.get_session(sid)
    assert (report.loaded_sessions, report.loaded_events) == (1, 2)


def test_rows_at_the_limits_load(limited: SessionStore, tmp_path: Path) -> None:
    at = {"k": "x" * 92}  # {"k":"x...x"} is exactly 100 bytes
    assert len(json.dumps(at, separators=(",", ":"))) == 100
    rows = [
        _session(
            "s-at",
            search_results=[{"object_id": f"o{i}"} for i in range(3)],
            search_meta=at,
            events=[_event(f"e{i}", meta=at) for i in range(3)],
        ),
        _lax(_session("s-at-lax", search_meta=at, payload_filter=at)),
    ]
    report = _import(limited, tmp_path, rows)
    assert report.loaded and report.invalid == 0, report.errors
    assert report.loaded_sessions == 2 and report.loaded_events == 3
