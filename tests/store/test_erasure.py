"""Erasure on SQLite and PostgreSQL (store/erasure.py): a user's sessions, events and marks go, and the
tombstones keep them gone."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clickstream.store import InvalidInput, NotFound, SessionStore
from tests.store.helpers import Clock, RealClock, a_bulk_event, a_session, accounted, an_event, count_rows
from tests.support.users import SEEDED_AT, seed_two_users, user_sessions


class TestEraseUser:
    def test_erases_the_users_sessions_events_and_marks_only(self, store: SessionStore, clock: Clock) -> None:
        first = store.register_session(a_session("u1-a", user_id="u1")).batch_id
        store.push_events("u1-a", [an_event("e1"), an_event("e2")])
        store.use_for_improvement("u1-a")
        store.register_session(a_session("u2-a", user_id="u2"))
        store.push_events("u2-a", [an_event("e1")])
        store.use_for_improvement("u2-a")
        store.release_batch("r1")
        clock.now += 1
        second = store.register_session(a_session("u1-b", user_id="u1")).batch_id
        assert first is not None and second is not None
        store.push_events("u1-b", [an_event("e1")])
        store.register_session(a_session("anon"))

        result = store.erase_user("u1")
        assert result.model_dump() == {
            "user_id": "u1",
            "sessions": 2,
            "events": 3,
            "marks": 1,
            "batches": sorted([first, second]),
            "tombstones": 2,
        }
        for sid in ("u1-a", "u1-b"):
            with pytest.raises(NotFound):
                store.get_session(sid)
        with store.engine.connect() as conn:
            left = conn.execute(sa.text("SELECT session_id, count(*) FROM cs_event GROUP BY session_id")).all()
        assert dict(left) == {"u2-a": 1}
        assert count_rows(store, "cs_improvement_mark") == 1
        kept = store.get_session("u2-a")
        assert (kept.user_id, len(kept.events)) == ("u2", 1)
        assert store.get_improvement_mark("u2-a").status == "pending"
        assert store.get_session("anon").user_id is None
        assert [s.session_id for s in store.get_batch_sessions(first).sessions] == ["u2-a"]

    def test_unknown_user_erases_nothing(self, store: SessionStore) -> None:
        store.register_session(a_session("s1", user_id="u1"))
        result = store.erase_user("nobody")
        assert (result.sessions, result.events, result.marks, result.batches) == (0, 0, 0, [])
        assert store.get_session("s1").user_id == "u1"

    def test_empty_user_id_is_rejected(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match="user_id"):
            store.erase_user("")


# -------------------------------------------------------------------------------------------- tombstones


class TestErasedStaysErased:
    @pytest.fixture
    def erased(self, store: SessionStore) -> SessionStore:
        store.register_session(a_session("gone", user_id="u1"))
        store.push_events("gone", [an_event("e1")])
        store.register_session(a_session("kept", user_id="u2"))
        assert store.erase_user("u1").tombstones == 1
        return store

    def test_events_for_an_erased_session_are_not_stored_but_counted(self, erased: SessionStore) -> None:
        result = erased.push_events("gone", [an_event("e1"), an_event("e2")])
        assert (result.stored, result.duplicates, result.over_limit, result.erased) == (0, 0, 0, 2)
        assert count_rows(erased, "cs_event") == 0

    def test_registering_an_erased_session_again_stores_nothing(self, erased: SessionStore) -> None:
        again = erased.register_session(a_session("gone", user_id="u1"))
        assert (again.status, again.batch_id, again.session_number) == ("erased", None, None)
        with pytest.raises(NotFound):
            erased.get_session("gone")

    def test_bulk_items_of_an_erased_session_are_counted_and_the_others_stored(self, erased: SessionStore) -> None:
        result = erased.ingest_bulk(
            [a_session("gone", user_id="u1"), a_session("new", user_id="u1")],
            [a_bulk_event("gone", "e9"), a_bulk_event("new", "e1"), a_bulk_event("kept", "e1")],
        )
        assert (result.sessions.registered, result.sessions.erased) == (1, 1)
        assert (result.events.stored, result.events.erased, result.events.duplicates) == (2, 1, 0)
        assert accounted(result) == 5
        assert erased.get_session("new").user_id == "u1"  # the user may come back, with new sessions

    def test_erasing_again_records_no_new_tombstone(self, erased: SessionStore) -> None:
        assert erased.erase_user("u1").tombstones == 0
        assert count_rows(erased, "cs_erased_session") == 1


@pytest.fixture
def two_users(store: SessionStore) -> dict[str, str]:
    """The two users of :func:`tests.support.users.seed_two_users`: the released and the collecting batch."""
    return seed_two_users(store)


class TestEraseOneOfTwoUsers(RealClock):
    def test_no_row_of_the_user_remains(self, store: SessionStore, two_users: dict[str, str]) -> None:
        result = store.erase_user("u1")
        assert (result.sessions, result.events, result.marks) == (2, 4, 2)
        assert sorted(result.batches) == sorted(two_users.values())
        assert user_sessions(store, "u1") == []
        for sid in ("u1-a", "u1-b"):
            with pytest.raises(NotFound):
                store.get_session(sid)
            with pytest.raises(NotFound):
                store.get_improvement_mark(sid)
        # The id is tombstoned: registering it again stores nothing.
        again = store.register_session({"session_id": "u1-a", "created_at": SEEDED_AT}, check_window=False)
        assert (again.status, again.batch_id, again.events_attached) == ("erased", None, 0)

    def test_other_users_rows_are_untouched(self, store: SessionStore, two_users: dict[str, str]) -> None:
        before = {sid: store.get_session(sid).model_dump() for sid in ("u2-a", "u2-b", "anon-a")}
        store.erase_user("u1")
        assert {sid: store.get_session(sid).model_dump() for sid in before} == before
        assert all(len(s["events"]) == 2 for s in before.values())
        assert store.get_improvement_mark("u2-a").status == "pending"
        assert store.get_batch(two_users["released"]).sessions == 2  # u2-a and anon-a remain

    def test_a_second_erasure_erases_nothing(self, store: SessionStore, two_users: dict[str, str]) -> None:
        store.erase_user("u1")
        again = store.erase_user("u1")
        assert (again.sessions, again.events, again.marks, again.batches) == (0, 0, 0, [])
