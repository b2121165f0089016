"""The batch overview behind the Clickstream page, on SQLite and PostgreSQL: the keyset-paged batch list,
one batch's summary, the kept metrics (and how retention and erasure treat them), the metrics series, the
click-through rate by result position, and the recorded dataset."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from clickstream.store import Conflict, InvalidInput, NotFound, SessionStore, create_store_engine, now_ms
from tests.support.bodies import click, session_body


def _session(session_id: str, results: tuple[str, ...] = ("a", "b", "c"), **fields: Any) -> dict[str, Any]:
    return session_body(session_id, search_results=[{"object_id": o} for o in results], **fields)


def _release_batches(store: SessionStore, n: int, sessions: int = 1) -> list[str]:
    """``n`` released batches of ``sessions`` sessions each (oldest first); their ids."""
    ids = []
    for i in range(n):
        for j in range(sessions):
            store.register_session(_session(f"s{i}-{j}"))
        ids.append(store.release_batch(f"r{i}").batch_id)
    return ids


def _kept_metrics(store: SessionStore, batch_id: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM cs_batch_metrics WHERE batch_id = :b"), {"b": batch_id}
        ).scalar_one()


# ------------------------------------------------------------------------------------------------- the list


class TestListBatchesPage:
    def test_pages_visit_every_batch_once_newest_first_and_the_last_says_no_older(self, store: SessionStore) -> None:
        released = _release_batches(store, 4)
        collecting = store.register_session(_session("now")).batch_id
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
        released = _release_batches(store, 2)
        page = store.list_batches_page(limit=2)
        assert [b.batch_id for b in page.batches] == released[::-1]
        assert page.next_before is None

    def test_collecting_and_released_batches_show_counts_metrics_and_dataset(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [click("e1", "b"), click("e2", "c")])
        store.register_session(_session("s2"))
        released = store.release_batch("rel-1")
        store.register_session(_session("s3"))
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
        released = _release_batches(store, 3)
        page = store.list_batches_page(release_id="r1")
        assert [b.batch_id for b in page.batches] == [released[1]]
        assert page.next_before is None
        assert store.list_batches_page(release_id="never").batches == []

    def test_a_before_that_is_no_batch_pages_from_where_it_would_sort(self, store: SessionStore) -> None:
        # keyset paging needs no existing batch: a page whose last batch was purged meanwhile still continues
        older, newer = _release_batches(store, 2)
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


class TestBatchSummary:
    def test_one_batch_is_shown_as_in_the_list(self, store: SessionStore) -> None:
        released = _release_batches(store, 2, sessions=2)
        listed = {b.batch_id: b for b in store.list_batches_page().batches}
        for batch_id in released:
            assert store.get_batch_summary(batch_id) == listed[batch_id]

    def test_an_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.get_batch_summary("nope")


# ------------------------------------------------------------------------------------------- kept metrics


class TestKeptMetrics:
    def test_a_batch_released_without_the_metrics_task_gets_them_computed_once_and_kept(
        self, store: SessionStore
    ) -> None:
        (batch_id,) = _release_batches(store, 1)
        assert _kept_metrics(store, batch_id) == 0
        first = store.get_batch_summary(batch_id)
        assert _kept_metrics(store, batch_id) == 1
        assert first.metrics is not None and first.sessions == 1

        # a late event changes nothing shown until the metrics are computed again (the metrics task)
        store.push_events("s0-0", [click("late", "a")])
        assert store.get_batch_summary(batch_id) == first
        measured = store.batch_metrics(batch_id)
        assert measured.late_events == 1
        again = store.get_batch_summary(batch_id)
        assert again.metrics is not None
        assert (again.events, again.metrics.late_events, again.metrics.ctr) == (1, 1, 1.0)

    def test_batch_metrics_keeps_nothing_for_a_collecting_batch(self, store: SessionStore) -> None:
        batch_id = store.register_session(_session("s1")).batch_id
        assert store.batch_metrics(batch_id).sessions == 1
        assert _kept_metrics(store, batch_id) == 0
        assert store.get_batch_summary(batch_id).metrics is None

    def test_a_purged_batch_takes_its_kept_metrics_along(self, store: SessionStore) -> None:
        first, second = _release_batches(store, 2)
        store.list_batches_page()  # computes and keeps both
        assert _kept_metrics(store, first) == _kept_metrics(store, second) == 1
        store.purge_batch(first, duty_cycle=1)
        assert _kept_metrics(store, first) == 0 and _kept_metrics(store, second) == 1
        with pytest.raises(NotFound):
            store.get_batch_summary(first)
        assert [p.batch_id for p in store.metrics_series().metrics] == [second]

    def test_erasing_a_user_recomputes_the_metrics_of_their_batches_without_them(self, store: SessionStore) -> None:
        store.register_session(_session("mine", user_id="u1"))
        store.push_events("mine", [click("e1", "a")])
        store.register_session(_session("other", user_id="u2"))
        batch_id = store.release_batch("r1").batch_id
        store.register_session(_session("elsewhere", user_id="u2"))
        other_batch = store.release_batch("r2").batch_id
        before = store.get_batch_summary(batch_id)
        assert before.metrics is not None
        assert (before.sessions, before.events, before.metrics.ctr) == (2, 1, 0.5)
        store.get_batch_summary(other_batch)

        store.erase_user("u1")
        assert _kept_metrics(store, batch_id) == 0  # forgotten with the user's sessions
        assert _kept_metrics(store, other_batch) == 1  # the user had nothing there
        after = store.get_batch_summary(batch_id)
        assert after.metrics is not None
        assert (after.sessions, after.events, after.metrics.ctr, after.metrics.no_click_rate) == (1, 0, 0.0, 1.0)

    @pytest.mark.parametrize("threaded", [True, False], ids=["erasure-in-flight", "erasure-clock-behind"])
    def test_a_computation_whose_snapshot_predates_an_erasure_is_not_kept(
        self, store: SessionStore, store_url: str, threaded: bool
    ) -> None:
        # The computation reads the batch with the user's session, the erasure commits, then the keep-write
        # runs: it must not keep the stale numbers. erasure-in-flight (the reviewer's race): the erasure starts
        # first and is in flight (tombstones inserted, kept metrics deleted, not committed) while the
        # computation reads, and commits while the keep-write waits for it. erasure-clock-behind: the erasure
        # runs between the reads and the keep-write on a host whose clock is a minute behind.
        store.register_session(_session("mine", user_id="u1"))
        store.push_events("mine", [click("e1", "a")])
        store.register_session(_session("other", user_id="u2"))
        batch_id = store.release_batch("r1").batch_id
        computing = SessionStore(create_store_engine(store_url))
        eraser = SessionStore(create_store_engine(store_url), clock=lambda: now_ms() - 60_000)
        in_flight, keep_starts = threading.Event(), threading.Event()
        erase_run = eraser.db.run

        def pausing_run(conn: Any, query: str, /, **params: Any) -> Any:
            result = erase_run(conn, query, **params)
            if query == "erase_user_sessions":  # the erasure's last statement: hold it uncommitted
                in_flight.set()
                assert keep_starts.wait(10)
                time.sleep(0.3)  # the keep-write is waiting for it now
            return result

        erasure = threading.Thread(target=eraser.erase_user, args=("u1",))
        transaction = computing.db.transaction

        @contextmanager
        def interleaved(*, write: bool, **kwargs: Any) -> Iterator[Any]:
            if write:  # the computation has read its snapshot; its keep-write starts now
                if threaded:
                    keep_starts.set()
                else:
                    eraser.erase_user("u1")
            with transaction(write=write, **kwargs) as conn:
                yield conn

        computing.db.transaction = interleaved  # type: ignore[method-assign]
        try:
            if threaded:
                eraser.db.run = pausing_run  # type: ignore[method-assign]
                erasure.start()
                assert in_flight.wait(10)
            computed = computing.batch_metrics(batch_id)
            if threaded:
                erasure.join(10)
        finally:
            computing.dispose()
            eraser.dispose()
        assert (computed.sessions, computed.click_through_rate) == (2, 0.5)  # read before the erasure committed
        assert _kept_metrics(store, batch_id) == 0
        after = store.get_batch_summary(batch_id)  # computed again, without the erased session
        assert after.metrics is not None and (after.sessions, after.metrics.ctr) == (1, 0.0)

    def test_an_older_snapshot_never_replaces_a_newer_one_and_no_clock_decides(
        self, store: SessionStore, store_url: str
    ) -> None:
        (batch_id,) = _release_batches(store, 1)
        store.batch_metrics(batch_id)
        store.push_events("s0-0", [click("late-1", "a")])
        # a worker whose clock is a minute behind re-runs the metrics: the newer snapshot is kept
        behind = SessionStore(create_store_engine(store_url), clock=lambda: now_ms() - 60_000)
        transaction = behind.db.transaction

        @contextmanager
        def late_event_then_keep(*, write: bool, **kwargs: Any) -> Iterator[Any]:
            if write:  # after this computation read 1 event: another event, and a computation that sees it
                store.push_events("s0-0", [click("late-2", "b")])
                store.batch_metrics(batch_id)
            with transaction(write=write, **kwargs) as conn:
                yield conn

        try:
            behind.db.transaction = late_event_then_keep  # type: ignore[method-assign]
            assert behind.batch_metrics(batch_id).events == 1
            behind.db.transaction = transaction  # type: ignore[method-assign]
            assert store.get_batch_summary(batch_id).events == 2  # the older snapshot (1 event) was not kept
            store.push_events("s0-0", [click("late-3", "c")])
            assert behind.batch_metrics(batch_id).events == 3  # clock behind, snapshot newer: kept
            assert store.get_batch_summary(batch_id).events == 3
        finally:
            behind.dispose()

    def test_the_position_curve_is_kept_with_the_metrics(self, store: SessionStore) -> None:
        store.register_session(_session("s1"))
        store.push_events("s1", [click("e1", "b")])
        batch_id = store.release_batch("r1").batch_id
        store.batch_metrics(batch_id)
        store.push_events("s1", [click("e2", "a")])  # a late click: shown once the metrics are computed again
        kept = [(p.shown, p.clicks) for p in store.batch_positions(batch_id, max_position=3).positions]
        assert kept == [(1, 0), (1, 1), (1, 0)]
        assert len(store.batch_positions(batch_id).positions) == 20
        live = store.batch_positions(batch_id, max_position=21).positions  # beyond the kept curve: live
        assert [(p.shown, p.clicks) for p in live[:3]] == [(1, 1), (1, 1), (1, 0)]
        store.batch_metrics(batch_id)
        assert [p.clicks for p in store.batch_positions(batch_id, max_position=3).positions] == [1, 1, 0]


class TestComputeBudget:
    def test_a_read_computes_at_most_two_missing_metrics_the_others_are_null(self, store: SessionStore) -> None:
        released = _release_batches(store, 5)
        assert store.metrics_series().metrics == []  # computes nothing
        first = store.list_batches_page().batches
        assert [b.metrics is not None for b in first] == [True, True, False, False, False]
        assert [b.sessions for b in first] == [1, 1, None, None, None]
        assert [b.events for b in first] == [0, 0, None, None, None]
        assert [p.batch_id for p in store.metrics_series().metrics] == released[3:]
        store.list_batches_page()
        assert [b.metrics is not None for b in store.list_batches_page().batches] == [True] * 5

    def test_compute_missing_metrics_backfills_newest_first_within_its_limit(self, store: SessionStore) -> None:
        released = _release_batches(store, 5)
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
            (batch_id,) = _release_batches(store, 1)
            with store.db.transaction(write=True):
                summary = store.get_batch_summary(batch_id)
            assert summary.metrics is not None and summary.sessions == 1
            assert _kept_metrics(store, batch_id) == 0
        finally:
            store.dispose()

    def test_a_batch_purged_during_the_keep_write_is_simply_not_kept(self, store: SessionStore) -> None:
        (batch_id,) = _release_batches(store, 1)
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
        assert _kept_metrics(store, batch_id) == 0


# ------------------------------------------------------------------------------------------ metrics series


class TestMetricsSeries:
    def test_the_last_released_batches_oldest_first_with_their_metrics(self, store: SessionStore) -> None:
        released = _release_batches(store, 4, sessions=2)
        store.register_session(_session("collecting"))
        store.push_events("s3-0", [click("e1", "c")])  # the newest released batch gets a late click
        assert store.metrics_series().metrics == []  # it shows kept metrics only
        store.compute_missing_metrics()
        series = store.metrics_series(limit=3).metrics
        assert [p.batch_id for p in series] == released[1:]
        assert [p.released_at for p in series] == sorted(p.released_at for p in series)
        assert all(p.sessions == 2 for p in series)
        newest = series[-1]
        assert (newest.events, newest.late_events, newest.ctr, newest.mrr) == (1, 1, 0.5, round(1 / 3 / 2, 6))
        assert [p.batch_id for p in store.metrics_series().metrics] == released

    @pytest.mark.parametrize("limit", [0, 1001])
    def test_limit_out_of_bounds_is_invalid_naming_it(self, store: SessionStore, limit: int) -> None:
        with pytest.raises(InvalidInput, match="^limit: "):
            store.metrics_series(limit)


# ---------------------------------------------------------------------------------------- position curve


class TestBatchPositions:
    def test_shown_clicks_and_ctr_per_position_match_a_hand_count(self, store: SessionStore) -> None:
        # s1: a b c      clicks on b twice and on a          -> positions 1 and 2 clicked
        # s2: a b c      a view on a, a click on c           -> position 3 clicked (a view is no click)
        # s3: a          a click on x, which was not shown   -> nothing clicked
        # s4: a b a      a click on a, shown twice           -> counted at its first position only
        # s5: (none)     no results                          -> shown nowhere
        store.register_session(_session("s1"))
        store.push_events("s1", [click("e1", "b"), click("e2", "b"), click("e3", "a")])
        store.register_session(_session("s2"))
        store.push_events("s2", [click("v1", "a", event_type="view"), click("e1", "c")])
        store.register_session(_session("s3", results=("a",)))
        store.push_events("s3", [click("e1", "x")])
        store.register_session(_session("s4", results=("a", "b", "a")))
        store.push_events("s4", [click("e1", "a")])
        store.register_session(_session("s5", results=()))
        batch_id = store.release_batch("r1").batch_id

        curve = store.batch_positions(batch_id, max_position=4)
        assert curve.batch_id == batch_id
        assert [p.model_dump() for p in curve.positions] == [
            {"position": 1, "shown": 4, "clicks": 2, "ctr": 0.5},
            {"position": 2, "shown": 3, "clicks": 1, "ctr": round(1 / 3, 6)},
            {"position": 3, "shown": 3, "clicks": 1, "ctr": round(1 / 3, 6)},
            {"position": 4, "shown": 0, "clicks": 0, "ctr": None},
        ]

    def test_every_position_up_to_the_default_20_is_listed(self, store: SessionStore) -> None:
        batch_id = store.register_session(_session("s1")).batch_id  # a collecting batch has a curve too
        positions = store.batch_positions(batch_id).positions
        assert [p.position for p in positions] == list(range(1, 21))
        assert [p.shown for p in positions[:4]] == [1, 1, 1, 0]

    def test_an_unknown_batch_is_not_found(self, store: SessionStore) -> None:
        with pytest.raises(NotFound, match="'nope'"):
            store.batch_positions("nope")

    @pytest.mark.parametrize("max_position", [0, 101])
    def test_max_position_out_of_bounds_is_invalid_naming_it(self, store: SessionStore, max_position: int) -> None:
        with pytest.raises(InvalidInput, match="^max_position: "):
            store.batch_positions("nope", max_position)


# ------------------------------------------------------------------------------------------------ dataset


class TestRecordDataset:
    def test_the_recorded_manifest_is_the_batch_dataset_and_a_second_record_replaces_it(
        self, store: SessionStore
    ) -> None:
        (batch_id,) = _release_batches(store, 1)
        store.record_dataset(batch_id, "file:///data/clickstream/x/_manifest.json")
        assert store.get_batch_summary(batch_id).dataset == "file:///data/clickstream/x/_manifest.json"
        store.record_dataset(batch_id, "s3://aws_default@bucket/x/_manifest.json")
        assert store.list_batches_page().batches[0].dataset == "s3://aws_default@bucket/x/_manifest.json"

    def test_unknown_collecting_and_empty_are_refused(self, store: SessionStore) -> None:
        collecting = store.register_session(_session("s1")).batch_id
        with pytest.raises(NotFound, match="'nope'"):
            store.record_dataset("nope", "/x/_manifest.json")
        with pytest.raises(Conflict, match="collecting"):
            store.record_dataset(collecting, "/x/_manifest.json")
        with pytest.raises(InvalidInput, match="^manifest_path: "):
            store.record_dataset(collecting, "")
        assert store.get_batch_summary(collecting).dataset is None


@pytest.fixture
def store(store_url: str) -> Iterator[SessionStore]:
    """A migrated store on the real clock (the live window accepts the bodies' timestamps of now)."""
    s = SessionStore.from_url(store_url)
    s.migrate()
    yield s
    s.dispose()
