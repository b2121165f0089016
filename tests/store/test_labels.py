"""Training-signal labels through the store, on SQLite and PostgreSQL: the counts the click model is fitted on
equal a pandas computation over the extracted dataset; the fit recovers θ and γ of a seeded ground-truth batch
(``clickstream.synthetic`` truth mode) within stated tolerances; an unidentifiable batch is reported, not
guessed; the per-session pass; erasure and the keep discipline; the reads (propensities, judgments pages)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from clickstream import synthetic
from clickstream.signal.evaluate import score_fit
from clickstream.signal.normalize import normalize_query
from clickstream.store import Conflict, InvalidInput, NotFound, SessionStore
from tests.support.bodies import click, session_body


@pytest.fixture
def store(live_store: SessionStore) -> SessionStore:
    """The sessions here carry timestamps of now: the store runs on the real clock (tests/store/conftest.py)."""
    return live_store


def _session(session_id: str, query: str | None, results: tuple[str, ...] = ("a", "b", "c"), **fields: Any) -> dict:
    return session_body(session_id, search_query=query, search_results=[{"object_id": o} for o in results], **fields)


def _extracted(store: SessionStore, batch_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    sessions, events = [], []
    for page in store.iter_extract_pages(batch_id, page_size=250):
        sessions += [json.loads(line) for line in page.sessions_json.decode().splitlines() if line]
        events += [json.loads(line) for line in page.events_json.decode().splitlines() if line]
    return pd.DataFrame(sessions), pd.DataFrame(events, columns=["session_id", "object_id", "event_type"])


def _pandas_counts(sessions: pd.DataFrame, events: pd.DataFrame, types: set[str]) -> dict[tuple, tuple[int, int]]:
    """(query key, object, position) -> (impressions, clicks) over the extracted dataset: keyword sessions not
    marked irrelevant, each object at its first position, clicked when it has an event of ``types``."""
    kw = sessions[sessions["search_query"].notna() & ~sessions["is_irrelevant"]].copy()
    kw["key"] = kw["search_query"].map(normalize_query)
    kw = kw[kw["key"] != ""]
    shown = kw[["session_id", "key", "search_results"]].explode("search_results").dropna(subset=["search_results"])
    shown["object_id"] = shown["search_results"].map(lambda r: r["object_id"])
    shown["position"] = shown.groupby("session_id").cumcount() + 1
    shown = shown.groupby(["session_id", "key", "object_id"], as_index=False)["position"].min()
    positives = events[events["event_type"].isin(types)][["session_id", "object_id"]].drop_duplicates()
    shown = shown.merge(positives.assign(clicked=1), on=["session_id", "object_id"], how="left").fillna({"clicked": 0})
    grouped = shown.groupby(["key", "object_id", "position"]).agg(n=("session_id", "size"), m=("clicked", "sum"))
    return {k: (int(r.n), int(r.m)) for k, r in grouped.iterrows()}


def _store_counts(labels: Any) -> dict[tuple, tuple[int, int]]:
    c = labels.counts
    return {
        (c.pair_query[p], c.pair_object[p], int(k)): (int(n), int(m))
        for p, k, n, m in zip(c.row_pair, c.row_position, c.row_impressions, c.row_clicks, strict=True)
    }


class TestAggregation:
    def test_the_fitted_counts_equal_pandas_over_the_extracted_dataset(self, store: SessionStore) -> None:
        store.config = replace(store.config, label_event_types="click, download")
        seeded = synthetic.seed_store(store, 400, seed=5, release_id="r")
        assert seeded.release is not None
        batch_id = seeded.release["batch_id"]
        labels = store.fit_batch_labels(batch_id)
        sessions, events = _extracted(store, batch_id)
        expected = _pandas_counts(sessions, events, {"click", "download"})
        assert _store_counts(labels) == expected and len(expected) > 100

        report = labels.report
        keyword = sessions[sessions["search_query"].notna()]
        assert report.kept and report.label_event_types == ["click", "download"]
        assert report.sessions == len(sessions) == seeded.sessions
        assert report.payload_search_sessions == seeded.payload_search_sessions == len(sessions) - len(keyword)
        assert report.irrelevant_sessions == int(keyword["is_irrelevant"].sum()) > 0
        assert report.fitted_sessions == len(keyword) - report.irrelevant_sessions - report.empty_query_sessions
        assert report.impressions == sum(n for n, _ in expected.values())
        assert report.clicks == sum(m for _, m in expected.values())

        # per position: the kept curve's impressions and clicks are the same sums
        curve = store.batch_propensities(batch_id).propensities
        for p in curve:
            at = [v for (_, _, k), v in expected.items() if k == p.position]
            assert (p.impressions, p.clicks) == (sum(n for n, _ in at), sum(m for _, m in at))


class TestRecovery:
    # Tolerances (20 queries x 20 candidates, pages of 10, 6,000 sessions; bench/bench_labels.py measures the
    # estimator on more): θ_k within 0.05 of the truth at every position 1..10, and the debiased γ closer to the
    # truth than the raw CTR, with a mean absolute error below 0.08 over pairs with >= 50 impressions.
    def test_theta_and_gamma_of_a_ground_truth_batch(self, store: SessionStore) -> None:
        truth = synthetic.pbm_truth(seed=3, n_queries=20, n_candidates=20, max_position=10, page_sizes=(10,))
        seeded = synthetic.seed_store(store, 6000, seed=3, release_id="truth", truth=truth)
        assert seeded.release is not None
        labels = store.fit_batch_labels(seeded.release["batch_id"])
        assert labels.report.kept and labels.report.converged
        assert labels.report.identified_positions == list(range(1, 11))
        score = score_fit(labels.fit, truth.theta, truth.gamma_by_pair(), positions=10, min_impressions=50)
        assert score.theta_max_abs_error < 0.05, score
        assert score.gamma_pairs > 100
        assert score.gamma_mae < 0.08 and score.gamma_mae < score.naive_gamma_mae, score
        # positions beyond the pages are reported as unidentified, with no number
        assert set(labels.report.unidentified_positions) == {str(k) for k in range(11, 21)}
        assert all(math.isnan(x) for x in labels.fit.theta[10:])


class TestUnidentifiable:
    def test_one_fixed_ranking_identifies_position_1_only_and_says_why(self, store: SessionStore) -> None:
        for i in range(6):
            store.register_session(_session(f"s{i}", "same query"))
        store.push_events("s0", [click("e0", "a")])
        store.push_events("s1", [click("e1", "b")])
        store.push_events("s2", [click("e2", "b"), click("e3", "a")])
        batch_id = store.release_batch("r").batch_id
        labels = store.fit_batch_labels(batch_id)
        assert labels.report.identified_positions == [1]
        assert "not linked to position 1" in labels.report.unidentified_positions["2"]
        assert "no clicks" in labels.report.unidentified_positions["3"]
        curve = store.batch_propensities(batch_id).propensities
        assert curve[0].theta == 1.0 and curve[1].theta is None and curve[1].theta_se is None
        assert (curve[1].impressions, curve[1].clicks, curve[1].raw_ctr) == (6, 2, pytest.approx(2 / 6))
        # the pairs get no weight at an unidentified position: no pair is invented
        assert labels.theta[:3] == [1.0, None, None]
        judgments = store.batch_judgments(batch_id).judgments
        assert {j.object_id: j.gamma is None for j in judgments} == {"a": False, "b": True, "c": True}

    def test_a_batch_without_clicks_at_the_top_identifies_nothing(self, store: SessionStore) -> None:
        store.register_session(_session("s0", "q"))
        store.push_events("s0", [click("e0", "b")])
        labels = store.fit_batch_labels(store.release_batch("r").batch_id)
        assert labels.report.identified_positions == [] and "position 1 has no clicks" in labels.report.identifiability
        assert labels.theta == [None] * 20


class TestLeftOut:
    def test_payload_irrelevant_and_empty_queries_are_counted_not_fitted(self, store: SessionStore) -> None:
        store.register_session(_session("k1", "q"))
        store.register_session(_session("k2", "Q "))
        store.register_session(_session("irr", "q"))
        store.mark_irrelevant("irr")
        store.register_session(_session("pay", None, is_payload_search=True))
        store.register_session(_session("blank", "   "))
        for sid in ("k1", "irr", "pay", "blank"):
            store.push_events(sid, [click(f"e-{sid}", "a")])
        batch_id = store.release_batch("r").batch_id
        report = store.fit_batch_labels(batch_id).report
        assert (report.sessions, report.fitted_sessions) == (5, 2)
        assert (report.payload_search_sessions, report.irrelevant_sessions, report.empty_query_sessions) == (1, 1, 1)
        assert (report.impressions, report.clicks) == (6, 1)
        pages = list(store.iter_label_sessions(batch_id, page_size=1))
        assert [[s.session_id for s in p.sessions] for p in pages] == [["k1"]]  # k2 has no click: no pair
        assert pages[0].sessions[0].results == ("a", "b", "c") and pages[0].sessions[0].clicked == {"a"}


class TestReads:
    def test_judgment_pages_visit_every_kept_row_once_in_order(self, store: SessionStore) -> None:
        for i, q in enumerate(["x", "y", "y", "z"]):
            store.register_session(_session(f"s{i}", q, results=("a", "b", "c", "d")))
        batch_id = store.release_batch("r").batch_id
        store.fit_batch_labels(batch_id)
        seen, after = [], None
        while True:
            page = store.batch_judgments(batch_id, limit=5, after=after)
            seen += [(j.query, j.object_id) for j in page.judgments]
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == sorted((q, o) for q in "xyz" for o in "abcd")
        assert [j.object_id for j in store.batch_judgments(batch_id, query=" Y").judgments] == ["a", "b", "c", "d"]

    def test_the_store_keeps_the_top_queries_judgments_only(self, store: SessionStore) -> None:
        store.config = replace(store.config, analytics_top_n=1)
        for i, q in enumerate(["x", "y", "y"]):
            store.register_session(_session(f"s{i}", q))
        batch_id = store.release_batch("r").batch_id
        report = store.fit_batch_labels(batch_id).report
        assert (report.distinct_queries, report.kept_queries, report.judgments, report.kept_judgments) == (2, 1, 6, 3)
        page = store.batch_judgments(batch_id)
        assert {j.query for j in page.judgments} == {"y"} and (page.kept_queries, page.distinct_queries) == (1, 2)

    @pytest.mark.parametrize(
        ("kwargs", "field"), [({"limit": 0}, "limit"), ({"after": "x"}, "after"), ({"query": " "}, "query")]
    )
    def test_bad_parameters_name_the_field(self, store: SessionStore, kwargs: dict, field: str) -> None:
        store.register_session(_session("s", "q"))
        batch_id = store.release_batch("r").batch_id
        store.fit_batch_labels(batch_id)
        with pytest.raises(InvalidInput, match=field):
            store.batch_judgments(batch_id, **kwargs)

    def test_unknown_collecting_and_not_fitted_batches(self, store: SessionStore) -> None:
        with pytest.raises(NotFound):
            store.batch_propensities("nope")
        with pytest.raises(NotFound):
            store.fit_batch_labels("nope")
        store.register_session(_session("s", "q"))
        collecting = store.list_batches()[0].batch_id
        with pytest.raises(Conflict, match="collecting"):
            store.fit_batch_labels(collecting)
        with pytest.raises(Conflict, match="collecting"):
            store.batch_judgments(collecting)
        released = store.release_batch("r").batch_id
        with pytest.raises(Conflict, match="no labels kept yet"):
            store.batch_propensities(released)


class TestErasure:
    def _kept(self, store: SessionStore, table: str = "cs_batch_labels") -> int:
        with store.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()

    def test_erased_users_sessions_never_reach_the_labels(self, store: SessionStore) -> None:
        store.register_session(_session("s1", "q", user_id="u1"))
        store.register_session(_session("s2", "q", user_id="u2"))
        store.push_events("s1", [click("e1", "b")])
        store.push_events("s2", [click("e2", "a")])
        batch_id = store.release_batch("r").batch_id
        assert store.fit_batch_labels(batch_id).report.clicks == 2
        assert self._kept(store) == 1 and self._kept(store, "cs_batch_judgment") == 3
        store.erase_user("u1")
        assert self._kept(store) == 0 and self._kept(store, "cs_batch_judgment") == 0  # cascade
        with pytest.raises(Conflict, match="no labels kept yet"):
            store.batch_propensities(batch_id)
        labels = store.fit_batch_labels(batch_id)
        assert (labels.report.fitted_sessions, labels.report.clicks) == (1, 1)
        sessions = [s.session_id for p in store.iter_label_sessions(batch_id) for s in p.sessions]
        assert sessions == ["s2"]

    def test_a_fit_older_than_an_erasure_is_not_kept(self, store: SessionStore) -> None:
        store.register_session(_session("s1", "q", user_id="u1"))
        store.register_session(_session("s2", "q", user_id="u2"))
        batch_id = store.release_batch("r").batch_id
        real_keep = store._keep_labels

        def erase_then_keep(*args: Any) -> bool:
            store.erase_user("u1")  # between the snapshot and the keep-write
            return real_keep(*args)

        store._keep_labels = erase_then_keep  # type: ignore[method-assign,assignment]
        assert store.fit_batch_labels(batch_id).report.kept is False
        del store._keep_labels
        assert self._kept(store) == 0
        assert store.fit_batch_labels(batch_id).report.kept is True
        assert store.batch_propensities(batch_id).report.fitted_sessions == 1

    def test_retention_deletes_the_kept_labels_with_the_batch(self, store: SessionStore) -> None:
        store.register_session(_session("s1", "q"))
        batch_id = store.release_batch("r").batch_id
        store.fit_batch_labels(batch_id)
        store.purge_batch(batch_id, duty_cycle=1)
        assert (self._kept(store), self._kept(store, "cs_batch_judgment")) == (0, 0)
