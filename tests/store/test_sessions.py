"""Sessions on SQLite and PostgreSQL (store/sessions.py): register, push events, mark irrelevant, read a
session, ingest in bulk, and the time of receipt when ``created_at`` is omitted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from clickstream.store import Conflict, InvalidInput, NotFound, SessionStore
from tests.store.helpers import HOUR, T0, Clock, a_bulk_event, a_session, accounted, an_event, count_rows


class TestRegisterSession:
    def test_first_registration_creates_a_collecting_batch(self, store: SessionStore) -> None:
        assert store.list_batches() == []
        result = store.register_session(a_session("s1"))
        assert result.status == "registered"
        assert result.session_id == "s1"
        [batch] = store.list_batches()
        assert (batch.batch_id, batch.status) == (result.batch_id, "collecting")
        assert batch.created_at == T0

    def test_sessions_join_the_collecting_batch_with_increasing_unique_numbers(self, store: SessionStore) -> None:
        results = [store.register_session(a_session(f"s{i}")) for i in range(5)]
        assert {r.batch_id for r in results} == {results[0].batch_id}
        numbers = cast(list[int], [r.session_number for r in results])
        assert numbers == sorted(set(numbers))
        assert len(store.list_batches()) == 1

    def test_registered_content_is_returned_as_sent(self, store: SessionStore) -> None:
        body = a_session(
            "s1",
            search_meta={"latency_ms": 210},
            payload_filter={"task": ["a", {"b": 1}]},
            sort_by={"field": "stars", "order": "desc"},
            user_id="u1",
            search_results=[{"object_id": "o1", "rank": 1.5, "meta": {"k": "v"}}, {"object_id": "o2", "rank": None}],
        )
        store.register_session(body)
        got = store.get_session("s1")
        assert got.search_query == "query of s1"
        assert [r.model_dump() for r in got.search_results] == [
            {"object_id": "o1", "rank": 1.5, "meta": {"k": "v"}},
            {"object_id": "o2", "rank": None, "meta": None},
        ]
        assert got.search_meta == {"latency_ms": 210}
        assert got.payload_filter == {"task": ["a", {"b": 1}]}
        assert got.sort_by is not None
        assert got.sort_by.model_dump() == {"field": "stars", "order": "desc"}
        assert (got.user_id, got.created_at, got.is_irrelevant, got.is_payload_search) == ("u1", T0, False, False)

    def test_reregistering_the_same_content_is_a_noop_with_the_same_number(self, store: SessionStore) -> None:
        first = store.register_session(a_session("s1", user_id="u1"))
        assert first.batch_id is not None
        store.register_session(a_session("s2"))
        again = store.register_session(dict(reversed(list(a_session("s1", user_id="u1").items()))))  # key order
        assert again.status == "already_registered"
        assert (again.batch_id, again.session_number) == (first.batch_id, first.session_number)
        assert store.get_batch(first.batch_id).sessions == 2

    def test_reregistering_after_release_answers_the_original_batch(self, store: SessionStore) -> None:
        first = store.register_session(a_session("s1"))
        store.release_batch("r1")
        again = store.register_session(a_session("s1"))
        assert (again.status, again.batch_id, again.session_number) == (
            "already_registered",
            first.batch_id,
            first.session_number,
        )
        assert store.list_batches(status="collecting") == []

    def test_different_content_is_a_conflict_and_the_stored_session_is_kept(self, store: SessionStore) -> None:
        store.register_session(a_session("s1", search_query="original"))
        with pytest.raises(Conflict) as err:
            store.register_session(a_session("s1", search_query="changed"))
        assert err.value.http_status == 409
        assert "'s1'" in err.value.detail
        assert store.get_session("s1").search_query == "original"

    @pytest.mark.parametrize("seconds", [1_700_000_000, 0, 10**11 - 1])
    def test_created_at_in_seconds_is_rejected_saying_seconds(self, store: SessionStore, seconds: int) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(a_session("s1", created_at=seconds))
        assert err.value.http_status == 422
        assert "created_at" in err.value.detail and "seconds" in err.value.detail
        assert err.value.errors[0]["loc"] == ["created_at"]

    @pytest.mark.parametrize(
        ("offset", "words"),
        [(-24 * HOUR - 1, "in the past"), (5 * 60 * 1000 + 1, "in the future")],
        ids=["too-old", "too-far-ahead"],
    )
    def test_created_at_outside_the_window_is_rejected_naming_the_field(
        self, store: SessionStore, offset: int, words: str
    ) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(a_session("s1", created_at=T0 + offset))
        assert err.value.detail.startswith("created_at:")
        assert words in err.value.detail
        assert store.list_batches() == []

    @pytest.mark.parametrize("offset", [-24 * HOUR, 5 * 60 * 1000], ids=["oldest", "newest"])
    def test_created_at_on_the_window_edge_is_accepted(self, store: SessionStore, offset: int) -> None:
        assert store.register_session(a_session("s1", created_at=T0 + offset)).status == "registered"

    def test_window_follows_config(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store(window_back_ms=1000, window_ahead_ms=0)
        with pytest.raises(InvalidInput, match="created_at"):
            store.register_session(a_session("s1", created_at=T0 - 1001))
        with pytest.raises(InvalidInput, match="created_at"):
            store.register_session(a_session("s1", created_at=T0 + 1))
        assert store.register_session(a_session("s1", created_at=T0 - 1000)).status == "registered"

    def test_bulk_import_skips_the_window_but_not_the_unit_check(self, store: SessionStore) -> None:
        assert (
            store.register_session(a_session("old", created_at=T0 - 400 * 24 * HOUR), check_window=False).status
            == "registered"
        )
        with pytest.raises(InvalidInput, match="seconds"):
            store.register_session(a_session("s2", created_at=T0 // 1000), check_window=False)

    @pytest.mark.parametrize("session_id", ["x", "x" * 128], ids=["1-char", "128-chars"])
    def test_session_id_length_within_bounds_is_accepted(self, store: SessionStore, session_id: str) -> None:
        assert store.register_session(a_session(session_id)).session_id == session_id

    @pytest.mark.parametrize("session_id", ["", "x" * 129], ids=["empty", "129-chars"])
    def test_session_id_length_out_of_bounds_is_rejected(self, store: SessionStore, session_id: str) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(a_session(session_id))
        assert err.value.detail.startswith("session_id:")
        assert store.list_batches() == []

    def test_unknown_field_is_rejected_naming_it(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(a_session("s1", search_qurey="typo"))
        assert "search_qurey" in err.value.detail

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("sort_by", {"field": "stars", "order": "sideways"}),
            ("search_results", [{"rank": 1.0}]),
            ("created_at", "yesterday"),
            ("is_irrelevant", "maybe"),
        ],
    )
    def test_a_bad_field_writes_nothing_not_even_a_batch(self, store: SessionStore, field: str, value: Any) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(a_session("s1", **{field: value}))
        assert err.value.detail.startswith(field)
        assert store.list_batches() == []
        assert count_rows(store, "cs_session") == 0
        with pytest.raises(NotFound):
            store.get_session("s1")

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("search_results", [{"object_id": "a", "rank": float("inf")}]),
            ("search_meta", {"score": float("nan")}),
            ("payload_filter", {"task": "a\x00b"}),
            ("search_meta", {"k": "\ud800"}),
            ("search_query", "nul\x00byte"),
            ("created_at", 2**63 + 5),
        ],
        ids=["infinite-rank", "nan-in-json", "nul-in-json", "lone-surrogate", "nul-in-text", "beyond-bigint"],
    )
    def test_a_value_no_backend_can_store_is_rejected_naming_the_field(
        self, store: SessionStore, field: str, value: Any
    ) -> None:
        # The same answer on both backends: SQLite would store NaN/NUL and break every JSON query later.
        with pytest.raises(InvalidInput) as err:
            store.register_session(a_session("s1", **{field: value}), check_window=False)
        assert err.value.detail.startswith(field)
        assert count_rows(store, "cs_session") == 0


# --------------------------------------------------------------------------------------------- push events


class TestPushEvents:
    def test_events_are_stored_and_returned(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        result = store.push_events(
            "s1", [an_event("e1", "a", meta={"clicked_rank": 1}), an_event("e2", "b", event_type="add_to_cart")]
        )
        assert (result.session_id, result.stored, result.duplicates) == ("s1", 2, 0)
        events = store.get_session("s1").events
        assert [(e.event_id, e.object_id, e.event_type, e.meta) for e in events] == [
            ("e1", "a", "click", {"clicked_rank": 1}),
            ("e2", "b", "add_to_cart", None),
        ]

    def test_duplicates_in_one_request_are_counted_not_stored(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        result = store.push_events("s1", [an_event("e1"), an_event("e1"), an_event("e2"), an_event("e1")])
        assert (result.stored, result.duplicates) == (2, 2)
        assert [e.event_id for e in store.get_session("s1").events] == ["e1", "e2"]

    def test_duplicates_across_requests_are_counted_not_stored(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event("e1", "a")])
        result = store.push_events("s1", [an_event("e1", "b"), an_event("e2")])
        assert (result.stored, result.duplicates) == (1, 1)
        assert [(e.event_id, e.object_id) for e in store.get_session("s1").events] == [("e1", "a"), ("e2", "a")]

    def test_same_event_id_in_two_sessions_is_not_a_duplicate(self, store: SessionStore) -> None:
        store.push_events("s1", [an_event("e1")])
        assert store.push_events("s2", [an_event("e1")]).stored == 1

    def test_empty_request_stores_nothing(self, store: SessionStore) -> None:
        result = store.push_events("s1", [])
        assert (result.stored, result.duplicates) == (0, 0)

    def test_events_before_registration_are_kept_and_attached(self, store: SessionStore) -> None:
        assert store.push_events("s1", [an_event("e1", "a"), an_event("e2", "b")]).stored == 2
        with pytest.raises(NotFound):
            store.get_session("s1")
        registered = store.register_session(a_session("s1"))
        assert registered.batch_id is not None
        assert registered.events_attached == 2
        assert [e.event_id for e in store.get_session("s1").events] == ["e1", "e2"]
        page = store.get_batch_sessions(registered.batch_id)
        assert [e.event_id for e in page.sessions[0].events] == ["e1", "e2"]

    def test_events_after_release_are_stored_and_count_as_late(self, store: SessionStore, clock: Clock) -> None:
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event("e1")])
        released = store.release_batch("r1")
        clock.now += 1000
        assert store.push_events("s1", [an_event("e2", created_at=clock.now)]).stored == 1
        assert [e.event_id for e in store.get_session("s1").events] == ["e1", "e2"]
        metrics = store.batch_metrics(released.batch_id)
        assert (metrics.events, metrics.late_events) == (2, 1)

    def test_an_event_arriving_in_the_release_millisecond_but_after_it_is_late(self, store: SessionStore) -> None:
        # The clock does not move: arrival order, not the millisecond, decides lateness.
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event("before")])
        released = store.release_batch("r1")
        store.push_events("s1", [an_event("after")])
        assert store.batch_metrics(released.batch_id).late_events == 1

    @pytest.mark.parametrize(
        ("created_at", "words"),
        [(T0 // 1000, "seconds"), (T0 - 24 * HOUR - 1, "in the past"), (T0 + 5 * 60 * 1000 + 1, "in the future")],
        ids=["seconds", "too-old", "too-far-ahead"],
    )
    def test_a_bad_timestamp_names_its_event_and_nothing_is_stored(
        self, store: SessionStore, created_at: int, words: str
    ) -> None:
        store.register_session(a_session("s1"))
        events = [an_event("e0"), an_event("e1"), an_event("e2", created_at=created_at), an_event("e3")]
        with pytest.raises(InvalidInput) as err:
            store.push_events("s1", events)
        assert err.value.detail.startswith("events.2.created_at:")
        assert words in err.value.detail
        assert store.get_session("s1").events == []
        assert count_rows(store, "cs_event") == 0

    def test_a_bad_field_in_one_event_stores_nothing(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput) as err:
            store.push_events("s1", [an_event("e0"), {"event_id": "e1", "created_at": T0}])
        assert "events.1.object_id" in err.value.detail
        assert count_rows(store, "cs_event") == 0

    def test_unknown_event_field_is_rejected_naming_it(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"events\.0\.objectid"):
            store.push_events("s1", [{**an_event("e0"), "objectid": "a"}])

    def test_bulk_import_of_events_skips_the_window(self, store: SessionStore) -> None:
        old = T0 - 100 * 24 * HOUR
        assert store.push_events("s1", [an_event("e1", created_at=old)], check_window=False).stored == 1
        with pytest.raises(InvalidInput, match="seconds"):
            store.push_events("s1", [an_event("e2", created_at=old // 1000)], check_window=False)


# ------------------------------------------------------------------------------------ irrelevant, get session


class TestMarkIrrelevant:
    def test_marking_is_idempotent(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        first = store.mark_irrelevant("s1")
        second = store.mark_irrelevant("s1")
        assert (first.is_irrelevant, first.changed) == (True, True)
        assert (second.is_irrelevant, second.changed) == (True, False)
        assert store.get_session("s1").is_irrelevant is True

    def test_unknown_session_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound) as err:
            store.mark_irrelevant("nope")
        assert err.value.http_status == 404 and "'nope'" in err.value.detail


class TestGetSession:
    def test_unknown_session_is_not_found(self, store: SessionStore) -> None:
        store.push_events("ghost", [an_event("e1")])  # events alone do not make a session
        with pytest.raises(NotFound, match="'ghost'"):
            store.get_session("ghost")

    def test_events_come_earliest_first_then_in_arrival_order(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event("late", created_at=T0 + 30), an_event("tie-1", created_at=T0 + 10)])
        store.push_events(
            "s1",
            [
                an_event("tie-2", created_at=T0 + 10),
                an_event("first", created_at=T0 + 1),
                an_event("mid", created_at=T0 + 20),
            ],
        )
        expected = ["first", "tie-1", "tie-2", "mid", "late"]
        assert [e.event_id for e in store.get_session("s1").events] == expected
        page = store.get_batch_sessions(store.get_session("s1").batch_id)
        assert [e.event_id for e in page.sessions[0].events] == expected

    def test_events_limit_keeps_the_earliest(self, store: SessionStore) -> None:
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event(f"e{i}", created_at=T0 + 10 - i) for i in range(5)])
        assert [e.event_id for e in store.get_session("s1", events_limit=2).events] == ["e4", "e3"]
        assert store.get_session("s1", events_limit=0).events == []

    @pytest.mark.parametrize("events_limit", [-1, 1001])
    def test_events_limit_out_of_bounds_is_rejected(self, store: SessionStore, events_limit: int) -> None:
        store.register_session(a_session("s1"))
        with pytest.raises(InvalidInput, match=r"^events_limit: must be between 0 and 1000"):
            store.get_session("s1", events_limit=events_limit)

    def test_answer_carries_batch_and_number(self, store: SessionStore) -> None:
        registered = store.register_session(a_session("s1", is_payload_search=True))
        got = store.get_session("s1")
        assert (got.batch_id, got.session_number, got.is_payload_search) == (
            registered.batch_id,
            registered.session_number,
            True,
        )


# ------------------------------------------------------------------------------------------------- bulk


class TestIngestBulk:
    def test_valid_invalid_conflicting_and_duplicate_items_are_each_accounted_for(self, store: SessionStore) -> None:
        store.register_session(a_session("stored"))
        store.push_events("stored", [an_event("old")])
        sessions = [
            a_session("s1"),
            a_session("s2", created_at=T0 // 1000),  # invalid: seconds
            a_session("stored", search_query="other content"),  # conflicts with the stored session
            a_session("s1"),  # same as sessions[0]: already registered
            a_session("s1", search_query="changed"),  # differs from sessions[0] in this request
            a_session("stored", search_query="query of stored"),  # same as stored: already registered
            {"session_id": "s3", "created_at": T0, "typo": 1},  # invalid: unknown field
            a_session("s4"),
        ]
        events = [
            a_bulk_event("s1", "e1"),
            a_bulk_event("s1", "e2", "b"),
            a_bulk_event("s1", "e1"),  # sent twice: duplicate
            a_bulk_event("stored", "old"),  # stored before: duplicate
            a_bulk_event("s4", "e1", created_at=T0 - 48 * HOUR),  # invalid: outside the live window
            {"session_id": "s4", "event_id": "e9"},  # invalid: no object_id
            a_bulk_event("not-yet-registered", "e1"),  # events may precede their session
        ]
        result = store.ingest_bulk(sessions, events)

        assert (result.sessions.registered, result.sessions.already_registered) == (2, 2)
        assert (result.events.stored, result.events.duplicates, result.events.over_limit) == (3, 2, 0)
        assert [(r.item, r.session_id) for r in result.rejected] == [
            ("sessions[1]", "s2"),
            ("sessions[2]", "stored"),
            ("sessions[4]", "s1"),
            ("sessions[6]", "s3"),
            ("events[4]", "s4"),
            ("events[5]", "s4"),
        ]
        reasons = {r.item: r.error for r in result.rejected}
        assert reasons["sessions[1]"].startswith("created_at:")
        assert "different content" in reasons["sessions[2]"]
        assert "registered by sessions[0] of this request" in reasons["sessions[4]"]
        assert reasons["sessions[6]"].startswith("typo:")
        assert reasons["events[4]"].startswith("created_at:") and "past" in reasons["events[4]"]
        assert reasons["events[5]"].startswith("object_id:")
        assert accounted(result) == len(sessions) + len(events)

        assert store.get_session("stored").search_query == "query of stored"
        batch_id = store.get_session("s1").batch_id
        page = store.get_batch_sessions(batch_id, limit=10)
        assert [s.session_id for s in page.sessions] == ["stored", "s1", "s4"]
        assert [e.event_id for e in page.sessions[1].events] == ["e1", "e2"]

    def test_a_retried_request_changes_nothing(self, store: SessionStore) -> None:
        sessions = [a_session(f"s{i}") for i in range(5)]
        events = [a_bulk_event(f"s{i}", f"e{j}") for i in range(5) for j in range(3)]
        first = store.ingest_bulk(sessions, events)
        assert (first.sessions.registered, first.events.stored) == (5, 15)
        batch_id = store.get_session("s0").batch_id
        before = store.get_batch_sessions(batch_id, limit=10).model_dump()

        retry = store.ingest_bulk(sessions, events)
        assert (retry.sessions.registered, retry.sessions.already_registered) == (0, 5)
        assert (retry.events.stored, retry.events.duplicates, retry.rejected) == (0, 15, [])
        assert store.get_batch_sessions(batch_id, limit=10).model_dump() == before
        assert (count_rows(store, "cs_session"), count_rows(store, "cs_event")) == (5, 15)

    def test_sessions_take_numbers_in_request_order_in_one_batch(self, store: SessionStore) -> None:
        store.ingest_bulk([a_session(f"s{i}") for i in (3, 1, 2)])
        got = [store.get_session(f"s{i}") for i in (3, 1, 2)]
        assert len({s.batch_id for s in got}) == 1
        assert [s.session_number for s in got] == sorted(s.session_number for s in got)

    def test_after_a_release_the_next_request_opens_a_new_batch(self, store: SessionStore) -> None:
        store.ingest_bulk([a_session("s1")])
        released = store.release_batch("r1").batch_id
        store.ingest_bulk([a_session("s2")])
        assert store.get_session("s2").batch_id != released
        assert store.get_session("s1").batch_id == released

    def test_too_many_items_is_invalid_naming_the_bound_and_stores_nothing(
        self, make_store: Callable[..., SessionStore]
    ) -> None:
        store = make_store(max_bulk_items=3)
        with pytest.raises(InvalidInput, match=r"max_bulk_items") as err:
            store.ingest_bulk([a_session("s1"), a_session("s2")], [a_bulk_event("s1", "e1"), a_bulk_event("s1", "e2")])
        assert err.value.detail.startswith("items: ")
        assert (count_rows(store, "cs_session"), count_rows(store, "cs_event")) == (0, 0)

    def test_empty_request_is_an_empty_answer(self, store: SessionStore) -> None:
        assert accounted(store.ingest_bulk()) == 0


# --------------------------------------------------------------------------------------- created_at omitted


class TestCreatedAtOmitted:
    def test_session_gets_the_time_of_receipt_and_a_later_retry_is_already_registered(
        self, store: SessionStore, clock: Clock
    ) -> None:
        body = {"session_id": "s1", "search_results": [{"object_id": "a"}]}
        first = store.register_session(body)
        assert store.get_session("s1").created_at == T0
        clock.now += 60_000
        retry = store.register_session(body)
        assert (first.status, retry.status) == ("registered", "already_registered")
        assert store.get_session("s1").created_at == T0

    def test_event_gets_the_time_of_receipt(self, store: SessionStore, clock: Clock) -> None:
        store.register_session(a_session("s1"))
        clock.now += 5
        store.push_events("s1", [{"event_id": "e1", "object_id": "a"}])
        store.ingest_bulk(events=[{"session_id": "s1", "event_id": "e2", "object_id": "a"}])
        assert [e.created_at for e in store.get_session("s1").events] == [T0 + 5, T0 + 5]

    def test_seconds_looking_values_are_still_refused(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"^created_at: .*looks like seconds"):
            store.register_session(a_session("s1", created_at=T0 // 1000))
