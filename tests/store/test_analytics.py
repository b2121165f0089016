"""Search analytics by query, on SQLite and PostgreSQL: the kept numbers equal a pandas computation over the
extracted dataset, query normalization, sessions without results, range merges with lower-bound flags, paging,
and erasure (with the generation discipline of the kept metrics)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, cast

import pandas as pd
import pytest
import sqlalchemy as sa

from clickstream import synthetic
from clickstream.signal.normalize import normalize_query
from clickstream.store import Conflict, InvalidInput, NotFound, SessionStore
from clickstream.store.aggregation import aggregate_batch
from tests.support.bodies import click, session_body


@pytest.fixture
def store(live_store: SessionStore) -> SessionStore:
    """The sessions here carry timestamps of now: the store runs on the real clock (tests/store/conftest.py)."""
    return live_store


def _session(session_id: str, query: str | None, results: tuple[str, ...] = ("a", "b", "c"), **fields: Any) -> dict:
    return session_body(session_id, search_query=query, search_results=[{"object_id": o} for o in results], **fields)


def _small_top(store: SessionStore, top_n: int) -> SessionStore:
    store.config = replace(store.config, analytics_top_n=top_n)
    return store


def _extracted(store: SessionStore, batch_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    sessions, events = [], []
    for page in store.iter_extract_pages(batch_id, page_size=250):
        sessions += [json.loads(line) for line in page.sessions_json.decode().splitlines() if line]
        events += [json.loads(line) for line in page.events_json.decode().splitlines() if line]
    return pd.DataFrame(sessions), pd.DataFrame(
        events, columns=["session_id", "object_id", "event_type", "event_index"]
    )


def _pandas_analytics(sessions: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per normalized query and per object, from the extracted dataset (definitions of store.aggregation)."""
    kw = sessions[sessions["search_query"].notna()].copy()
    kw["key"] = kw["search_query"].map(normalize_query)
    kw["n_results"] = kw["search_results"].map(len)
    shown = kw[["session_id", "key", "search_results"]].explode("search_results").dropna(subset=["search_results"])
    shown["object_id"] = shown["search_results"].map(lambda r: r["object_id"])
    shown["position"] = shown.groupby("session_id").cumcount() + 1
    shown = shown.groupby(["session_id", "key", "object_id"], as_index=False)["position"].min()  # first position
    clicks = events[events["event_type"] == "click"]
    clicked = clicks[["session_id", "object_id"]].drop_duplicates().assign(clicked=1)
    shown = shown.merge(clicked, on=["session_id", "object_id"], how="left").fillna({"clicked": 0})
    first = clicks.sort_values("event_index").groupby("session_id", as_index=False).first()
    first = first.merge(shown[["session_id", "object_id", "position"]], on=["session_id", "object_id"], how="left")
    first["rr"] = (1.0 / first["position"]).fillna(0.0)
    kw = kw.merge(first[["session_id", "rr"]].assign(with_click=1), on="session_id", how="left").fillna(
        {"rr": 0.0, "with_click": 0}
    )
    shown["click_position"] = shown["position"] * shown["clicked"]
    per_query = kw.groupby("key").agg(
        sessions=("session_id", "count"),
        sessions_with_click=("with_click", "sum"),
        rr_sum=("rr", "sum"),
        results_shown_sum=("n_results", "sum"),
        no_result_sessions=("n_results", lambda n: int((n == 0).sum())),
        irrelevant_sessions=("is_irrelevant", "sum"),
    )
    per_query = per_query.join(
        shown.groupby("key").agg(clicks=("clicked", "sum"), click_position_sum=("click_position", "sum"))
    ).fillna(0)
    per_object = shown.groupby("object_id").agg(
        impressions=("session_id", "count"), clicks=("clicked", "sum"), position_sum=("position", "sum")
    )
    return per_query, per_object


