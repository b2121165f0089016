"""The improvement queue on SQLite and PostgreSQL (store/improvement.py): marking sessions and batches, and the
queue's claims, completions and failures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from clickstream.store import Conflict, InvalidInput, NotFound, SessionStore
from tests.store.helpers import T0, Clock, a_session, an_event, count_rows


class TestUseForImprovement:
    def test_unknown_session_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.use_for_improvement("nope")

    def test_session_with_an_event_on_a_result_is_marked_once(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event("e1", "b")])
        first = store.use_for_improvement("s1")
        assert first.model_dump() == {"session_id": "s1", "status": "marked", "reason": None}
        mark = store.get_improvement_mark("s1")
        assert (mark.status, mark.attempts, mark.created_at) == ("pending", 0, T0)
        again = store.use_for_improvement("s1")
        assert again.model_dump() == {"session_id": "s1", "status": "already_marked", "reason": None}
        assert count_rows(store, "cs_improvement_mark") == 1

    def test_payload_search_is_skipped_and_nothing_written(self, store: SessionStore) -> None:
        store.register_session(a_session("s1", is_payload_search=True))
        store.push_events("s1", [an_event("e1", "a")])
        result = store.use_for_improvement("s1")
        assert result.model_dump() == {"session_id": "s1", "status": "skipped", "reason": "payload_search"}
        with pytest.raises(NotFound):
            store.get_improvement_mark("s1")

    def test_session_without_events_is_skipped_and_nothing_written(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        result = store.use_for_improvement("s1")
        assert result.model_dump() == {"session_id": "s1", "status": "skipped", "reason": "no_events"}
        assert count_rows(store, "cs_improvement_mark") == 0

    def test_event_on_an_object_not_among_the_results_does_not_make_it_eligible(self, store: SessionStore) -> None:
        store.register_session(a_session("s1", results=("a", "b")))
        store.push_events("s1", [an_event("e1", "zzz"), an_event("e2", "a-prefix-of-nothing")])
        assert store.use_for_improvement("s1").reason == "no_events"
        assert count_rows(store, "cs_improvement_mark") == 0

    def test_irrelevant_session_without_events_is_eligible(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        store.mark_irrelevant("s1")
        assert store.use_for_improvement("s1").status == "marked"

    def test_irrelevant_payload_search_is_still_skipped(self, store: SessionStore) -> None:
        store.register_session(a_session("s1", is_payload_search=True))
        store.mark_irrelevant("s1")
        assert store.use_for_improvement("s1").reason == "payload_search"

    def test_many_sessions_at_once_are_counted_per_outcome(self, store: SessionStore) -> None:
        store.register_session(a_session("good"))
        store.push_events("good", [an_event("e1", "a")])
        store.register_session(a_session("payload", is_payload_search=True))
        store.register_session(a_session("silent"))
        counts, outcomes = store.mark_sessions_for_improvement(["good", "payload", "silent", "nope", "good"])
        assert counts.model_dump() == {
            "marked": 1,
            "already_marked": 1,
            "skipped_payload_search": 1,
            "skipped_no_events": 1,
            "not_found": 1,
        }
        assert [o["status"] for o in outcomes] == ["marked", "skipped", "skipped", "not_found", "already_marked"]


class TestMarkBatchForImprovement:
    def test_counts_each_outcome_and_marks_only_eligible_sessions(self, store: SessionStore) -> None:
        batch_id = store.register_session(a_session("clicked")).batch_id
        assert batch_id is not None
        store.push_events("clicked", [an_event("e1", "b")])
        store.register_session(a_session("irrelevant"))
        store.mark_irrelevant("irrelevant")
        store.register_session(a_session("payload", is_payload_search=True))
        store.push_events("payload", [an_event("e1", "a")])
        store.register_session(a_session("off-results"))
        store.push_events("off-results", [an_event("e1", "zzz")])
        store.register_session(a_session("silent"))
        store.register_session(a_session("premarked"))
        store.push_events("premarked", [an_event("e1", "c")])
        store.use_for_improvement("premarked")

        counts = store.mark_batch_for_improvement(batch_id)
        assert counts.model_dump() == {
            "marked": 2,
            "already_marked": 1,
            "skipped_payload_search": 1,
            "skipped_no_events": 2,
            "not_found": 0,
        }
        with store.engine.connect() as conn:
            marked = set(conn.execute(sa.text("SELECT session_id FROM cs_improvement_mark")).scalars())
        assert marked == {"clicked", "irrelevant", "premarked"}

        again = store.mark_batch_for_improvement(batch_id)
        assert (again.marked, again.already_marked, again.skipped_no_events) == (0, 3, 2)

    def test_only_the_given_batch_is_marked(self, store: SessionStore, clock: Clock) -> None:
        first = store.register_session(a_session("old")).batch_id
        assert first is not None
        store.push_events("old", [an_event("e1")])
        store.release_batch("r1")
        clock.now += 1
        store.register_session(a_session("new"))
        store.push_events("new", [an_event("e1")])
        assert store.mark_batch_for_improvement(first).marked == 1
        with pytest.raises(NotFound):
            store.get_improvement_mark("new")

    def test_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.mark_batch_for_improvement("nope")


class TestImprovementQueue:
    def _marked(self, store: SessionStore, clock: Clock, *session_ids: str) -> None:
        for sid in session_ids:
            store.register_session(a_session(sid))
            store.push_events(sid, [an_event("e1")])
            store.use_for_improvement(sid)
            clock.now += 1

    def test_claim_hands_out_pending_marks_in_order_and_moves_them_to_processing(
        self, store: SessionStore, clock: Clock
    ) -> None:
        self._marked(store, clock, "s3", "s1", "s2")
        claimed = store.claim_improvement_marks(limit=2)
        assert [(m.session_id, m.status, m.attempts) for m in claimed] == [
            ("s3", "processing", 1),
            ("s1", "processing", 1),
        ]
        rest = store.claim_improvement_marks(limit=10)
        assert [m.session_id for m in rest] == ["s2"]
        assert store.claim_improvement_marks(limit=10) == []
        assert store.get_improvement_mark("s1").status == "processing"

    def test_complete_makes_a_mark_done(self, store: SessionStore, clock: Clock) -> None:
        self._marked(store, clock, "s1")
        store.claim_improvement_marks()
        done = store.complete_improvement_mark("s1")
        assert (done.status, done.attempts, done.last_error) == ("done", 1, None)
        assert store.claim_improvement_marks() == []

    def test_fail_returns_to_pending_then_fails_for_good_after_max_attempts(
        self, make_store: Callable[..., SessionStore], clock: Clock
    ) -> None:
        store = make_store(max_attempts=2)
        self._marked(store, clock, "s1")
        store.claim_improvement_marks()
        first = store.fail_improvement_mark("s1", "model server down")
        assert (first.status, first.attempts, first.last_error) == ("pending", 1, "model server down")
        [again] = store.claim_improvement_marks()
        assert again.attempts == 2
        final = store.fail_improvement_mark("s1", "still down")
        assert (final.status, final.attempts, final.last_error) == ("failed", 2, "still down")
        assert store.claim_improvement_marks() == []

    @pytest.mark.parametrize("operation", ["complete", "fail"])
    def test_finishing_an_unknown_mark_is_not_found(self, store: SessionStore, operation: str) -> None:
        with pytest.raises(NotFound, match="'s1'"):
            self._finish(store, operation, "s1")

    @pytest.mark.parametrize("operation", ["complete", "fail"])
    def test_finishing_a_mark_that_is_not_processing_is_a_conflict(
        self, store: SessionStore, clock: Clock, operation: str
    ) -> None:
        self._marked(store, clock, "pending", "done")
        store.claim_improvement_marks(limit=10)
        store.complete_improvement_mark("done")
        store.fail_improvement_mark("pending", "x")  # back to pending
        for sid, status in (("pending", "pending"), ("done", "done")):
            with pytest.raises(Conflict) as err:
                self._finish(store, operation, sid)
            assert err.value.http_status == 409 and status in err.value.detail
        assert store.get_improvement_mark("done").status == "done"

    def test_stale_processing_marks_are_claimed_again(
        self, make_store: Callable[..., SessionStore], clock: Clock
    ) -> None:
        store = make_store(claim_stale_ms=60_000)
        self._marked(store, clock, "s1")
        store.claim_improvement_marks()
        clock.now += 60_000
        assert store.claim_improvement_marks() == []  # not older than the stale timeout yet
        clock.now += 1
        [reclaimed] = store.claim_improvement_marks()
        assert (reclaimed.session_id, reclaimed.status, reclaimed.attempts) == ("s1", "processing", 2)
        assert store.complete_improvement_mark("s1").status == "done"

    @pytest.mark.parametrize("operation", ["complete", "fail"])
    def test_a_worker_whose_claim_went_stale_cannot_finish_the_mark(
        self, make_store: Callable[..., SessionStore], clock: Clock, operation: str
    ) -> None:
        store = make_store(claim_stale_ms=60_000)
        self._marked(store, clock, "s1")
        [slow] = store.claim_improvement_marks()
        clock.now += 60_001
        [current] = store.claim_improvement_marks()  # handed to another worker
        finish = (
            store.complete_improvement_mark
            if operation == "complete"
            else lambda sid, attempt: store.fail_improvement_mark(sid, "boom", attempt=attempt)
        )
        with pytest.raises(Conflict, match="went stale"):
            finish("s1", attempt=slow.attempts)
        assert store.get_improvement_mark("s1").status == "processing"
        assert finish("s1", attempt=current.attempts).attempts == 2

    def test_a_mark_whose_workers_keep_dying_ends_failed_after_max_attempts(
        self, make_store: Callable[..., SessionStore], clock: Clock
    ) -> None:
        store = make_store(claim_stale_ms=60_000, max_attempts=3)
        self._marked(store, clock, "s1")
        for attempt in (1, 2, 3):
            [claimed] = store.claim_improvement_marks()
            assert claimed.attempts == attempt
            clock.now += 60_001  # the worker died: the claim goes stale
        assert store.claim_improvement_marks() == []
        mark = store.get_improvement_mark("s1")
        assert (mark.status, mark.attempts) == ("failed", 3)
        assert mark.last_error is not None
        assert "abandoned" in mark.last_error

    @pytest.mark.parametrize("limit", [0, 1001])
    def test_claim_limit_is_bounded(self, store: SessionStore, limit: int) -> None:
        with pytest.raises(InvalidInput, match="limit"):
            store.claim_improvement_marks(limit=limit)

    @staticmethod
    def _finish(store: SessionStore, operation: str, session_id: str) -> None:
        if operation == "complete":
            store.complete_improvement_mark(session_id)
        else:
            store.fail_improvement_mark(session_id, "boom")
