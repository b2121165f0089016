"""The batch lifecycle on SQLite and PostgreSQL (store/batches.py): batch pages and the page iterators, the
release, batch rows and their list, and the dataset recorded for a released batch."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any, cast

import pytest

from clickstream.store import Conflict, InvalidInput, NotFound, SessionStore
from clickstream.store.batches import PAGE_JSON
from clickstream.store.rows import PAGE_STRUCTS
from tests.store.helpers import (
    T0,
    Clock,
    RealClock,
    a_session,
    all_page_numbers,
    an_event,
    live_session,
    release_batches,
)

# ------------------------------------------------------------------------------------------------ batch pages


class TestGetBatchSessions:
    def test_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound) as err:
            store.get_batch_sessions("batch-typo")
        assert err.value.http_status == 404 and "'batch-typo'" in err.value.detail

    def test_page_has_the_api_shape(self, store: SessionStore) -> None:
        registered = store.register_session(
            a_session(
                "s1",
                user_id="u1",
                search_meta={"latency_ms": 3},
                payload_filter={"task": "x"},
                sort_by={"field": "stars", "order": "asc"},
            )
        )
        assert registered.batch_id is not None
        store.push_events("s1", [an_event("e1", meta={"clicked_rank": 1})])
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
        numbers = cast(list[int], [store.register_session(a_session(f"s{i}")).session_number for i in range(7)])
        batch_id = store.get_session("s0").batch_id
        pages = all_page_numbers(store, batch_id, limit)
        flat = [n for page in pages for n in page]
        assert flat == sorted(numbers)
        assert all(len(page) <= limit for page in pages)

    def test_paging_skips_other_batches_sessions(self, store: SessionStore, clock: Clock) -> None:
        first = store.register_session(a_session("a1")).batch_id
        assert first is not None
        store.register_session(a_session("a2"))
        store.release_batch("r1")
        clock.now += 1
        store.register_session(a_session("b1"))
        assert [s.session_id for s in store.get_batch_sessions(first, limit=10).sessions] == ["a1", "a2"]

    def test_page_after_the_last_session_is_empty_with_null_last_number(self, store: SessionStore) -> None:
        registered = store.register_session(a_session("s1"))
        assert registered.batch_id is not None and registered.session_number is not None
        page = store.get_batch_sessions(registered.batch_id, after_number=registered.session_number)
        assert (page.sessions, page.last_number) == ([], None)

    def test_events_limit_keeps_the_earliest_events(self, store: SessionStore) -> None:
        batch_id = store.register_session(a_session("s1")).batch_id
        assert batch_id is not None
        store.push_events("s1", [an_event(f"e{i}", created_at=T0 + 100 - i) for i in range(10)])
        [session] = store.get_batch_sessions(batch_id, events_limit=3).sessions
        assert [e.event_id for e in session.events] == ["e9", "e8", "e7"]

    def test_events_limit_zero_gives_sessions_without_events(self, store: SessionStore) -> None:
        batch_id = store.register_session(a_session("s1")).batch_id
        assert batch_id is not None
        store.push_events("s1", [an_event("e1")])
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
        batch_id = store.register_session(a_session("s1")).batch_id
        assert batch_id is not None
        with pytest.raises(InvalidInput) as err:
            store.get_batch_sessions(batch_id, **params)
        assert err.value.http_status == 422
        assert err.value.detail.startswith(f"{field}:") and bound in err.value.detail

    def test_bounds_follow_config(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store(max_page=5, max_events=2)
        batch_id = store.register_session(a_session("s1")).batch_id
        assert batch_id is not None
        assert store.get_batch_sessions(batch_id, limit=5, events_limit=2).last_number is not None
        with pytest.raises(InvalidInput, match=r"limit: must be between 1 and 5"):
            store.get_batch_sessions(batch_id, limit=6)
        with pytest.raises(InvalidInput, match=r"events_limit: must be between 0 and 2"):
            store.get_batch_sessions(batch_id, limit=1, events_limit=3)


def _typed(value: object) -> object:
    """``value`` (parsed JSON) with its key order and its number types made part of equality."""
    if isinstance(value, dict):
        return ("object", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [_typed(v) for v in value])
    return (type(value).__name__, value)


def _model_page_json(store: SessionStore, batch_id: str, **params: int) -> bytes:
    """The page as the route answered it before the JSON path: the model, serialised as FastAPI writes it."""
    return PAGE_JSON.dump_json(store.get_batch_sessions(batch_id, **params), by_alias=True)


class TestGetBatchSessionsJson:
    """``get_batch_sessions_json`` (what ``GET /batch/sessions`` passes through) answers what the page model,
    serialised, answered: same keys in the same order, same values and number types once parsed."""

    AWKWARD: dict[str, Any] = {
        "search_query": 'caf\u00e9 \u2603 \U0001f600 "quoted" back\\slash \t tab \n newline \u0001',
        "search_meta": {
            "z": 1,
            "a": {"nested": [1, 2.5, None, True, {"deep": "\u00fcber"}], "empty": {}, "list": []},
            "float": 0.1,
            "tiny": 1e-07,
            "whole": 3.0,
            "big": 12345678901234567890,
            "null": None,
            "\u00e9t\u00e9": "\U0001f680",
        },
        "payload_filter": {"task": "x", "ids": ["a", "b"]},
        "sort_by": {"field": "stars", "order": "desc"},
        "user_id": "us\u00e9r",
    }

    def _seed(self, store: SessionStore) -> str:
        batch_id = store.register_session(a_session("s0", **self.AWKWARD)).batch_id
        assert batch_id is not None
        store.register_session(
            {
                "session_id": "s1",
                "search_results": [
                    {"object_id": "o1", "rank": 1e16},
                    {"object_id": "o2"},
                    {"object_id": "\u00f6", "rank": 2.5, "meta": {"k": [1, {"x": None}], "b": "\u2603"}},
                    {"object_id": "o4", "rank": 7, "meta": None},
                ],
                "created_at": T0,
            }
        )
        store.register_session(a_session("s2", results=()))  # no results, no events
        store.register_session(a_session("s3", search_query=None, is_irrelevant=True))
        store.push_events(
            "s0",
            [
                an_event("e-late", created_at=T0 + 5, meta={"clicked_rank": 1, "\u00e9": [None, 1.5]}),
                an_event("e-b", created_at=T0, event_type="add_to_cart", meta=None),
                an_event("e-a", created_at=T0),  # same created_at as e-b: arrival order
                an_event("e-\u2603", object_id="\u00f6", created_at=T0 + 1, meta={"s": '"\\\n'}),
            ],
        )
        store.push_events("s1", [an_event("e1", created_at=T0 + 2)])
        store.mark_irrelevant("s1")
        return batch_id

    def _same(self, store: SessionStore, batch_id: str, **params: int) -> dict[str, Any]:
        answered = store.get_batch_sessions_json(batch_id, **params)
        before = _model_page_json(store, batch_id, **params)
        assert _typed(json.loads(answered)) == _typed(json.loads(before))
        page: dict[str, Any] = json.loads(answered)
        return page

    def test_awkward_values_answer_what_the_model_answered(self, store: SessionStore) -> None:
        batch_id = self._seed(store)
        page = self._same(store, batch_id, limit=10, events_limit=100)
        assert [s["session_id"] for s in page["sessions"]] == ["s0", "s1", "s2", "s3"]
        assert [e["event_id"] for e in page["sessions"][0]["events"]] == ["e-b", "e-a", "e-\u2603", "e-late"]
        assert page["sessions"][0]["search_meta"]["whole"] == 3.0
        assert [r["rank"] for r in page["sessions"][1]["search_results"]] == [1e16, None, 2.5, 7.0]

    @pytest.mark.parametrize("events_limit", [0, 1, 3])
    def test_every_page_and_events_limit(self, store: SessionStore, events_limit: int) -> None:
        batch_id = self._seed(store)
        after, seen = 0, []
        while True:
            page = self._same(store, batch_id, after_number=after, limit=3, events_limit=events_limit)
            if not page["sessions"]:  # the page after the last one: empty, last_number null
                assert page["last_number"] is None
                break
            assert page["last_number"] == page["sessions"][-1]["session_number"]
            assert all(len(s["events"]) <= events_limit for s in page["sessions"])
            seen += [s["session_id"] for s in page["sessions"]]
            after = page["last_number"]
        assert seen == ["s0", "s1", "s2", "s3"]

    def test_empty_batch_and_erased_sessions(self, store: SessionStore, clock: Clock) -> None:
        batch_id = self._seed(store)
        store.erase_user("us\u00e9r")  # s0 goes, with its events
        page = self._same(store, batch_id, limit=10)
        assert [s["session_id"] for s in page["sessions"]] == ["s1", "s2", "s3"]
        store.release_batch("r1")
        clock.now += 1
        empty = store.register_session(a_session("n1")).batch_id
        assert empty is not None and empty != batch_id
        store.erase_user("nobody")
        page = self._same(store, batch_id, after_number=page["last_number"])
        assert page == {"batch_id": batch_id, "last_number": None, "sessions": []}

    def test_unicode_batch_id_and_errors_as_the_model_path(self, store: SessionStore) -> None:
        with pytest.raises(NotFound) as err:
            store.get_batch_sessions_json('b\u00e4tch "typo"')
        assert err.value.http_status == 404 and "'b\u00e4tch \"typo\"'" in err.value.detail
        batch_id = self._seed(store)
        for params, field in [
            ({"after_number": -1}, "after_number"),
            ({"limit": 0}, "limit"),
            ({"events_limit": 1001}, "events_limit"),
        ]:
            with pytest.raises(InvalidInput) as bad:
                store.get_batch_sessions_json(batch_id, **params)
            assert bad.value.http_status == 422 and bad.value.detail.startswith(f"{field}:")

    def test_page_structs_mirror_the_models(self) -> None:
        for model, struct in PAGE_STRUCTS.items():
            assert struct.__struct_fields__ == tuple(model.model_fields), model.__name__

    def test_answer_is_compact_utf8_json(self, store: SessionStore) -> None:
        batch_id = self._seed(store)
        answered = store.get_batch_sessions_json(batch_id, limit=1)
        assert answered.startswith(f'{{"batch_id":"{batch_id}","last_number":'.encode())
        assert "\u2603".encode() in answered  # UTF-8, not \\u escapes
        assert list(json.loads(answered)) == ["batch_id", "last_number", "sessions"]


class TestIterBatchPages:
    def _seed(self, store: SessionStore, sessions: int = 9, events: int = 3) -> str:
        for i in range(sessions):
            store.register_session(a_session(f"s{i}"))
            store.push_events(f"s{i}", [an_event(f"e{j}", created_at=T0 + j) for j in range(events)])
        return store.release_batch("r1").batch_id

    def test_every_session_comes_once_with_all_its_events(self, store: SessionStore) -> None:
        batch_id = store.register_session(a_session("big")).batch_id
        assert batch_id is not None
        store.push_events("big", [an_event(f"e{j:04d}", created_at=T0 + j) for j in range(1500)])
        for i in range(6):
            store.register_session(a_session(f"s{i}"))
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
        assert info.max_number is not None
        cuts = [0, numbers[2], numbers[5], info.max_number]
        seen: list[int] = []
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
    def test_release_answers_release_id_batch_and_time(self, store: SessionStore, clock: Clock) -> None:
        batch_id = store.register_session(a_session("s1")).batch_id
        assert batch_id is not None
        clock.now += 5
        result = store.release_batch("release-v1")
        assert result.model_dump() == {"release_id": "release-v1", "batch_id": batch_id, "released_at": T0 + 5}
        info = store.get_batch(batch_id)
        assert (info.status, info.release_id, info.released_at) == ("released", "release-v1", T0 + 5)

    def test_retried_release_id_answers_the_same_even_after_a_new_batch_started(
        self, store: SessionStore, clock: Clock
    ) -> None:
        store.register_session(a_session("s1"))
        first = store.release_batch("r1")
        clock.now += 10
        new_batch = store.register_session(a_session("s2")).batch_id
        assert new_batch is not None
        assert new_batch != first.batch_id
        assert store.release_batch("r1") == first
        assert store.get_batch(new_batch).status == "collecting"

    def test_a_second_release_id_releases_the_new_batch(self, store: SessionStore, clock: Clock) -> None:
        store.register_session(a_session("s1"))
        first = store.release_batch("r1")
        clock.now += 10
        new_batch = store.register_session(a_session("s2")).batch_id
        second = store.release_batch("r2")
        assert (second.batch_id, second.released_at) == (new_batch, T0 + 10)
        assert store.release_batch("r1") == first

    def test_no_collecting_batch_and_unknown_release_id_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="no collecting batch"):
            store.release_batch("r1")
        store.register_session(a_session("s1"))
        store.release_batch("r1")
        with pytest.raises(NotFound, match="no collecting batch") as err:
            store.release_batch("r2")
        assert err.value.http_status == 404

    def test_registrations_after_release_go_to_a_new_batch(self, store: SessionStore, clock: Clock) -> None:
        old = store.register_session(a_session("s1")).batch_id
        assert old is not None
        store.release_batch("r1")
        clock.now += 1
        new = store.register_session(a_session("s2"))
        assert new.batch_id != old
        assert store.get_batch(old).sessions == 1
        assert [b.batch_id for b in store.list_batches()] == [new.batch_id, old]

    @pytest.mark.parametrize("release_id", ["", "r" * 513], ids=["empty", "513-chars"])
    def test_release_id_length_is_bounded(self, store: SessionStore, release_id: str) -> None:
        store.register_session(a_session("s1"))
        with pytest.raises(InvalidInput) as err:
            store.release_batch(release_id)
        assert err.value.detail.startswith("release_id:")
        assert store.list_batches()[0].status == "collecting"

    def test_release_id_of_512_chars_is_accepted(self, store: SessionStore) -> None:
        # Room for the operator's default "<dag_id>/<run_id>" (Airflow allows run ids of 250 chars).
        store.register_session(a_session("s1"))
        assert store.release_batch("r" * 512).release_id == "r" * 512


class TestBatches:
    def test_list_batches_newest_first_with_status_filter(self, store: SessionStore, clock: Clock) -> None:
        old = store.register_session(a_session("s1")).batch_id
        store.release_batch("r1")
        clock.now += 1
        new = store.register_session(a_session("s2")).batch_id
        assert [b.batch_id for b in store.list_batches()] == [new, old]
        assert [b.batch_id for b in store.list_batches(status="released")] == [old]
        assert [b.batch_id for b in store.list_batches(status="collecting")] == [new]
        assert [b.batch_id for b in store.list_batches(limit=1)] == [new]

    @pytest.mark.parametrize("limit", [0, -1])
    def test_list_batches_limit_must_be_positive(self, store: SessionStore, limit: int) -> None:
        with pytest.raises(InvalidInput, match=r"^limit: must be >= 1"):
            store.list_batches(limit=limit)

    def test_batch_ids_sort_by_creation_even_within_one_millisecond(self, store: SessionStore) -> None:
        created: list[str] = []
        for i in range(6):  # the clock never moves
            created.append(cast(str, store.register_session(a_session(f"s{i}")).batch_id))
            store.release_batch(f"r{i}")
        assert sorted(created) == created
        assert [b.batch_id for b in store.list_batches()] == created[::-1]

    def test_list_batches_rejects_an_unknown_status(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match="status"):
            store.list_batches(status="open")

    def test_get_batch_reports_status_and_number_range(self, store: SessionStore) -> None:
        numbers = cast(list[int], [store.register_session(a_session(f"s{i}")).session_number for i in range(3)])
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


# ------------------------------------------------------------------------------------------------ dataset


class TestRecordDataset(RealClock):
    def test_the_recorded_manifest_is_the_batch_dataset_and_a_second_record_replaces_it(
        self, store: SessionStore
    ) -> None:
        (batch_id,) = release_batches(store, 1)
        store.record_dataset(batch_id, "file:///data/clickstream/x/_manifest.json")
        assert store.get_batch_summary(batch_id).dataset == "file:///data/clickstream/x/_manifest.json"
        store.record_dataset(batch_id, "s3://aws_default@bucket/x/_manifest.json")
        assert store.list_batches_page().batches[0].dataset == "s3://aws_default@bucket/x/_manifest.json"

    def test_unknown_collecting_and_empty_are_refused(self, store: SessionStore) -> None:
        collecting = store.register_session(live_session("s1")).batch_id
        assert collecting is not None
        with pytest.raises(NotFound, match="'nope'"):
            store.record_dataset("nope", "/x/_manifest.json")
        with pytest.raises(Conflict, match="collecting"):
            store.record_dataset(collecting, "/x/_manifest.json")
        with pytest.raises(InvalidInput, match="^manifest_path: "):
            store.record_dataset(collecting, "")
        assert store.get_batch_summary(collecting).dataset is None