def _seed_mixed(store: SessionStore, n: int, seed: int, release_id: str) -> str:
    """A synthetic batch plus hand-made sessions: no results, query variants (case, spaces, NFKC), a result
    listed twice; released; its id."""
    synthetic.seed_store(store, n, seed=seed, id_prefix=f"m{seed}", n_queries=40, n_objects=300)
    store.register_session(_session(f"v1-{seed}", "Transformer  Retrieval", ("a", "b", "a")))
    store.push_events(f"v1-{seed}", [click("e1", "a"), click("e2", "b")])
    store.register_session(_session(f"v2-{seed}", " transformer retrieval ", ()))
    store.register_session(_session(f"v3-{seed}", "ｔｒａｎｓｆｏｒｍｅｒ\tretrieval", ("c",)))
    store.push_events(f"v3-{seed}", [click("e1", "zz")])  # a click on nothing shown
    store.register_session(_session(f"v4-{seed}", "nothing found", ()))
    return store.release_batch(release_id).batch_id


class TestEqualsPandas:
    def test_every_kept_number_equals_pandas_over_the_extracted_dataset(self, store: SessionStore) -> None:
        batch_id = _seed_mixed(store, 400, 3, "r1")
        computed = store.compute_batch_analytics(batch_id)
        assert computed.kept and computed.kept_queries == computed.distinct_queries  # nothing cut at 1000
        per_query, per_object = _pandas_analytics(*_extracted(store, batch_id))

        page = store.top_searches(limit=1000, batch_id=batch_id)
        assert page.total == len(per_query) == computed.distinct_queries
        for row in page.searches:
            expected = per_query.loc[row.query]
            assert row.sessions == expected["sessions"]
            assert row.sessions_with_click == expected["sessions_with_click"]
            assert row.no_result_sessions == expected["no_result_sessions"]
            assert row.irrelevant_sessions == expected["irrelevant_sessions"]
            assert row.clicks == expected["clicks"]
            assert row.mean_reciprocal_rank == pytest.approx(expected["rr_sum"] / expected["sessions"], abs=1e-6)
            assert row.mean_results_shown == pytest.approx(
                expected["results_shown_sum"] / expected["sessions"], abs=1e-6
            )
            if expected["clicks"]:
                assert row.avg_click_position == pytest.approx(
                    expected["click_position_sum"] / expected["clicks"], abs=1e-6
                )
            assert row.lower_bound is False

        hits = store.top_hits(limit=1000, batch_id=batch_id)
        assert hits.total == len(per_object)
        for hit in hits.hits:
            expected = per_object.loc[hit.object_id]
            assert (hit.impressions, hit.clicks) == (expected["impressions"], expected["clicks"])
            assert hit.mean_position == pytest.approx(expected["position_sum"] / expected["impressions"], abs=1e-6)

        totals = page.range
        assert totals.keyword_sessions == per_query["sessions"].sum()
        assert totals.sessions_with_click == per_query["sessions_with_click"].sum()
        assert totals.no_result_sessions == per_query["no_result_sessions"].sum()

    def test_the_batch_totals_agree_with_the_batch_metrics(self, store: SessionStore) -> None:
        synthetic.seed_store(store, 300, seed=5, payload_search_rate=0.0)  # every session a keyword session
        batch_id = store.release_batch("r").batch_id
        store.compute_batch_analytics(batch_id)
        metrics = store.batch_metrics(batch_id)
        totals = store.top_searches(batch_id=batch_id).range
        assert totals.sessions == totals.keyword_sessions == metrics.sessions
        assert totals.click_through_rate == metrics.click_through_rate
        assert totals.mean_reciprocal_rank == metrics.mean_reciprocal_rank
        curve = store.batch_positions(batch_id).positions
        clicks = sum(p.clicks for p in curve)
        assert clicks == sum(r.clicks for r in store.top_searches(limit=1000, batch_id=batch_id).searches)

    def test_label_clicks_count_the_configured_event_types(self, store: SessionStore) -> None:
        store.register_session(_session("s1", "q", ("a", "b")))
        store.push_events("s1", [click("e1", "a"), click("e2", "b", event_type="download")])
        batch_id = store.release_batch("r").batch_id
        with store.db.transaction(write=False) as conn:
            agg = aggregate_batch(store.db, conn, batch_id, label_event_types=("click", "download"))
        rows = {(i.object_id, i.position): (i.shown, i.clicks, i.label_clicks) for i in agg.impressions}
        assert rows == {("a", 1): (1, 1, 1), ("b", 2): (1, 0, 1)}

    def test_the_labels_mode_keeps_the_impressions_and_session_counts(self, store: SessionStore) -> None:
        synthetic.seed_store(store, 400, seed=3, id_prefix="lm", n_queries=30, n_objects=200)
        store.register_session(_session("x1", "q", ("a", "b", "a")))
        store.push_events("x1", [click("e1", "a"), click("e2", "b", event_type="download"), click("e3", "zz")])
        store.register_session(_session("x2", "q", ("a",)))
        store.push_events("x2", [click("e4", "a")])
        store.mark_irrelevant("x2")
        store.register_session(_session("x3", "  ", ("b",)))
        store.push_events("x3", [click("e5", "b")])
        store.register_session(_session("x4", None, ("a",), is_payload_search=True))
        store.push_events("x4", [click("e6", "a")])
        batch_id = store.release_batch("r").batch_id
        types = ("click", "download")
        with store.db.transaction(write=False) as conn:
            full = aggregate_batch(store.db, conn, batch_id, label_event_types=types)
            lean = aggregate_batch(store.db, conn, batch_id, label_event_types=types, labels=True)
        assert sorted(lean.impressions) == sorted(full.impressions)
        assert any(i.label_clicks for i in lean.impressions)
        counts = ("sessions", "results_shown_sum", "no_result_sessions", "irrelevant_sessions")
        assert {k: [getattr(q, c) for c in counts] for k, q in lean.queries.items()} == {
            k: [getattr(q, c) for c in counts] for k, q in full.queries.items()
        }
        for c in ("sessions", "events", "irrelevant_all", "payload_search_sessions", "keyword_sessions", *counts[1:]):
            assert getattr(lean.totals, c) == getattr(full.totals, c), c
        assert lean.totals.impressions == full.totals.impressions


