"""Two users with sessions in a released batch and in the collecting one: the data of the erasure tests, of
the store (tests/store/test_erasure.py) and of EraseUserOperator and its DAG (tests/airflow/test_erasure.py)."""

from __future__ import annotations

from clickstream.store import SessionStore

#: When the seeded sessions were created (outside the live window: they are registered without its check).
SEEDED_AT = 1_701_234_567_890


def register_with_events(store: SessionStore, sid: str, user: str | None) -> str:
    """Register session ``sid`` of ``user`` with 2 events and an improvement mark; its batch id."""
    body = {"session_id": sid, "search_results": [{"object_id": "o1"}], "user_id": user, "created_at": SEEDED_AT}
    batch_id = store.register_session(body, check_window=False).batch_id
    store.push_events(
        sid,
        [
            {"event_id": f"{sid}-e1", "object_id": "o1", "created_at": SEEDED_AT + 1},
            {"event_id": f"{sid}-e2", "object_id": "o2", "created_at": SEEDED_AT + 2},
        ],
        check_window=False,
    )
    store.use_for_improvement(sid)
    assert batch_id is not None
    return batch_id


def seed_two_users(store: SessionStore) -> dict[str, str]:
    """u1 has a session in a released batch (r1) and one in the collecting batch; u2 and an anonymous user
    have sessions in both too. Every session has 2 events and an improvement mark. The two batch ids, as
    ``released`` and ``collecting``."""
    released = register_with_events(store, "u1-a", "u1")
    register_with_events(store, "u2-a", "u2")
    register_with_events(store, "anon-a", None)
    store.release_batch("r1")
    collecting = register_with_events(store, "u1-b", "u1")
    register_with_events(store, "u2-b", "u2")
    return {"released": released, "collecting": collecting}


def user_sessions(store: SessionStore, user: str) -> list[str]:
    """Every session of ``user``, found through the batch pages (the store's public read path)."""
    found = []
    for batch in store.list_batches():
        for page in store.iter_batch_pages(batch.batch_id):
            found += [s["session_id"] for s in page if s["user_id"] == user]
    return sorted(found)
