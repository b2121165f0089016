"""Batch metrics on SQLite and PostgreSQL (store/metrics.py): computed metrics against a hand count, the kept
metrics (and how retention and erasure treat them), the metrics series, and the click-through rate by
result position."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from clickstream.store import InvalidInput, NotFound, SessionStore, create_store_engine, now_ms
from tests.store.helpers import (
    T0,
    Clock,
    RealClock,
    a_session,
    an_event,
    kept_metrics_rows,
    live_session,
    release_batches,
)
from tests.support.bodies import click


class TestBatchMetrics:
    def test_metrics_of_a_small_batch_match_a_hand_computation(self, store: SessionStore, clock: Clock) -> None:
        # s1: results a,b,c; first click on b (position 2, RR 1/2), later click on a  -> 2 clicks
        # s2: results a,b,c; a "view" on a (not a click), a click on c (position 3, RR 1/3)
        # s3: no events, marked irrelevant                                             -> RR 0
        # s4: results a; its only click is on x, which was not shown                   -> clicked, RR 0
        # s5: no events before release; one late click on b (position 2, RR 1/2)
        store.register_session(a_session("s1"))
        store.push_events("s1", [an_event("c2", "a", created_at=T0 + 20), an_event("c1", "b", created_at=T0 + 10)])
        store.register_session(a_session("s2"))
        store.push_events(
            "s2", [an_event("v1", "a", event_type="view", created_at=T0 + 1), an_event("c1", "c", created_at=T0 + 5)]
        )
        store.register_session(a_session("s3"))
        store.mark_irrelevant("s3")
        store.register_session(a_session("s4", results=("a",)))
        store.push_events("s4", [an_event("c1", "x")])
        store.register_session(a_session("s5", results=("a", "b")))

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
        store.push_events("s5", [an_event("c1", "b", created_at=clock.now)])
        after = store.batch_metrics(batch_id)
        assert (after.events, after.clicks, after.sessions_with_click, after.late_events) == (6, 5, 4, 1)
        assert after.click_through_rate == 4 / 5
        assert after.mean_reciprocal_rank == round((1 / 2 + 1 / 3 + 1 / 2) / 5, 6)
        assert after.no_click_rate == 1 / 5

    def test_a_batch_emptied_by_erasure_has_no_rates(self, store: SessionStore) -> None:
        batch_id = store.register_session(a_session("s1", user_id="u1")).batch_id
        assert batch_id is not None
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


class TestKeptMetrics(RealClock):
    def test_a_batch_released_without_the_metrics_task_gets_them_computed_once_and_kept(
        self, store: SessionStore
    ) -> None:
        (batch_id,) = release_batches(store, 1)
        assert kept_metrics_rows(store, batch_id) == 0
        first = store.get_batch_summary(batch_id)
        assert kept_metrics_rows(store, batch_id) == 1
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
        batch_id = store.register_session(live_session("s1")).batch_id
        assert batch_id is not None
        assert store.batch_metrics(batch_id).sessions == 1
        assert kept_metrics_rows(store, batch_id) == 0
        assert store.get_batch_summary(batch_id).metrics is None

    def test_a_purged_batch_takes_its_kept_metrics_along(self, store: SessionStore) -> None:
        first, second = release_batches(store, 2)
        store.list_batches_page()  # computes and keeps both
        assert kept_metrics_rows(store, first) == kept_metrics_rows(store, second) == 1
        store.purge_batch(first, duty_cycle=1)
        assert kept_metrics_rows(store, first) == 0 and kept_metrics_rows(store, second) == 1
        with pytest.raises(NotFound):
            store.get_batch_summary(first)
        assert [p.batch_id for p in store.metrics_series().metrics] == [second]

    def test_erasing_a_user_recomputes_the_metrics_of_their_batches_without_them(self, store: SessionStore) -> None:
        store.register_session(live_session("mine", user_id="u1"))
        store.push_events("mine", [click("e1", "a")])
        store.register_session(live_session("other", user_id="u2"))
        batch_id = store.release_batch("r1").batch_id
        store.register_session(live_session("elsewhere", user_id="u2"))
        other_batch = store.release_batch("r2").batch_id
        before = store.get_batch_summary(batch_id)
        assert before.metrics is not None
        assert (before.sessions, before.events, before.metrics.ctr) == (2, 1, 0.5)
        store.get_batch_summary(other_batch)

        store.erase_user("u1")
        assert kept_metrics_rows(store, batch_id) == 0  # forgotten with the user's sessions
        assert kept_metrics_rows(store, other_batch) == 1  # the user had nothing there
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
        store.register_session(live_session("mine", user_id="u1"))
        store.push_events("mine", [click("e1", "a")])
        store.register_session(live_session("other", user_id="u2"))
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
        assert kept_metrics_rows(store, batch_id) == 0
        after = store.get_batch_summary(batch_id)  # computed again, without the erased session
        assert after.metrics is not None and (after.sessions, after.metrics.ctr) == (1, 0.0)

    def test_an_older_snapshot_never_replaces_a_newer_one_and_no_clock_decides(
        self, store: SessionStore, store_url: str
    ) -> None:
        (batch_id,) = release_batches(store, 1)
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
        store.register_session(live_session("s1"))
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


# ------------------------------------------------------------------------------------------ metrics series


class TestMetricsSeries(RealClock):
    def test_the_last_released_batches_oldest_first_with_their_metrics(self, store: SessionStore) -> None:
        released = release_batches(store, 4, sessions=2)
        store.register_session(live_session("collecting"))
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


class TestBatchPositions(RealClock):
    def test_shown_clicks_and_ctr_per_position_match_a_hand_count(self, store: SessionStore) -> None:
        # s1: a b c      clicks on b twice and on a          -> positions 1 and 2 clicked
        # s2: a b c      a view on a, a click on c           -> position 3 clicked (a view is no click)
        # s3: a          a click on x, which was not shown   -> nothing clicked
        # s4: a b a      a click on a, shown twice           -> counted at its first position only
        # s5: (none)     no results                          -> shown nowhere
        store.register_session(live_session("s1"))
        store.push_events("s1", [click("e1", "b"), click("e2", "b"), click("e3", "a")])
        store.register_session(live_session("s2"))
        store.push_events("s2", [click("v1", "a", event_type="view"), click("e1", "c")])
        store.register_session(live_session("s3", results=("a",)))
        store.push_events("s3", [click("e1", "x")])
        store.register_session(live_session("s4", results=("a", "b", "a")))
        store.push_events("s4", [click("e1", "a")])
        store.register_session(live_session("s5", results=()))
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
        batch_id = store.register_session(live_session("s1")).batch_id  # a collecting batch has a curve too
        assert batch_id is not None
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