class TestNormalization:
    @pytest.mark.parametrize(
        "text, key",
        [
            ("Transformer  Retrieval", "transformer retrieval"),
            ("  a\tb\n", "a b"),
            ("ｂｅｒｔ", "bert"),
            ("ﬁne", "fine"),
        ],
    )
    def test_normalize_query(self, text: str, key: str) -> None:
        assert normalize_query(text) == key

    def test_variants_are_one_query_and_the_stored_text_never_changes(self, store: SessionStore) -> None:
        for i, q in enumerate(["BERT  base", "bert base", " ｂｅｒｔ base"]):
            store.register_session(_session(f"s{i}", q))
        batch_id = store.release_batch("r").batch_id
        store.compute_batch_analytics(batch_id)
        rows = store.top_searches(batch_id=batch_id).searches
        assert [(r.query, r.sessions) for r in rows] == [("bert base", 3)]
        assert store.get_session("s0").search_query == "BERT  base"
        assert store.query_analytics("Bert Base", batch_id=batch_id).summary.sessions == 3


class TestNoResults:
    def test_sessions_without_results_are_listed(self, store: SessionStore) -> None:
        store.register_session(_session("s1", "nothing", ()))
        store.register_session(_session("s2", "nothing", ()))
        store.register_session(_session("s3", "nothing", ("a",)))
        store.register_session(_session("s4", "something", ("a",)))
        batch_id = store.release_batch("r").batch_id
        store.compute_batch_analytics(batch_id)
        page = store.searches_without_results(batch_id=batch_id)
        assert [(r.query, r.no_result_sessions, r.sessions) for r in page.searches] == [("nothing", 2, 3)]
        assert page.range.no_result_sessions == 2
        no_clicks = store.searches_without_clicks(batch_id=batch_id)
        assert [(r.query, r.no_click_sessions) for r in no_clicks.searches] == [("nothing", 3), ("something", 1)]


