"""The batch overview behind the Clickstream page, on SQLite and PostgreSQL (store/overview.py): the
keyset-paged batch list, one batch's summary, and the missing metrics a read computes within its budget."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from clickstream.store import InvalidInput, NotFound, SessionStore, create_store_engine
from tests.store.helpers import RealClock, kept_metrics_rows, live_session, release_batches
from tests.support.bodies import click


class TestListBatchesPage(RealClock):
    def test_pages_visit_every_batch_once_newest_first_and_the_last_says_no_older(self, store: SessionStore) -> None:
        released = release_batches(store, 4)
        collecting = store.register_session(live_session("now")).batch_id
        expected = [collecting, *reversed(released)]

        seen, pages, before = [], 0, None
        while True:
            page = store.list_batches_page(limit=2, before=before)
            seen += [b.batch_id for b in page.batches]
            pages += 1
            if page.next_before is None:
                break
            assert page.next_before == page.batches[-1].batch_id
            before = page.next_before
        assert seen == expected
        assert pages == 3  # 2 + 2 + 1, no empty page at the end

    def test_a_page_that_ends_on_the_oldest_batch_has_no_next_before(self, store: SessionStore) -> None:
        released = release_batches(store, 2)
        page = store.list_batches_page(limit=2)
        assert [b.batch_id for b in page.batches] == released[::-1]
        assert page.next_before is None

    def test_collecting_and_released_batches_show_counts_metrics_and_dataset(self, store: SessionStore) -> None:
        store.register_session(live_session("s1"))
        store.push_events("s1", [click("e1", "b"), click("e2", "c")])
        store.register_session(live_session("s2"))
        released = store.release_batch("rel-1")
        store.register_session(live_session("s3"))
        store.push_events("s3", [click("e1", "a")])

        collecting, old = store.list_batches_page().batches
        assert (collecting.status, collecting.sessions, collecting.events, collecting.metrics) == (
            "collecting",
            1,
            1,
            None,
        )
        assert collecting.released_at is None and collecting.release_id is None and collecting.dataset is None
        assert (old.batch_id, old.status, old.release_id, old.released_at) == (
            released.batch_id,
            "released",
            "rel-1",
            released.released_at,
        )
        assert (old.sessions, old.events, old.dataset) == (2, 2, None)
        assert old.metrics is not None
        assert old.metrics.model_dump() == {
            "ctr": 0.5,
            "mrr": 0.25,  # s1's first click is on b, position 2; s2 has none
            "no_click_rate": 0.5,
            "irrelevant_rate": 0.0,
            "late_events": 0,
        }

    def test_release_id_keeps_only_that_release(self, store: SessionStore) -> None:
        released = release_batches(store, 3)
        page = store.list_batches_page(release_id="r1")
        assert [b.batch_id for b in page.batches] == [released[1]]
        assert page.next_before is None
        assert store.list_batches_page(release_id="never").batches == []

    def test_a_before_that_is_no_batch_pages_from_where_it_would_sort(self, store: SessionStore) -> None:
        # keyset paging needs no existing batch: a page whose last batch was purged meanwhile still continues
        older, newer = release_batches(store, 2)
        assert [b.batch_id for b in store.list_batches_page(before=newer + "-purged").batches] == [newer, older]
        assert store.list_batches_page(before="0").batches == []

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"before": ""}, "before"),
            ({"release_id": "x" * 513}, "release_id"),
        ],
    )
    def test_bad_arguments_are_invalid_naming_the_field(self, store: SessionStore, kwargs: dict, field: str) -> None:
        with pytest.raises(InvalidInput, match=f"^{field}: "):
            store.list_batches_page(**kwargs)

    def test_an_empty_store_has_an_empty_page(self, store: SessionStore) -> None:
        page = store.list_batches_page()
        assert (page.batches, page.next_before) == ([], None)


class TestBatchSummary(RealClock):
    def test_one_batch_is_shown_as_in_the_list(self, store: SessionStore) -> None:
        released = release_batches(store, 2, sessions=2)
        listed = {b.batch_id: b for b in store.list_batches_page().batches}
        for batch_id in released:
            assert store.get_batch_summary(batch_id) == listed[batch_id]

    def test_an_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.get_batch_summary("nope")


class TestComputeBudget(RealClock):
    def test_a_read_computes_at_most_two_missing_metrics_the_others_are_null(self, store: SessionStore) -> None:
        released = release_batches(store, 5)
        assert store.metrics_series().metrics == []  # computes nothing
        first = store.list_batches_page().batches
        assert [b.metrics is not None for b in first] == [True, True, False, False, False]
        assert [b.sessions for b in first] == [1, 1, None, None, None]
        assert [b.events for b in first] == [0, 0, None, None, None]
        assert [p.batch_id for p in store.metrics_series().metrics] == released[3:]
        store.list_batches_page()
        assert [b.metrics is not None for b in store.list_batches_page().batches] == [True] * 5

    def test_compute_missing_metrics_backfills_newest_first_within_its_limit(self, store: SessionStore) -> None:
        released = release_batches(store, 5)
        done = store.compute_missing_metrics(limit=3)
        assert (done.computed, done.more) == (released[:1:-1], True)
        done = store.compute_missing_metrics(limit=3)
        assert (done.computed, done.more) == (released[1::-1], False)
        assert store.compute_missing_metrics().computed == []
        assert [p.batch_id for p in store.metrics_series().metrics] == released

    def test_a_read_whose_keep_write_cannot_run_still_answers_the_metrics(self, tmp_path: Any) -> None:
        # SQLite: another writer holds the write lock longer than the busy timeout (an import, a purge)
        url = f"sqlite:///{tmp_path / 'busy.db'}"
        store = SessionStore(create_store_engine(url, sqlite_busy_timeout_s=0.2))
        store.migrate()
        try:
            (batch_id,) = release_batches(store, 1)
            with store.db.transaction(write=True):
                summary = store.get_batch_summary(batch_id)
            assert summary.metrics is not None and summary.sessions == 1
            assert kept_metrics_rows(store, batch_id) == 0
        finally:
            store.dispose()

    def test_a_batch_purged_during_the_keep_write_is_simply_not_kept(self, store: SessionStore) -> None:
        (batch_id,) = release_batches(store, 1)
        transaction = store.db.transaction

        @contextmanager
        def purge_first(*, write: bool, **kwargs: Any) -> Iterator[Any]:
            if write:
                store.db.transaction = transaction  # type: ignore[method-assign]
                store.purge_batch(batch_id, duty_cycle=1)
            with transaction(write=write, **kwargs) as conn:
                yield conn

        store.db.transaction = purge_first  # type: ignore[method-assign]
        assert store.batch_metrics(batch_id).sessions == 1
        assert kept_metrics_rows(store, batch_id) == 0
