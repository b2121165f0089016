"""Events that arrive for a session of a purged batch are not stored: the purge leaves a tombstone of each
purged session id (``cs_purged_session``), and ``push_events``, ``ingest_bulk`` and the history import count
such events as ``purged``. A session id registered again after its purge is a session like any other."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from clickstream.history import import_history, local_sources
from clickstream.store import SessionStore
from tests.store.helpers import HOUR, Clock, a_session, an_event


def _purge_one(store: SessionStore, clock: Clock, *session_ids: str, release_id: str = "r1") -> str:
    for sid in session_ids:
        store.register_session(a_session(sid, created_at=clock.now))
        store.push_events(sid, [an_event(f"{sid}-e0", created_at=clock.now)])
    batch_id = store.release_batch(release_id).batch_id
    clock.now += HOUR
    assert store.purge_batch(batch_id, chunk_sessions=1, duty_cycle=1).sessions == len(session_ids)
    return batch_id


def _events(store: SessionStore, sid: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM cs_event WHERE session_id = :s"), {"s": sid}).scalar_one()


def test_events_of_a_purged_session_are_counted_purged_not_stored(store: SessionStore, clock: Clock) -> None:
    _purge_one(store, clock, "s1", "s2")
    pushed = store.push_events("s1", [an_event("e1", created_at=clock.now), an_event("e2", created_at=clock.now)])
    assert (pushed.stored, pushed.purged, pushed.duplicates) == (0, 2, 0)
    bulk = store.ingest_bulk(
        events=[
            {"session_id": "s2", **an_event("e1", created_at=clock.now)},
            {"session_id": "other", **an_event("e1", created_at=clock.now)},
        ]
    )
    assert (bulk.events.stored, bulk.events.purged, bulk.events.duplicates) == (1, 1, 0)
    assert _events(store, "s1") == _events(store, "s2") == 0
    assert _events(store, "other") == 1


def test_a_purged_session_id_registered_again_takes_events(store: SessionStore, clock: Clock) -> None:
    _purge_one(store, clock, "s1")
    again = store.register_session(a_session("s1", created_at=clock.now))
    assert again.status == "registered"
    pushed = store.push_events("s1", [an_event("e1", created_at=clock.now)])
    assert (pushed.stored, pushed.purged) == (1, 0)


def test_the_import_counts_events_of_purged_sessions(store: SessionStore, clock: Clock, tmp_path: Path) -> None:
    _purge_one(store, clock, "s1")
    rows = [
        {"session_id": "s1", **an_event("h1")},
        {"session_id": "s1", **an_event("h2")},
        {"session_id": "new", **an_event("h1")},
        {**a_session("back"), "events": [an_event("h1")]},
    ]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = import_history(store, local_sources(str(path)), "jsonl")
    assert report.loaded and report.invalid == 0
    assert (report.purged, report.loaded_events, report.duplicate_events) == (2, 2, 0)
    assert _events(store, "s1") == 0
    again = import_history(store, local_sources(str(path)), "jsonl")
    assert (again.purged, again.loaded_events, again.duplicate_events) == (2, 0, 2)


def test_purge_tombstones_last_as_long_as_the_batches_released_after_them(store: SessionStore, clock: Clock) -> None:
    # Growth is bounded: purging a batch drops the tombstones recorded before that batch was released.
    _purge_one(store, clock, "a1", "a2", release_id="r1")
    clock.now += 1000
    store.register_session(a_session("b1", created_at=clock.now))
    second = store.release_batch("r2").batch_id  # released after the first purge
    clock.now += HOUR
    store.purge_batch(second, duty_cycle=1)
    with store.engine.connect() as conn:
        kept = set(conn.execute(sa.text("SELECT session_id FROM cs_purged_session")).scalars())
    assert kept == {"b1"}
    assert store.push_events("b1", [an_event("x", created_at=clock.now)]).purged == 1
    assert store.push_events("a1", [an_event("x", created_at=clock.now)]).stored == 1  # forgotten: as before