def _batch(store: SessionStore, tag: str, queries: dict[str, int], clicks: dict[str, int] | None = None) -> str:
    for q, n in queries.items():
        for j in range(n):
            sid = f"{tag}-{q}-{j}"
            store.register_session(_session(sid, q, ("a", "b"), user_id=f"user-{tag}"))
            if j < (clicks or {}).get(q, 0):
                store.push_events(sid, [click("e1", "b")])
    batch_id = store.release_batch(f"r-{tag}").batch_id
    store.compute_batch_analytics(batch_id)
    return batch_id


class TestRanges:
    def test_a_range_merges_and_flags_lower_bounds(self, store: SessionStore) -> None:
        _small_top(store, 2)
        b1 = _batch(store, "1", {"x": 3, "y": 2})  # nothing cut
        b2 = _batch(store, "2", {"x": 1, "y": 4, "z": 5})  # x cut (top 2 by sessions: z, y; no-click list: z, y)
        page = store.top_searches(last=2)
        assert page.range.batches == [b2, b1] and page.range.cut_batches == 1
        rows = {r.query: (r.sessions, r.lower_bound) for r in page.searches}
        assert rows == {"x": (3, True), "y": (6, False), "z": (5, False)}
        only_first = store.top_searches(batch_id=b1).searches
        assert {r.query: (r.sessions, r.lower_bound) for r in only_first} == {"x": (3, False), "y": (2, False)}
        over_time = store.query_analytics("x", last=2)
        assert [(p.batch_id, p.kept, p.sessions, p.lower_bound) for p in over_time.batches] == [
            (b1, True, 3, False),
            (b2, False, 0, True),
        ]
        assert over_time.summary.lower_bound is True and over_time.labels is None

    def test_release_times_select_the_range(self, store: SessionStore) -> None:
        b1 = _batch(store, "1", {"x": 1})
        b2 = _batch(store, "2", {"x": 2})
        released = cast(dict[str, int], {b.batch_id: b.released_at for b in store.list_batches()})
        assert store.top_searches(from_ms=released[b2]).range.batches == [b2]
        assert store.top_searches(to_ms=released[b2]).range.batches == [b1]
        assert store.top_searches(from_ms=0, to_ms=released[b2] + 1).searches[0].sessions == 3
        assert store.top_searches().range.batches == [b2]  # default: the last released batch

    def test_a_batch_without_kept_analytics_is_listed_as_missing(self, store: SessionStore) -> None:
        b1 = _batch(store, "1", {"x": 1})
        store.register_session(_session("later", "x"))
        b2 = store.release_batch("r2").batch_id
        page = store.top_searches(last=5)
        assert (page.range.batches, page.range.missing) == ([b1], [b2])
        assert store.compute_missing_analytics().computed == [b2]
        assert store.top_searches(last=5).range.missing == []

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            ({"batch_id": "b", "last": 2}, "batch_id"),
            ({"last": 2, "from_ms": 1}, "last"),
            ({"last": 0}, "last"),
            ({"from_ms": 5, "to_ms": 5}, "to"),
            ({"from_ms": -1}, "from"),
            ({"limit": 0}, "limit"),
            ({"order_by": "nope"}, "order_by"),
            ({"direction": "up"}, "direction"),
            ({"after": "garbage"}, "after"),
        ],
    )
    def test_bad_selections_name_the_field(self, store: SessionStore, kwargs: dict, field: str) -> None:
        with pytest.raises(InvalidInput) as err:
            store.top_searches(**kwargs)
        assert err.value.detail.startswith(f"{field}: ")

    def test_unknown_and_collecting_batches(self, store: SessionStore) -> None:
        with pytest.raises(NotFound):
            store.top_searches(batch_id="nope")
        collecting = store.register_session(_session("s1", "q")).batch_id
        assert collecting is not None
        with pytest.raises(Conflict):
            store.top_searches(batch_id=collecting)
        with pytest.raises(Conflict):
            store.compute_batch_analytics(collecting)


