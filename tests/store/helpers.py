"""What the store tests share: a clock the test moves by hand and request bodies at its time, bodies of now
for the tests on the real clock (:class:`RealClock`), and small counts read back from the database.

The fixtures (``clock``, ``make_store``, ``store``, ``live_store``) are in ``tests/store/conftest.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from clickstream.store import SessionStore
from tests.support.bodies import session_body

#: The fixed "now" of the injected clock (2025-06-15, milliseconds since epoch).
T0 = 1_750_000_000_000
HOUR = 3600 * 1000


class Clock:
    """A clock the test moves by hand: ``clock.now += 1000``."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class RealClock:
    """Base of the test classes whose bodies carry timestamps of now: their ``store`` is ``live_store``, a
    store on the real clock (the live window accepts those timestamps)."""

    @pytest.fixture
    def store(self, live_store: SessionStore) -> SessionStore:
        return live_store


# ------------------------------------------------------------------------------------ bodies at the clock


def a_session(
    session_id: str, *, results: tuple[str, ...] = ("a", "b", "c"), created_at: int = T0, **fields: Any
) -> dict[str, Any]:
    """A registration body with ``results`` as its search results (ranked 1.0, 2.0, ...)."""
    return {
        "session_id": session_id,
        "search_query": f"query of {session_id}",
        "search_results": [{"object_id": o, "rank": float(i + 1)} for i, o in enumerate(results)],
        "created_at": created_at,
        **fields,
    }


def an_event(event_id: str, object_id: str = "a", *, created_at: int = T0, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "object_id": object_id, "created_at": created_at, **fields}


def a_bulk_event(session_id: str, event_id: str, object_id: str = "a", **fields: Any) -> dict[str, Any]:
    return {"session_id": session_id, **an_event(event_id, object_id, **fields)}


def accounted(result: Any) -> int:
    """Items a bulk answer accounts for: every item sent must be counted exactly once."""
    return (
        result.sessions.registered
        + result.sessions.already_registered
        + result.events.stored
        + result.events.duplicates
        + result.events.over_limit
        + result.sessions.erased
        + result.events.erased
        + len(result.rejected)
    )


# ------------------------------------------------------------------------------------------ bodies of now


def live_session(session_id: str, results: tuple[str, ...] = ("a", "b", "c"), **fields: Any) -> dict[str, Any]:
    """A registration body of now (:func:`tests.support.bodies.session_body`) with ``results``."""
    return session_body(session_id, search_results=[{"object_id": o} for o in results], **fields)


def release_batches(store: SessionStore, n: int, sessions: int = 1) -> list[str]:
    """``n`` released batches of ``sessions`` sessions each (oldest first); their ids."""
    ids = []
    for i in range(n):
        for j in range(sessions):
            store.register_session(live_session(f"s{i}-{j}"))
        ids.append(store.release_batch(f"r{i}").batch_id)
    return ids


# ----------------------------------------------------------------------------------------------- reading


def count_rows(store: SessionStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def kept_metrics_rows(store: SessionStore, batch_id: str) -> int:
    """Rows of ``batch_id`` in ``cs_batch_metrics`` (1: its metrics are kept)."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM cs_batch_metrics WHERE batch_id = :b"), {"b": batch_id}
        ).scalar_one()


def all_page_numbers(store: SessionStore, batch_id: str, limit: int) -> list[list[int]]:
    """Session numbers of every page, following ``last_number`` until an empty page."""
    pages: list[list[int]] = []
    after = 0
    while True:
        page = store.get_batch_sessions(batch_id, after_number=after, limit=limit)
        if not page.sessions:
            assert page.last_number is None
            return pages
        numbers = [s.session_number for s in page.sessions]
        assert page.last_number == numbers[-1]
        pages.append(numbers)
        after = page.last_number
