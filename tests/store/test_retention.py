"""Retention on SQLite and PostgreSQL (store/retention.py): purging a released batch chunk by chunk."""

from __future__ import annotations

import pytest

from clickstream.store import Conflict, NotFound, SessionStore
from tests.store.helpers import HOUR, Clock, a_session, an_event, count_rows


class TestRetention:
    def _released(self, store: SessionStore, clock: Clock, tag: str, sessions: int = 5) -> str:
        for i in range(sessions):
            store.register_session(a_session(f"{tag}-{i}", created_at=clock.now), check_window=False)
            store.push_events(
                f"{tag}-{i}",
                [an_event("e1", created_at=clock.now), an_event("e2", created_at=clock.now)],
                check_window=False,
            )
        store.use_for_improvement(f"{tag}-0")
        batch_id = store.release_batch(f"r-{tag}").batch_id
        clock.now += HOUR
        return batch_id

    def test_purge_removes_a_released_batch_with_its_events_and_marks_only(
        self, store: SessionStore, clock: Clock
    ) -> None:
        old = self._released(store, clock, "old", sessions=7)
        young = self._released(store, clock, "young")
        store.register_session(a_session("live", created_at=clock.now), check_window=False)

        assert [b.batch_id for b in store.list_purgeable_batches(released_before=clock.now - HOUR)] == [old]
        result = store.purge_batch(old, chunk_sessions=3)
        assert (result.sessions, result.events, result.marks, result.chunks) == (7, 14, 1, 3)
        with pytest.raises(NotFound):
            store.get_batch(old)
        with pytest.raises(NotFound):
            store.get_session("old-0")
        assert store.get_batch(young).sessions == 5
        assert len(store.get_session("young-0").events) == 2
        assert store.get_improvement_mark("young-0").status == "pending"
        assert (
            count_rows(store, "cs_session"),
            count_rows(store, "cs_event"),
            count_rows(store, "cs_improvement_mark"),
        ) == (
            6,
            10,
            1,
        )

    def test_the_collecting_batch_is_never_purged(self, store: SessionStore, clock: Clock) -> None:
        collecting = store.register_session(a_session("live")).batch_id
        assert collecting is not None
        assert store.list_purgeable_batches(released_before=clock.now + 10 * HOUR) == []
        with pytest.raises(Conflict, match="collecting"):
            store.purge_batch(collecting)
        assert store.get_session("live").batch_id == collecting

    def test_a_purge_run_again_finishes_nothing_more_and_unknown_is_not_found(
        self, store: SessionStore, clock: Clock
    ) -> None:
        old = self._released(store, clock, "old")
        store.purge_batch(old)
        with pytest.raises(NotFound):
            store.purge_batch(old)