class TestPaging:
    @pytest.mark.parametrize("order_by", ["count", "ctr", "no_click_rate", "avg_click_position"])
    @pytest.mark.parametrize("direction", ["asc", "desc"])
    def test_pages_visit_every_query_once_in_order(self, store: SessionStore, order_by: str, direction: str) -> None:
        batch_id = _seed_mixed(store, 200, 7, "r")
        store.compute_batch_analytics(batch_id)
        whole = store.top_searches(order_by, direction, limit=1000, batch_id=batch_id)
        seen, after = [], None
        while True:
            page = store.top_searches(order_by, direction, limit=7, after=after, batch_id=batch_id)
            seen += [r.query for r in page.searches]
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == [r.query for r in whole.searches] and len(seen) == whole.total

    def test_a_cursor_of_another_ordering_is_refused(self, store: SessionStore) -> None:
        batch_id = _batch(store, "1", {"x": 1, "y": 2})
        after = store.top_searches(limit=1, batch_id=batch_id).next_after
        assert after is not None
        with pytest.raises(InvalidInput, match="^after: "):
            store.top_searches("ctr", limit=1, after=after, batch_id=batch_id)

    def test_hits_page_too(self, store: SessionStore) -> None:
        batch_id = _seed_mixed(store, 100, 9, "r")
        store.compute_batch_analytics(batch_id)
        whole = store.top_hits("ctr", "asc", limit=1000, batch_id=batch_id).hits
        seen, after = [], None
        while True:
            page = store.top_hits("ctr", "asc", limit=50, after=after, batch_id=batch_id)
            seen += page.hits
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == whole


class TestErasure:
    def _kept(self, store: SessionStore, table: str = "cs_batch_analytics") -> int:
        with store.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()

    def test_erasure_removes_the_users_sessions_from_the_kept_analytics(self, store: SessionStore) -> None:
        b1 = _batch(store, "1", {"x": 2, "y": 1})
        b2 = _batch(store, "2", {"x": 1})
        assert self._kept(store) == 2 and self._kept(store, "cs_batch_query") == 3
        store.erase_user("user-1")
        assert self._kept(store) == 1 and self._kept(store, "cs_batch_query") == 1  # b1's rows, by cascade
        assert self._kept(store, "cs_batch_query_object") == 2 and self._kept(store, "cs_batch_object") == 2
        assert store.top_searches(last=2).range.missing == [b1]
        store.compute_missing_analytics()
        assert [r.query for r in store.top_searches(batch_id=b1).searches] == []
        assert store.top_searches(batch_id=b2).searches[0].sessions == 1

    def test_a_computation_older_than_an_erasure_is_not_kept(self, store: SessionStore) -> None:
        store.register_session(_session("s1", "x", user_id="u1"))
        store.register_session(_session("s2", "x", user_id="u2"))
        batch_id = store.release_batch("r").batch_id
        real_keep = store._keep_analytics

        def erase_then_keep(*args: Any) -> bool:
            store.erase_user("u1")  # between the snapshot and the keep-write
            return real_keep(*args)

        store._keep_analytics = erase_then_keep  # type: ignore[method-assign,assignment]
        assert store.compute_batch_analytics(batch_id).kept is False
        del store._keep_analytics
        assert self._kept(store) == 0
        assert store.compute_batch_analytics(batch_id).kept is True
        assert store.top_searches(batch_id=batch_id).searches[0].sessions == 1

    def test_retention_deletes_the_kept_analytics_with_the_batch(self, store: SessionStore) -> None:
        batch_id = _batch(store, "1", {"x": 2})
        store.purge_batch(batch_id, duty_cycle=1)
        assert [self._kept(store, t) for t in ("cs_batch_analytics", "cs_batch_query", "cs_batch_object")] == [0, 0, 0]
