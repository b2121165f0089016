"""The session store's behavioural contract (docs/store.md), on SQLite and PostgreSQL.

Every test runs once per backend through the ``store_url`` fixture (a fresh, empty database per test).
Time is a controllable clock injected into :class:`~clickstream.store.SessionStore`, so window checks,
stale claims and late events are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import pytest
import sqlalchemy as sa

from clickstream.store import (
    Conflict,
    InvalidInput,
    NotFound,
    SessionStore,
    StoreConfig,
    create_store_engine,
    now_ms,
)

#: The fixed "now" of the injected clock (2025-06-15, milliseconds since epoch).
T0 = 1_750_000_000_000
HOUR = 3600 * 1000


class _Clock:
    """A clock the test moves by hand: ``clock.now += 1000``."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock(T0)


@pytest.fixture
def make_store(store_url: str, clock: _Clock) -> Iterator[Callable[..., SessionStore]]:
    """Build migrated stores on this test's database (all sharing ``clock``); disposed at the end."""
    made: list[SessionStore] = []

    def _make(**config: Any) -> SessionStore:
        store = SessionStore(create_store_engine(store_url), StoreConfig(**config), clock=clock)
        store.migrate()
        made.append(store)
        return store

    yield _make
    for store in made:
        store.dispose()


@pytest.fixture
def store(make_store: Callable[..., SessionStore]) -> SessionStore:
    return make_store()


