"""The size limits on SQLite and PostgreSQL (store/checks.py, the tunables of store/config.py): results, JSON
objects and events per session, for single requests, bulk and reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from clickstream.store import InvalidInput, SessionStore
from tests.store.helpers import T0, a_bulk_event, a_session, accounted, an_event, count_rows


class TestLimits:
    @pytest.fixture
    def small(self, make_store: Callable[..., SessionStore]) -> SessionStore:
        return make_store(max_results=3, max_json_bytes=100, max_events_per_session=3)

    def test_too_many_results_is_invalid_naming_field_and_bound(self, small: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"^search_results: 4 results; at most 3 .*max_results"):
            small.register_session(a_session("s1", results=("a", "b", "c", "d")))
        small.register_session(a_session("s1", results=("a", "b", "c")))
        assert count_rows(small, "cs_session") == 1

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
            small.register_session({**a_session("s1"), **body})
        assert count_rows(small, "cs_session") == 0

    def test_json_objects_within_the_bound_are_stored(self, small: SessionStore) -> None:
        small.register_session(a_session("s1", search_meta={"k": "x" * 80}))
        assert small.get_session("s1").search_meta == {"k": "x" * 80}

    def test_oversized_event_meta_is_invalid_and_stores_none_of_the_request(self, small: SessionStore) -> None:
        with pytest.raises(InvalidInput, match=r"^events\.1\.meta: JSON object"):
            small.push_events("s1", [an_event("e1"), an_event("e2", meta={"k": "x" * 100})])
        assert count_rows(small, "cs_event") == 0

    def test_events_past_the_cap_are_counted_over_limit_not_stored(self, small: SessionStore) -> None:
        first = small.push_events("s1", [an_event("e1"), an_event("e2")])
        assert (first.stored, first.duplicates, first.over_limit) == (2, 0, 0)
        second = small.push_events("s1", [an_event("e2"), an_event("e3"), an_event("e4"), an_event("e5")])
        assert (second.stored, second.duplicates, second.over_limit) == (1, 1, 2)
        small.register_session(a_session("s1"))
        assert [e.event_id for e in small.get_session("s1").events] == ["e1", "e2", "e3"]
        other = small.push_events("s2", [an_event("e1")])  # the cap is per session
        assert other.stored == 1

    def test_the_cap_takes_new_events_in_request_order_and_duplicates_never_count(self, small: SessionStore) -> None:
        small.register_session(a_session("s1"))
        first = small.push_events("s1", [an_event("e1")])
        second = small.push_events("s1", [an_event("e4"), an_event("e1"), an_event("e3"), an_event("e2")])
        assert (first.stored, second.stored, second.duplicates, second.over_limit) == (1, 2, 1, 1)
        assert {e.event_id for e in small.get_session("s1").events} == {"e1", "e4", "e3"}
        full = small.push_events("s1", [an_event("e3"), an_event("e5"), an_event("e1")])
        assert (full.stored, full.duplicates, full.over_limit) == (0, 2, 1)

    def test_bulk_counts_over_limit_per_session_and_rejects_items_over_the_limits(self, small: SessionStore) -> None:
        result = small.ingest_bulk(
            [
                a_session("s1"),
                a_session("s2", results=("a", "b", "c", "d")),
                a_session("s3", search_meta={"k": "x" * 100}),
            ],
            [a_bulk_event("s1", f"e{j}") for j in range(5)] + [a_bulk_event("s2", "e1", meta={"k": "x" * 100})],
        )
        assert (result.sessions.registered, result.events.stored, result.events.over_limit) == (1, 3, 2)
        assert [(r.item, r.error.split(":")[0]) for r in result.rejected] == [
            ("sessions[1]", "search_results"),
            ("sessions[2]", "search_meta"),
            ("events[5]", "meta"),
        ]
        assert accounted(result) == 3 + 6

    def test_reads_and_extraction_hold_at_most_the_cap_of_events(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store()
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event(f"e{j}", created_at=T0 + j) for j in range(5)])
        capped = make_store(max_events_per_session=2)  # the cap lowered after the events were stored
        assert [e.event_id for e in capped.get_session("s1").events] == ["e0", "e1"]
        batch_id = capped.release_batch("r1").batch_id
        pages = list(capped.iter_batch_pages(batch_id))
        assert [e["event_id"] for e in pages[0][0]["events"]] == ["e0", "e1"]
        extracted = list(capped.iter_extract_pages(batch_id))
        assert sum(p.events for p in extracted) == 2
