"""``late_events`` is exact when a release runs during a history import (PostgreSQL's direct load).

The direct load COPYs events inside one long transaction: their ``event_seq`` is taken at COPY time, but they
become visible at the import's commit. A release committing in between recorded ``released_event_seq`` = the
highest *committed* seq, which a live event copied later could push above the import's seqs: the import's
events, committed after the release, were then not counted late. The release now waits for an import in
progress (and an import starting waits for a release in progress), so an event is late exactly when its
write committed after the release.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from clickstream.store import SessionStore, now_ms
from clickstream.store.history_load import open_load

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url: str) -> Iterator[SessionStore]:
    s = SessionStore.from_url(pg_url)
    s.migrate()
    yield s
    s.dispose()


def _event_row(seq: int, session_id: str, event_id: str) -> tuple[Any, ...]:
    # history_load.EVENT_ROW_COLUMNS: seq, pos, session_id, event_id, object_id, event_type, created_at, meta
    return (seq, 0, session_id, event_id, "o1", "click", now_ms() - 60_000, None)


def test_late_events_exact_when_a_release_runs_during_an_import(store: SessionStore) -> None:
    store.register_session({"session_id": "s1", "search_results": [{"object_id": "o1"}]})
    released: list[Any] = []
    with open_load(store) as load:
        # The import copies two events of s1 (a session already registered: the import takes no batch lock).
        load.add_rows([], [_event_row(1, "s1", "h1"), _event_row(2, "s1", "h2")])
        # A live event after them: a higher event_seq, committed at once.
        assert store.push_events("s1", [{"event_id": "live", "object_id": "o1"}]).stored == 1
        release = threading.Thread(target=lambda: released.append(store.release_batch("r1")))
        release.start()
        release.join(1.5)
        released_before_import = not release.is_alive()
        outcome = load.finish(accept=lambda conflicts: True, error_limit=10)
    release.join(30)
    assert outcome.committed and outcome.loaded_events == 2 and released
    after = store.push_events("s1", [{"event_id": "after", "object_id": "o1"}])
    assert after.stored == 1
    # Late: the events whose write committed after the release did: "after", and the import's two events
    # if the release committed before the import did.
    expected = 1 + (2 if released_before_import else 0)
    metrics = store.batch_metrics(released[0].batch_id)
    assert metrics.events == 4
    assert metrics.late_events == expected, f"release committed before the import: {released_before_import}"


def test_an_import_starting_during_a_release_waits_for_it(store: SessionStore) -> None:
    store.register_session({"session_id": "s1", "search_results": [{"object_id": "o1"}]})
    store.release_batch("r1")
    with open_load(store) as load:
        load.add_rows([], [_event_row(1, "s1", "h1")])
        load.finish(accept=lambda conflicts: True, error_limit=10)
    metrics = store.batch_metrics(store.list_batches("released")[0].batch_id)
    assert (metrics.events, metrics.late_events) == (1, 1)  # imported after the release: late