def _session(
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


def _event(event_id: str, object_id: str = "a", *, created_at: int = T0, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "object_id": object_id, "created_at": created_at, **fields}


def _count(store: SessionStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def _all_page_numbers(store: SessionStore, batch_id: str, limit: int) -> list[list[int]]:
    """Session numbers of every page, following ``last_number`` until an empty page."""
    pages, after = [], 0
    while True:
        page = store.get_batch_sessions(batch_id, after_number=after, limit=limit)
        if not page.sessions:
            assert page.last_number is None
            return pages
        numbers = [s.session_number for s in page.sessions]
        assert page.last_number == numbers[-1]
        pages.append(numbers)
        after = page.last_number


# ------------------------------------------------------------------------------------------------ register


class TestRegisterSession:
    def test_first_registration_creates_a_collecting_batch(self, store: SessionStore) -> None:
        assert store.list_batches() == []
        result = store.register_session(_session("s1"))
        assert result.status == "registered"
        assert result.session_id == "s1"
        [batch] = store.list_batches()
        assert (batch.batch_id, batch.status) == (result.batch_id, "collecting")
        assert batch.created_at == T0

    def test_sessions_join_the_collecting_batch_with_increasing_unique_numbers(self, store: SessionStore) -> None:
        results = [store.register_session(_session(f"s{i}")) for i in range(5)]
        assert {r.batch_id for r in results} == {results[0].batch_id}
        numbers = [r.session_number for r in results]
        assert numbers == sorted(set(numbers))
        assert len(store.list_batches()) == 1

    def test_registered_content_is_returned_as_sent(self, store: SessionStore) -> None:
        body = _session(
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
        assert got.sort_by.model_dump() == {"field": "stars", "order": "desc"}
        assert (got.user_id, got.created_at, got.is_irrelevant, got.is_payload_search) == ("u1", T0, False, False)

    def test_reregistering_the_same_content_is_a_noop_with_the_same_number(self, store: SessionStore) -> None:
        first = store.register_session(_session("s1", user_id="u1"))
        store.register_session(_session("s2"))
        again = store.register_session(dict(reversed(list(_session("s1", user_id="u1").items()))))  # key order
        assert again.status == "already_registered"
        assert (again.batch_id, again.session_number) == (first.batch_id, first.session_number)
        assert store.get_batch(first.batch_id).sessions == 2

    def test_reregistering_after_release_answers_the_original_batch(self, store: SessionStore) -> None:
        first = store.register_session(_session("s1"))
        store.release_batch("r1")
        again = store.register_session(_session("s1"))
        assert (again.status, again.batch_id, again.session_number) == (
            "already_registered",
            first.batch_id,
            first.session_number,
        )
        assert store.list_batches(status="collecting") == []

    def test_different_content_is_a_conflict_and_the_stored_session_is_kept(self, store: SessionStore) -> None:
        store.register_session(_session("s1", search_query="original"))
        with pytest.raises(Conflict) as err:
            store.register_session(_session("s1", search_query="changed"))
        assert err.value.http_status == 409
        assert "'s1'" in err.value.detail
        assert store.get_session("s1").search_query == "original"

    @pytest.mark.parametrize("seconds", [1_700_000_000, 0, 10**11 - 1])
    def test_created_at_in_seconds_is_rejected_saying_seconds(self, store: SessionStore, seconds: int) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(_session("s1", created_at=seconds))
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
            store.register_session(_session("s1", created_at=T0 + offset))
        assert err.value.detail.startswith("created_at:")
        assert words in err.value.detail
        assert store.list_batches() == []

    @pytest.mark.parametrize("offset", [-24 * HOUR, 5 * 60 * 1000], ids=["oldest", "newest"])
    def test_created_at_on_the_window_edge_is_accepted(self, store: SessionStore, offset: int) -> None:
        assert store.register_session(_session("s1", created_at=T0 + offset)).status == "registered"

    def test_window_follows_config(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store(window_back_ms=1000, window_ahead_ms=0)
        with pytest.raises(InvalidInput, match="created_at"):
            store.register_session(_session("s1", created_at=T0 - 1001))
        with pytest.raises(InvalidInput, match="created_at"):
            store.register_session(_session("s1", created_at=T0 + 1))
        assert store.register_session(_session("s1", created_at=T0 - 1000)).status == "registered"

    def test_bulk_import_skips_the_window_but_not_the_unit_check(self, store: SessionStore) -> None:
        assert (
            store.register_session(_session("old", created_at=T0 - 400 * 24 * HOUR), check_window=False).status
            == "registered"
        )
        with pytest.raises(InvalidInput, match="seconds"):
            store.register_session(_session("s2", created_at=T0 // 1000), check_window=False)

    @pytest.mark.parametrize("session_id", ["x", "x" * 128], ids=["1-char", "128-chars"])
    def test_session_id_length_within_bounds_is_accepted(self, store: SessionStore, session_id: str) -> None:
        assert store.register_session(_session(session_id)).session_id == session_id

    @pytest.mark.parametrize("session_id", ["", "x" * 129], ids=["empty", "129-chars"])
    def test_session_id_length_out_of_bounds_is_rejected(self, store: SessionStore, session_id: str) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(_session(session_id))
        assert err.value.detail.startswith("session_id:")
        assert store.list_batches() == []

    def test_unknown_field_is_rejected_naming_it(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput) as err:
            store.register_session(_session("s1", search_qurey="typo"))
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
            store.register_session(_session("s1", **{field: value}))
        assert err.value.detail.startswith(field)
        assert store.list_batches() == []
        assert _count(store, "cs_session") == 0
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
            store.register_session(_session("s1", **{field: value}), check_window=False)
        assert err.value.detail.startswith(field)
        assert _count(store, "cs_session") == 0


# --------------------------------------------------------------------------------------------- push events


class TestPushEvents:
    def test_events_are_stored_and_returned(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        result = store.push_events(
            "s1", [_event("e1", "a", meta={"clicked_rank": 1}), _event("e2", "b", event_type="add_to_cart")]
        )
        assert (result.session_id, result.stored, result.duplicates) == ("s1", 2, 0)
        events = store.get_session("s1").events
        assert [(e.event_id, e.object_id, e.event_type, e.meta) for e in events] == [
            ("e1", "a", "click", {"clicked_rank": 1}),
            ("e2", "b", "add_to_cart", None),
        ]

    def test_duplicates_in_one_request_are_counted_not_stored(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        result = store.push_events("s1", [_event("e1"), _event("e1"), _event("e2"), _event("e1")])
        assert (result.stored, result.duplicates) == (2, 2)
        assert [e.event_id for e in store.get_session("s1").events] == ["e1", "e2"]

    def test_duplicates_across_requests_are_counted_not_stored(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [_event("e1", "a")])
        result = store.push_events("s1", [_event("e1", "b"), _event("e2")])
        assert (result.stored, result.duplicates) == (1, 1)
        assert [(e.event_id, e.object_id) for e in store.get_session("s1").events] == [("e1", "a"), ("e2", "a")]

    def test_same_event_id_in_two_sessions_is_not_a_duplicate(self, store: SessionStore) -> None:
        store.push_events("s1", [_event("e1")])
        assert store.push_events("s2", [_event("e1")]).stored == 1

    def test_empty_request_stores_nothing(self, store: SessionStore) -> None:
        result = store.push_events("s1", [])
        assert (result.stored, result.duplicates) == (0, 0)

    def test_events_before_registration_are_kept_and_attached(self, store: SessionStore) -> None:
        assert store.push_events("s1", [_event("e1", "a"), _event("e2", "b")]).stored == 2
        with pytest.raises(NotFound):
            store.get_session("s1")
        registered = store.register_session(_session("s1"))
        assert registered.events_attached == 2
        assert [e.event_id for e in store.get_session("s1").events] == ["e1", "e2"]
        page = store.get_batch_sessions(registered.batch_id)
        assert [e.event_id for e in page.sessions[0].events] == ["e1", "e2"]

    def test_events_after_release_are_stored_and_count_as_late(self, store: SessionStore, clock: _Clock) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [_event("e1")])
        released = store.release_batch("r1")
        clock.now += 1000
        assert store.push_events("s1", [_event("e2", created_at=clock.now)]).stored == 1
        assert [e.event_id for e in store.get_session("s1").events] == ["e1", "e2"]
        metrics = store.batch_metrics(released.batch_id)
        assert (metrics.events, metrics.late_events) == (2, 1)

    def test_an_event_arriving_in_the_release_millisecond_but_after_it_is_late(self, store: SessionStore) -> None:
        # The clock does not move: arrival order, not the millisecond, decides lateness.
        store.register_session(_session("s1"))
        store.push_events("s1", [_event("before")])
        released = store.release_batch("r1")
        store.push_events("s1", [_event("after")])
        assert store.batch_metrics(released.batch_id).late_events == 1

    @pytest.mark.parametrize(
        ("created_at", "words"),
        [(T0 // 1000, "seconds"), (T0 - 24 * HOUR - 1, "in the past"), (T0 + 5 * 60 * 1000 + 1, "in the future")],
        ids=["seconds", "too-old", "too-far-ahead"],
    )
    def test_a_bad_timestamp_names_its_event_and_nothing_is_stored(
        self, store: SessionStore, created_at: int, words: str
    ) -> None:
        store.register_session(_session("s1"))
        events = [_event("e0"), _event("e1"), _event("e2", created_at=created_at), _event("e3")]
        with pytest.raises(InvalidInput) as err:
            store.push_events("s1", events)
        assert err.value.detail.startswith("events.2.created_at:")
        assert words in err.value.detail
        assert store.get_session("s1").events == []
        assert _count(store, "cs_event") == 0

    def test_a_bad_field_in_one_event_stores_nothing(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput) as err:
            store.push_events("s1", [_event("e0"), {"event_id": "e1", "created_at": T0}])
        assert "events.1.object_id" in err.value.detail
        assert _count(store, "cs_event") == 0

    def test_unknown_event_field_is_rejected_naming_it(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"events\.0\.objectid"):
            store.push_events("s1", [{**_event("e0"), "objectid": "a"}])

    def test_bulk_import_of_events_skips_the_window(self, store: SessionStore) -> None:
        old = T0 - 100 * 24 * HOUR
        assert store.push_events("s1", [_event("e1", created_at=old)], check_window=False).stored == 1
        with pytest.raises(InvalidInput, match="seconds"):
            store.push_events("s1", [_event("e2", created_at=old // 1000)], check_window=False)


# ------------------------------------------------------------------------------------ irrelevant, get session


class TestMarkIrrelevant:
    def test_marking_is_idempotent(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
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
        store.push_events("ghost", [_event("e1")])  # events alone do not make a session
        with pytest.raises(NotFound, match="'ghost'"):
            store.get_session("ghost")

    def test_events_come_earliest_first_then_in_arrival_order(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [_event("late", created_at=T0 + 30), _event("tie-1", created_at=T0 + 10)])
        store.push_events(
            "s1",
            [
                _event("tie-2", created_at=T0 + 10),
                _event("first", created_at=T0 + 1),
                _event("mid", created_at=T0 + 20),
            ],
        )
        expected = ["first", "tie-1", "tie-2", "mid", "late"]
        assert [e.event_id for e in store.get_session("s1").events] == expected
        page = store.get_batch_sessions(store.get_session("s1").batch_id)
        assert [e.event_id for e in page.sessions[0].events] == expected

    def test_events_limit_keeps_the_earliest(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [_event(f"e{i}", created_at=T0 + 10 - i) for i in range(5)])
        assert [e.event_id for e in store.get_session("s1", events_limit=2).events] == ["e4", "e3"]
        assert store.get_session("s1", events_limit=0).events == []

    @pytest.mark.parametrize("events_limit", [-1, 1001])
    def test_events_limit_out_of_bounds_is_rejected(self, store: SessionStore, events_limit: int) -> None:
        store.register_session(_session("s1"))
        with pytest.raises(InvalidInput, match=r"^events_limit: must be between 0 and 1000"):
            store.get_session("s1", events_limit=events_limit)

    def test_answer_carries_batch_and_number(self, store: SessionStore) -> None:
        registered = store.register_session(_session("s1", is_payload_search=True))
        got = store.get_session("s1")
        assert (got.batch_id, got.session_number, got.is_payload_search) == (
            registered.batch_id,
            registered.session_number,
            True,
        )


# ------------------------------------------------------------------------------------------ improvement marks


class TestUseForImprovement:
    def test_unknown_session_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.use_for_improvement("nope")

    def test_session_with_an_event_on_a_result_is_marked_once(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [_event("e1", "b")])
        first = store.use_for_improvement("s1")
        assert first.model_dump() == {"session_id": "s1", "status": "marked", "reason": None}
        mark = store.get_improvement_mark("s1")
        assert (mark.status, mark.attempts, mark.created_at) == ("pending", 0, T0)
        again = store.use_for_improvement("s1")
        assert again.model_dump() == {"session_id": "s1", "status": "already_marked", "reason": None}
        assert _count(store, "cs_improvement_mark") == 1

    def test_payload_search_is_skipped_and_nothing_written(self, store: SessionStore) -> None:
        store.register_session(_session("s1", is_payload_search=True))
        store.push_events("s1", [_event("e1", "a")])
        result = store.use_for_improvement("s1")
        assert result.model_dump() == {"session_id": "s1", "status": "skipped", "reason": "payload_search"}
        with pytest.raises(NotFound):
            store.get_improvement_mark("s1")

    def test_session_without_events_is_skipped_and_nothing_written(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        result = store.use_for_improvement("s1")
        assert result.model_dump() == {"session_id": "s1", "status": "skipped", "reason": "no_events"}
        assert _count(store, "cs_improvement_mark") == 0

    def test_event_on_an_object_not_among_the_results_does_not_make_it_eligible(self, store: SessionStore) -> None:
        store.register_session(_session("s1", results=("a", "b")))
        store.push_events("s1", [_event("e1", "zzz"), _event("e2", "a-prefix-of-nothing")])
        assert store.use_for_improvement("s1").reason == "no_events"
        assert _count(store, "cs_improvement_mark") == 0

    def test_irrelevant_session_without_events_is_eligible(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.mark_irrelevant("s1")
        assert store.use_for_improvement("s1").status == "marked"

    def test_irrelevant_payload_search_is_still_skipped(self, store: SessionStore) -> None:
        store.register_session(_session("s1", is_payload_search=True))
        store.mark_irrelevant("s1")
        assert store.use_for_improvement("s1").reason == "payload_search"

    def test_many_sessions_at_once_are_counted_per_outcome(self, store: SessionStore) -> None:
        store.register_session(_session("good"))
        store.push_events("good", [_event("e1", "a")])
        store.register_session(_session("payload", is_payload_search=True))
        store.register_session(_session("silent"))
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
        batch_id = store.register_session(_session("clicked")).batch_id
        store.push_events("clicked", [_event("e1", "b")])
        store.register_session(_session("irrelevant"))
        store.mark_irrelevant("irrelevant")
        store.register_session(_session("payload", is_payload_search=True))
        store.push_events("payload", [_event("e1", "a")])
        store.register_session(_session("off-results"))
        store.push_events("off-results", [_event("e1", "zzz")])
        store.register_session(_session("silent"))
        store.register_session(_session("premarked"))
        store.push_events("premarked", [_event("e1", "c")])
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

    def test_only_the_given_batch_is_marked(self, store: SessionStore, clock: _Clock) -> None:
        first = store.register_session(_session("old")).batch_id
        store.push_events("old", [_event("e1")])
        store.release_batch("r1")
        clock.now += 1
        store.register_session(_session("new"))
        store.push_events("new", [_event("e1")])
        assert store.mark_batch_for_improvement(first).marked == 1
        with pytest.raises(NotFound):
            store.get_improvement_mark("new")

    def test_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.mark_batch_for_improvement("nope")


class TestImprovementQueue:
    def _marked(self, store: SessionStore, clock: _Clock, *session_ids: str) -> None:
        for sid in session_ids:
            store.register_session(_session(sid))
            store.push_events(sid, [_event("e1")])
            store.use_for_improvement(sid)
            clock.now += 1

    def test_claim_hands_out_pending_marks_in_order_and_moves_them_to_processing(
        self, store: SessionStore, clock: _Clock
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

    def test_complete_makes_a_mark_done(self, store: SessionStore, clock: _Clock) -> None:
        self._marked(store, clock, "s1")
        store.claim_improvement_marks()
        done = store.complete_improvement_mark("s1")
        assert (done.status, done.attempts, done.last_error) == ("done", 1, None)
        assert store.claim_improvement_marks() == []

    def test_fail_returns_to_pending_then_fails_for_good_after_max_attempts(
        self, make_store: Callable[..., SessionStore], clock: _Clock
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
        self, store: SessionStore, clock: _Clock, operation: str
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
        self, make_store: Callable[..., SessionStore], clock: _Clock
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
        self, make_store: Callable[..., SessionStore], clock: _Clock, operation: str
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
        self, make_store: Callable[..., SessionStore], clock: _Clock
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


# ------------------------------------------------------------------------------------------------ batch pages


class TestGetBatchSessions:
    def test_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound) as err:
            store.get_batch_sessions("batch-typo")
        assert err.value.http_status == 404 and "'batch-typo'" in err.value.detail

    def test_page_has_the_api_shape(self, store: SessionStore) -> None:
        registered = store.register_session(
            _session(
                "s1",
                user_id="u1",
                search_meta={"latency_ms": 3},
                payload_filter={"task": "x"},
                sort_by={"field": "stars", "order": "asc"},
            )
        )
        store.push_events("s1", [_event("e1", meta={"clicked_rank": 1})])
        page = store.get_batch_sessions(registered.batch_id).model_dump()
        assert page["batch_id"] == registered.batch_id
        assert page["last_number"] == registered.session_number
        [session] = page["sessions"]
        assert set(session) == {
            "session_number",
            "session_id",
            "search_query",
            "search_results",
            "search_meta",
            "payload_filter",
            "sort_by",
            "user_id",
            "created_at",
            "is_irrelevant",
            "events",
        }
        assert session["events"] == [
            {"event_id": "e1", "object_id": "a", "event_type": "click", "created_at": T0, "meta": {"clicked_rank": 1}}
        ]

    @pytest.mark.parametrize("limit", [1, 3, 7, 50])
    def test_keyset_paging_visits_every_session_once_in_increasing_order(self, store: SessionStore, limit: int) -> None:
        numbers = [store.register_session(_session(f"s{i}")).session_number for i in range(7)]
        batch_id = store.get_session("s0").batch_id
        pages = _all_page_numbers(store, batch_id, limit)
        flat = [n for page in pages for n in page]
        assert flat == sorted(numbers)
        assert all(len(page) <= limit for page in pages)

    def test_paging_skips_other_batches_sessions(self, store: SessionStore, clock: _Clock) -> None:
        first = store.register_session(_session("a1")).batch_id
        store.register_session(_session("a2"))
        store.release_batch("r1")
        clock.now += 1
        store.register_session(_session("b1"))
        assert [s.session_id for s in store.get_batch_sessions(first, limit=10).sessions] == ["a1", "a2"]

    def test_page_after_the_last_session_is_empty_with_null_last_number(self, store: SessionStore) -> None:
        registered = store.register_session(_session("s1"))
        page = store.get_batch_sessions(registered.batch_id, after_number=registered.session_number)
        assert (page.sessions, page.last_number) == ([], None)

    def test_events_limit_keeps_the_earliest_events(self, store: SessionStore) -> None:
        batch_id = store.register_session(_session("s1")).batch_id
        store.push_events("s1", [_event(f"e{i}", created_at=T0 + 100 - i) for i in range(10)])
        [session] = store.get_batch_sessions(batch_id, events_limit=3).sessions
        assert [e.event_id for e in session.events] == ["e9", "e8", "e7"]

    def test_events_limit_zero_gives_sessions_without_events(self, store: SessionStore) -> None:
        batch_id = store.register_session(_session("s1")).batch_id
        store.push_events("s1", [_event("e1")])
        page = store.get_batch_sessions(batch_id, events_limit=0)
        assert [(s.session_id, s.events) for s in page.sessions] == [("s1", [])]

    @pytest.mark.parametrize(
        ("params", "field", "bound"),
        [
            ({"after_number": -1}, "after_number", ">= 0"),
            ({"limit": 0}, "limit", "between 1 and 1000"),
            ({"limit": 1001}, "limit", "between 1 and 1000"),
            ({"events_limit": -1}, "events_limit", "between 0 and 1000"),
            ({"events_limit": 1001}, "events_limit", "between 0 and 1000"),
        ],
        ids=["after-negative", "limit-zero", "limit-too-big", "events-negative", "events-too-big"],
    )
    def test_out_of_bounds_parameters_are_rejected_with_the_bound(
        self, store: SessionStore, params: dict[str, int], field: str, bound: str
    ) -> None:
        batch_id = store.register_session(_session("s1")).batch_id
        with pytest.raises(InvalidInput) as err:
            store.get_batch_sessions(batch_id, **params)
        assert err.value.http_status == 422
        assert err.value.detail.startswith(f"{field}:") and bound in err.value.detail

    def test_bounds_follow_config(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store(max_page=5, max_events=2)
        batch_id = store.register_session(_session("s1")).batch_id
        assert store.get_batch_sessions(batch_id, limit=5, events_limit=2).last_number is not None
        with pytest.raises(InvalidInput, match=r"limit: must be between 1 and 5"):
            store.get_batch_sessions(batch_id, limit=6)
        with pytest.raises(InvalidInput, match=r"events_limit: must be between 0 and 2"):
            store.get_batch_sessions(batch_id, limit=1, events_limit=3)


class TestIterBatchPages:
    def _seed(self, store: SessionStore, sessions: int = 9, events: int = 3) -> str:
        for i in range(sessions):
            store.register_session(_session(f"s{i}"))
            store.push_events(f"s{i}", [_event(f"e{j}", created_at=T0 + j) for j in range(events)])
        return store.release_batch("r1").batch_id

    def test_every_session_comes_once_with_all_its_events(self, store: SessionStore) -> None:
        batch_id = store.register_session(_session("big")).batch_id
        store.push_events("big", [_event(f"e{j:04d}", created_at=T0 + j) for j in range(1500)])
        for i in range(6):
            store.register_session(_session(f"s{i}"))
        pages = list(store.iter_batch_pages(batch_id, page_size=4))
        assert [len(p) for p in pages] == [4, 3]
        sessions = [s for page in pages for s in page]
        assert [s["session_id"] for s in sessions] == ["big", *(f"s{i}" for i in range(6))]
        assert [e["event_id"] for e in sessions[0]["events"]] == [f"e{j:04d}" for j in range(1500)]
        assert all(s["events"] == [] for s in sessions[1:])

    def test_shards_partition_the_batch_exactly(self, store: SessionStore) -> None:
        batch_id = self._seed(store)
        info = store.get_batch(batch_id)
        numbers = [s.session_number for s in store.get_batch_sessions(batch_id, limit=100).sessions]
        cuts = [0, numbers[2], numbers[5], info.max_number]
        seen = []
        for after, until in pairwise(cuts):
            shard = [
                s
                for page in store.iter_batch_pages(batch_id, page_size=2, after_number=after, until_number=until)
                for s in page
            ]
            assert all(after < s["session_number"] <= until for s in shard)
            seen.extend(s["session_number"] for s in shard)
        assert seen == numbers

    def test_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound):
            list(store.iter_batch_pages("nope"))


# ---------------------------------------------------------------------------------------------------- release


class TestReleaseBatch:
    def test_release_answers_release_id_batch_and_time(self, store: SessionStore, clock: _Clock) -> None:
        batch_id = store.register_session(_session("s1")).batch_id
        clock.now += 5
        result = store.release_batch("release-v1")
        assert result.model_dump() == {"release_id": "release-v1", "batch_id": batch_id, "released_at": T0 + 5}
        info = store.get_batch(batch_id)
        assert (info.status, info.release_id, info.released_at) == ("released", "release-v1", T0 + 5)

    def test_retried_release_id_answers_the_same_even_after_a_new_batch_started(
        self, store: SessionStore, clock: _Clock
    ) -> None:
        store.register_session(_session("s1"))
        first = store.release_batch("r1")
        clock.now += 10
        new_batch = store.register_session(_session("s2")).batch_id
        assert new_batch != first.batch_id
        assert store.release_batch("r1") == first
        assert store.get_batch(new_batch).status == "collecting"

    def test_a_second_release_id_releases_the_new_batch(self, store: SessionStore, clock: _Clock) -> None:
        store.register_session(_session("s1"))
        first = store.release_batch("r1")
        clock.now += 10
        new_batch = store.register_session(_session("s2")).batch_id
        second = store.release_batch("r2")
        assert (second.batch_id, second.released_at) == (new_batch, T0 + 10)
        assert store.release_batch("r1") == first

    def test_no_collecting_batch_and_unknown_release_id_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="no collecting batch"):
            store.release_batch("r1")
        store.register_session(_session("s1"))
        store.release_batch("r1")
        with pytest.raises(NotFound, match="no collecting batch") as err:
            store.release_batch("r2")
        assert err.value.http_status == 404

    def test_registrations_after_release_go_to_a_new_batch(self, store: SessionStore, clock: _Clock) -> None:
        old = store.register_session(_session("s1")).batch_id
        store.release_batch("r1")
        clock.now += 1
        new = store.register_session(_session("s2"))
        assert new.batch_id != old
        assert store.get_batch(old).sessions == 1
        assert [b.batch_id for b in store.list_batches()] == [new.batch_id, old]

    @pytest.mark.parametrize("release_id", ["", "r" * 513], ids=["empty", "513-chars"])
    def test_release_id_length_is_bounded(self, store: SessionStore, release_id: str) -> None:
        store.register_session(_session("s1"))
        with pytest.raises(InvalidInput) as err:
            store.release_batch(release_id)
        assert err.value.detail.startswith("release_id:")
        assert store.list_batches()[0].status == "collecting"

    def test_release_id_of_512_chars_is_accepted(self, store: SessionStore) -> None:
        # Room for the operator's default "<dag_id>/<run_id>" (Airflow allows run ids of 250 chars).
        store.register_session(_session("s1"))
        assert store.release_batch("r" * 512).release_id == "r" * 512


# ---------------------------------------------------------------------------------------------------- metrics


class TestBatchMetrics:
    def test_metrics_of_a_small_batch_match_a_hand_computation(self, store: SessionStore, clock: _Clock) -> None:
        # s1: results a,b,c; first click on b (position 2, RR 1/2), later click on a  -> 2 clicks
        # s2: results a,b,c; a "view" on a (not a click), a click on c (position 3, RR 1/3)
        # s3: no events, marked irrelevant                                             -> RR 0
        # s4: results a; its only click is on x, which was not shown                   -> clicked, RR 0
        # s5: no events before release; one late click on b (position 2, RR 1/2)
        store.register_session(_session("s1"))
        store.push_events("s1", [_event("c2", "a", created_at=T0 + 20), _event("c1", "b", created_at=T0 + 10)])
        store.register_session(_session("s2"))
        store.push_events(
            "s2", [_event("v1", "a", event_type="view", created_at=T0 + 1), _event("c1", "c", created_at=T0 + 5)]
        )
        store.register_session(_session("s3"))
        store.mark_irrelevant("s3")
        store.register_session(_session("s4", results=("a",)))
        store.push_events("s4", [_event("c1", "x")])
        store.register_session(_session("s5", results=("a", "b")))

        batch_id = store.release_batch("r1").batch_id
        before = store.batch_metrics(batch_id)
        assert before.model_dump() == {
            "batch_id": batch_id,
            "sessions": 5,
            "events": 5,
            "clicks": 4,
            "sessions_with_click": 3,
            "click_through_rate": 3 / 5,
            "mean_reciprocal_rank": round((1 / 2 + 1 / 3) / 5, 6),
            "no_click_rate": 2 / 5,
            "irrelevant_rate": 1 / 5,
            "late_events": 0,
        }

        clock.now += 1000
        store.push_events("s5", [_event("c1", "b", created_at=clock.now)])
        after = store.batch_metrics(batch_id)
        assert (after.events, after.clicks, after.sessions_with_click, after.late_events) == (6, 5, 4, 1)
        assert after.click_through_rate == 4 / 5
        assert after.mean_reciprocal_rank == round((1 / 2 + 1 / 3 + 1 / 2) / 5, 6)
        assert after.no_click_rate == 1 / 5

    def test_a_batch_emptied_by_erasure_has_no_rates(self, store: SessionStore) -> None:
        batch_id = store.register_session(_session("s1", user_id="u1")).batch_id
        store.erase_user("u1")
        metrics = store.batch_metrics(batch_id)
        assert (metrics.sessions, metrics.events, metrics.click_through_rate, metrics.mean_reciprocal_rank) == (
            0,
            0,
            None,
            None,
        )

    def test_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.batch_metrics("nope")


# ----------------------------------------------------------------------------------------------------- erasure


class TestEraseUser:
    def test_erases_the_users_sessions_events_and_marks_only(self, store: SessionStore, clock: _Clock) -> None:
        first = store.register_session(_session("u1-a", user_id="u1")).batch_id
        store.push_events("u1-a", [_event("e1"), _event("e2")])
        store.use_for_improvement("u1-a")
        store.register_session(_session("u2-a", user_id="u2"))
        store.push_events("u2-a", [_event("e1")])
        store.use_for_improvement("u2-a")
        store.release_batch("r1")
        clock.now += 1
        second = store.register_session(_session("u1-b", user_id="u1")).batch_id
        store.push_events("u1-b", [_event("e1")])
        store.register_session(_session("anon"))

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
        assert _count(store, "cs_improvement_mark") == 1
        kept = store.get_session("u2-a")
        assert (kept.user_id, len(kept.events)) == ("u2", 1)
        assert store.get_improvement_mark("u2-a").status == "pending"
        assert store.get_session("anon").user_id is None
        assert [s.session_id for s in store.get_batch_sessions(first).sessions] == ["u2-a"]

    def test_unknown_user_erases_nothing(self, store: SessionStore) -> None:
        store.register_session(_session("s1", user_id="u1"))
        result = store.erase_user("nobody")
        assert (result.sessions, result.events, result.marks, result.batches) == (0, 0, 0, [])
        assert store.get_session("s1").user_id == "u1"

    def test_empty_user_id_is_rejected(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match="user_id"):
            store.erase_user("")


# ----------------------------------------------------------------------------------------------------- batches


class TestBatches:
    def test_list_batches_newest_first_with_status_filter(self, store: SessionStore, clock: _Clock) -> None:
        old = store.register_session(_session("s1")).batch_id
        store.release_batch("r1")
        clock.now += 1
        new = store.register_session(_session("s2")).batch_id
        assert [b.batch_id for b in store.list_batches()] == [new, old]
        assert [b.batch_id for b in store.list_batches(status="released")] == [old]
        assert [b.batch_id for b in store.list_batches(status="collecting")] == [new]
        assert [b.batch_id for b in store.list_batches(limit=1)] == [new]

    @pytest.mark.parametrize("limit", [0, -1])
    def test_list_batches_limit_must_be_positive(self, store: SessionStore, limit: int) -> None:
        with pytest.raises(InvalidInput, match=r"^limit: must be >= 1"):
            store.list_batches(limit=limit)

    def test_batch_ids_sort_by_creation_even_within_one_millisecond(self, store: SessionStore) -> None:
        created = []
        for i in range(6):  # the clock never moves
            created.append(store.register_session(_session(f"s{i}")).batch_id)
            store.release_batch(f"r{i}")
        assert sorted(created) == created
        assert [b.batch_id for b in store.list_batches()] == created[::-1]

    def test_list_batches_rejects_an_unknown_status(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match="status"):
            store.list_batches(status="open")

    def test_get_batch_reports_status_and_number_range(self, store: SessionStore) -> None:
        numbers = [store.register_session(_session(f"s{i}")).session_number for i in range(3)]
        info = store.get_batch(store.get_session("s0").batch_id)
        assert (info.status, info.sessions, info.min_number, info.max_number) == (
            "collecting",
            3,
            min(numbers),
            max(numbers),
        )
        assert (info.release_id, info.released_at) == (None, None)

    def test_get_batch_of_unknown_id_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.get_batch("nope")


class TestFromUrl:
    def test_from_url_migrates_and_serves_with_the_real_clock(self, store_url: str) -> None:
        store = SessionStore.from_url(store_url)
        try:
            assert store.migrate() == [1, 2, 3, 4]
            now = now_ms()
            registered = store.register_session(_session("s1", created_at=now))
            assert abs(store.get_batch(registered.batch_id).created_at - now) < 60_000
        finally:
            store.dispose()


# ------------------------------------------------------------------------------------------------- bulk


def _bulk_event(session_id: str, event_id: str, object_id: str = "a", **fields: Any) -> dict[str, Any]:
    return {"session_id": session_id, **_event(event_id, object_id, **fields)}


def _accounted(result: Any) -> int:
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


class TestIngestBulk:
    def test_valid_invalid_conflicting_and_duplicate_items_are_each_accounted_for(self, store: SessionStore) -> None:
        store.register_session(_session("stored"))
        store.push_events("stored", [_event("old")])
        sessions = [
            _session("s1"),
            _session("s2", created_at=T0 // 1000),  # invalid: seconds
            _session("stored", search_query="other content"),  # conflicts with the stored session
            _session("s1"),  # same as sessions[0]: already registered
            _session("s1", search_query="changed"),  # differs from sessions[0] in this request
            _session("stored", search_query="query of stored"),  # same as stored: already registered
            {"session_id": "s3", "created_at": T0, "typo": 1},  # invalid: unknown field
            _session("s4"),
        ]
        events = [
            _bulk_event("s1", "e1"),
            _bulk_event("s1", "e2", "b"),
            _bulk_event("s1", "e1"),  # sent twice: duplicate
            _bulk_event("stored", "old"),  # stored before: duplicate
            _bulk_event("s4", "e1", created_at=T0 - 48 * HOUR),  # invalid: outside the live window
            {"session_id": "s4", "event_id": "e9"},  # invalid: no object_id
            _bulk_event("not-yet-registered", "e1"),  # events may precede their session
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
        assert _accounted(result) == len(sessions) + len(events)

        assert store.get_session("stored").search_query == "query of stored"
        batch_id = store.get_session("s1").batch_id
        page = store.get_batch_sessions(batch_id, limit=10)
        assert [s.session_id for s in page.sessions] == ["stored", "s1", "s4"]
        assert [e.event_id for e in page.sessions[1].events] == ["e1", "e2"]

    def test_a_retried_request_changes_nothing(self, store: SessionStore) -> None:
        sessions = [_session(f"s{i}") for i in range(5)]
        events = [_bulk_event(f"s{i}", f"e{j}") for i in range(5) for j in range(3)]
        first = store.ingest_bulk(sessions, events)
        assert (first.sessions.registered, first.events.stored) == (5, 15)
        batch_id = store.get_session("s0").batch_id
        before = store.get_batch_sessions(batch_id, limit=10).model_dump()

        retry = store.ingest_bulk(sessions, events)
        assert (retry.sessions.registered, retry.sessions.already_registered) == (0, 5)
        assert (retry.events.stored, retry.events.duplicates, retry.rejected) == (0, 15, [])
        assert store.get_batch_sessions(batch_id, limit=10).model_dump() == before
        assert (_count(store, "cs_session"), _count(store, "cs_event")) == (5, 15)

    def test_sessions_take_numbers_in_request_order_in_one_batch(self, store: SessionStore) -> None:
        store.ingest_bulk([_session(f"s{i}") for i in (3, 1, 2)])
        got = [store.get_session(f"s{i}") for i in (3, 1, 2)]
        assert len({s.batch_id for s in got}) == 1
        assert [s.session_number for s in got] == sorted(s.session_number for s in got)

    def test_after_a_release_the_next_request_opens_a_new_batch(self, store: SessionStore) -> None:
        store.ingest_bulk([_session("s1")])
        released = store.release_batch("r1").batch_id
        store.ingest_bulk([_session("s2")])
        assert store.get_session("s2").batch_id != released
        assert store.get_session("s1").batch_id == released

    def test_too_many_items_is_invalid_naming_the_bound_and_stores_nothing(
        self, make_store: Callable[..., SessionStore]
    ) -> None:
        store = make_store(max_bulk_items=3)
        with pytest.raises(InvalidInput, match=r"max_bulk_items") as err:
            store.ingest_bulk([_session("s1"), _session("s2")], [_bulk_event("s1", "e1"), _bulk_event("s1", "e2")])
        assert err.value.detail.startswith("items: ")
        assert (_count(store, "cs_session"), _count(store, "cs_event")) == (0, 0)

    def test_empty_request_is_an_empty_answer(self, store: SessionStore) -> None:
        assert _accounted(store.ingest_bulk()) == 0


# ------------------------------------------------------------------------------------------------ limits


class TestLimits:
    @pytest.fixture
    def small(self, make_store: Callable[..., SessionStore]) -> SessionStore:
        return make_store(max_results=3, max_json_bytes=100, max_events_per_session=3)

    def test_too_many_results_is_invalid_naming_field_and_bound(self, small: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"^search_results: 4 results; at most 3 .*max_results"):
            small.register_session(_session("s1", results=("a", "b", "c", "d")))
        small.register_session(_session("s1", results=("a", "b", "c")))
        assert _count(small, "cs_session") == 1

    @pytest.mark.parametrize(
        "field, body",
        [
            ("search_meta", {"search_meta": {"k": "x" * 100}}),
            ("payload_filter", {"payload_filter": {"k": "x" * 100}}),
            (
                "search_results.1.meta",
                {"search_results": [{"object_id": "a"}, {"object_id": "b", "meta": {"k": "x" * 100}}]},
            ),
            ("search_meta", {"search_meta": {"k": "é" * 50}}),  # 50 characters, but over 100 bytes in UTF-8
        ],
    )
    def test_oversized_json_object_is_invalid_naming_the_field(
        self, small: SessionStore, field: str, body: dict[str, Any]
    ) -> None:
        with pytest.raises(InvalidInput, match=rf"^{field.replace('.', '[.]')}: JSON object of \d+ bytes; at most 100"):
            small.register_session({**_session("s1"), **body})
        assert _count(small, "cs_session") == 0

    def test_json_objects_within_the_bound_are_stored(self, small: SessionStore) -> None:
        small.register_session(_session("s1", search_meta={"k": "x" * 80}))
        assert small.get_session("s1").search_meta == {"k": "x" * 80}

    def test_oversized_event_meta_is_invalid_and_stores_none_of_the_request(self, small: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"^events\.1\.meta: JSON object"):
            small.push_events("s1", [_event("e1"), _event("e2", meta={"k": "x" * 100})])
        assert _count(small, "cs_event") == 0

    def test_events_past_the_cap_are_counted_over_limit_not_stored(self, small: SessionStore) -> None:
        first = small.push_events("s1", [_event("e1"), _event("e2")])
        assert (first.stored, first.duplicates, first.over_limit) == (2, 0, 0)
        second = small.push_events("s1", [_event("e2"), _event("e3"), _event("e4"), _event("e5")])
        assert (second.stored, second.duplicates, second.over_limit) == (1, 1, 2)
        small.register_session(_session("s1"))
        assert [e.event_id for e in small.get_session("s1").events] == ["e1", "e2", "e3"]
        other = small.push_events("s2", [_event("e1")])  # the cap is per session
        assert other.stored == 1

    def test_bulk_counts_over_limit_per_session_and_rejects_items_over_the_limits(self, small: SessionStore) -> None:
        result = small.ingest_bulk(
            [
                _session("s1"),
                _session("s2", results=("a", "b", "c", "d")),
                _session("s3", search_meta={"k": "x" * 100}),
            ],
            [_bulk_event("s1", f"e{j}") for j in range(5)] + [_bulk_event("s2", "e1", meta={"k": "x" * 100})],
        )
        assert (result.sessions.registered, result.events.stored, result.events.over_limit) == (1, 3, 2)
        assert [(r.item, r.error.split(":")[0]) for r in result.rejected] == [
            ("sessions[1]", "search_results"),
            ("sessions[2]", "search_meta"),
            ("events[5]", "meta"),
        ]
        assert _accounted(result) == 3 + 6

    def test_reads_and_extraction_hold_at_most_the_cap_of_events(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store()
        store.register_session(_session("s1"))
        store.push_events("s1", [_event(f"e{j}", created_at=T0 + j) for j in range(5)])
        capped = make_store(max_events_per_session=2)  # the cap lowered after the events were stored
        assert [e.event_id for e in capped.get_session("s1").events] == ["e0", "e1"]
        batch_id = capped.release_batch("r1").batch_id
        pages = list(capped.iter_batch_pages(batch_id))
        assert [e["event_id"] for e in pages[0][0]["events"]] == ["e0", "e1"]
        extracted = list(capped.iter_extract_pages(batch_id))
        assert sum(getattr(p, "events", None) or sum(len(s["events"]) for s in p) for p in extracted) == 2


# --------------------------------------------------------------------------------------- created_at omitted


class TestCreatedAtOmitted:
    def test_session_gets_the_time_of_receipt_and_a_later_retry_is_already_registered(
        self, store: SessionStore, clock: _Clock
    ) -> None:
        body = {"session_id": "s1", "search_results": [{"object_id": "a"}]}
        first = store.register_session(body)
        assert store.get_session("s1").created_at == T0
        clock.now += 60_000
        retry = store.register_session(body)
        assert (first.status, retry.status) == ("registered", "already_registered")
        assert store.get_session("s1").created_at == T0

    def test_event_gets_the_time_of_receipt(self, store: SessionStore, clock: _Clock) -> None:
        store.register_session(_session("s1"))
        clock.now += 5
        store.push_events("s1", [{"event_id": "e1", "object_id": "a"}])
        store.ingest_bulk(events=[{"session_id": "s1", "event_id": "e2", "object_id": "a"}])
        assert [e.created_at for e in store.get_session("s1").events] == [T0 + 5, T0 + 5]

    def test_seconds_looking_values_are_still_refused(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"^created_at: .*looks like seconds"):
            store.register_session(_session("s1", created_at=T0 // 1000))


# -------------------------------------------------------------------------------------------- tombstones


class TestErasedStaysErased:
    @pytest.fixture
    def erased(self, store: SessionStore) -> SessionStore:
        store.register_session(_session("gone", user_id="u1"))
        store.push_events("gone", [_event("e1")])
        store.register_session(_session("kept", user_id="u2"))
        assert store.erase_user("u1").tombstones == 1
        return store

    def test_events_for_an_erased_session_are_not_stored_but_counted(self, erased: SessionStore) -> None:
        result = erased.push_events("gone", [_event("e1"), _event("e2")])
        assert (result.stored, result.duplicates, result.over_limit, result.erased) == (0, 0, 0, 2)
        assert _count(erased, "cs_event") == 0

    def test_registering_an_erased_session_again_stores_nothing(self, erased: SessionStore) -> None:
        again = erased.register_session(_session("gone", user_id="u1"))
        assert (again.status, again.batch_id, again.session_number) == ("erased", None, None)
        with pytest.raises(NotFound):
            erased.get_session("gone")

    def test_bulk_items_of_an_erased_session_are_counted_and_the_others_stored(self, erased: SessionStore) -> None:
        result = erased.ingest_bulk(
            [_session("gone", user_id="u1"), _session("new", user_id="u1")],
            [_bulk_event("gone", "e9"), _bulk_event("new", "e1"), _bulk_event("kept", "e1")],
        )
        assert (result.sessions.registered, result.sessions.erased) == (1, 1)
        assert (result.events.stored, result.events.erased, result.events.duplicates) == (2, 1, 0)
        assert _accounted(result) == 5
        assert erased.get_session("new").user_id == "u1"  # the user may come back, with new sessions

    def test_erasing_again_records_no_new_tombstone(self, erased: SessionStore) -> None:
        assert erased.erase_user("u1").tombstones == 0
        assert _count(erased, "cs_erased_session") == 1


# --------------------------------------------------------------------------------------------- retention


class TestRetention:
    def _released(self, store: SessionStore, clock: _Clock, tag: str, sessions: int = 5) -> str:
        for i in range(sessions):
            store.register_session(_session(f"{tag}-{i}", created_at=clock.now), check_window=False)
            store.push_events(
                f"{tag}-{i}",
                [_event("e1", created_at=clock.now), _event("e2", created_at=clock.now)],
                check_window=False,
            )
        store.use_for_improvement(f"{tag}-0")
        batch_id = store.release_batch(f"r-{tag}").batch_id
        clock.now += HOUR
        return batch_id

    def test_purge_removes_a_released_batch_with_its_events_and_marks_only(
        self, store: SessionStore, clock: _Clock
    ) -> None:
        old = self._released(store, clock, "old", sessions=7)
        young = self._released(store, clock, "young")
        store.register_session(_session("live", created_at=clock.now), check_window=False)

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
        assert (_count(store, "cs_session"), _count(store, "cs_event"), _count(store, "cs_improvement_mark")) == (
            6,
            10,
            1,
        )

    def test_the_collecting_batch_is_never_purged(self, store: SessionStore, clock: _Clock) -> None:
        collecting = store.register_session(_session("live")).batch_id
        assert store.list_purgeable_batches(released_before=clock.now + 10 * HOUR) == []
        with pytest.raises(Conflict, match="collecting"):
            store.purge_batch(collecting)
        assert store.get_session("live").batch_id == collecting

    def test_a_purge_run_again_finishes_nothing_more_and_unknown_is_not_found(
        self, store: SessionStore, clock: _Clock
    ) -> None:
        old = self._released(store, clock, "old")
        store.purge_batch(old)
        with pytest.raises(NotFound):
            store.purge_batch(old)
