"""The synthetic clickstream: deterministic, realistic in shape, and seeded through the store's operations."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from clickstream import models
from clickstream.store import SessionStore
from clickstream.synthetic import generate, push_late_events, seed_store

START = 1_700_000_000_000


def _sample(n: int = 3000, seed: int = 7):
    return list(generate(n, seed=seed, start_ms=START))


class TestGenerate:
    def test_the_same_seed_gives_the_same_clickstream_and_another_seed_another(self):
        assert _sample(200, 1) == _sample(200, 1)
        assert _sample(200, 1) != _sample(200, 2)

    def test_sessions_and_events_have_the_api_shapes(self):
        for s in _sample(500):
            models.SessionIn.model_validate(s.session)
            for e in s.events + s.late_events:
                models.EventIn.model_validate(e)
                assert s.session["created_at"] < e["created_at"] <= s.session["created_at"] + 120_000

    def test_query_popularity_is_zipf_skewed(self):
        queries = Counter(s.session["search_query"] for s in _sample() if s.session["search_query"])
        top = queries.most_common()
        assert len(top) > 200  # a long tail of distinct queries
        assert top[0][1] > 10 * top[49][1]  # the head query is far more frequent than the 50th
        assert sum(c for _, c in top[:10]) > 0.2 * sum(queries.values())

    def test_sessions_show_several_ranked_results(self):
        for s in _sample(500):
            ranks = [r["rank"] for r in s.session["search_results"]]
            assert 5 <= len(ranks) <= 20 and ranks == [float(i) for i in range(1, len(ranks) + 1)]

    def test_clicks_are_more_likely_on_top_ranks(self):
        ranks = Counter(
            e["meta"]["clicked_rank"] for s in _sample() for e in s.events + s.late_events if e["event_type"] == "click"
        )
        assert ranks[1] > ranks[2] > ranks[4] > ranks[8] > 0

    def test_some_sessions_are_irrelevant_payload_searches_late_or_without_clicks(self):
        sample = _sample()
        irrelevant = [s for s in sample if s.session["is_irrelevant"]]
        payload = [s for s in sample if s.session["is_payload_search"]]
        late = [s for s in sample if s.late_events]
        no_click = [s for s in sample if not any(e["event_type"] == "click" for e in s.events + s.late_events)]
        n = len(sample)
        assert 0.02 * n < len(irrelevant) < 0.1 * n and all(not s.events for s in irrelevant)
        assert 0.04 * n < len(payload) < 0.15 * n
        assert all(s.session["search_query"] is None and s.session["payload_filter"] for s in payload)
        assert 0.01 * n < len(late) < 0.1 * n
        assert 0.15 * n < len(no_click) < 0.5 * n

    def test_a_negative_count_is_refused(self):
        with pytest.raises(ValueError, match="n_sessions"):
            list(generate(-1, seed=0, start_ms=START))


class TestSeedStore:
    def test_counts_match_what_the_store_holds(self, store: SessionStore):
        counts = seed_store(store, 300, seed=3, release_id="seed-r")
        assert counts.release is not None
        batch_id = counts.release["batch_id"]
        assert counts.batch_ids == [batch_id] and store.get_batch(batch_id).status == "released"
        batch = [s for page in store.iter_batch_pages(batch_id) for s in page]
        assert len(batch) == counts.sessions == 300
        assert sum(len(s["events"]) for s in batch) == counts.events + counts.late_events
        metrics = store.batch_metrics(batch_id)
        assert metrics.late_events == counts.late_events > 0
        assert metrics.sessions_with_click == counts.sessions_with_click
        assert metrics.irrelevant_rate is not None
        assert round(metrics.irrelevant_rate * 300) == counts.irrelevant_sessions

    def test_held_late_events_are_pushed_after_the_callers_release(self, store: SessionStore):
        counts = seed_store(store, 200, seed=4, hold_late=True)
        assert counts.late_events == 0 and counts.late_events_held > 0
        release = store.release_batch("mine")
        assert store.batch_metrics(release.batch_id).late_events == 0
        stored = push_late_events(store, counts)
        assert stored == counts.late_events == store.batch_metrics(release.batch_id).late_events
        assert counts.late_events_held == 0

    def test_reseeding_with_the_same_seed_and_clock_is_a_no_op(self, store: SessionStore):
        now = store.clock()
        store.clock = lambda: now  # timestamps derive from the store's clock: freeze it
        first = seed_store(store, 20, seed=5)
        again = seed_store(store, 20, seed=5)
        assert (first.sessions, first.already_registered) == (20, 0)
        assert (again.sessions, again.already_registered, again.events) == (0, 20, 0)
        assert again.duplicates >= first.events

    def test_a_wrong_store_argument_is_refused(self):
        with pytest.raises(TypeError, match="store_or_hook"):
            seed_store(42, 1)


class TestCommandLine:
    def test_python_m_seeds_a_store_and_prints_the_counts(self, tmp_path):
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "clickstream.synthetic",
                "--url",
                url,
                "--sessions",
                "50",
                "--seed",
                "8",
                "--release-id",
                "cli-1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        counts = json.loads(out.stdout)
        assert counts["sessions"] == 50 and counts["release"]["release_id"] == "cli-1"
        store = SessionStore.from_url(url)
        try:
            assert store.get_batch(counts["release"]["batch_id"]).sessions == 50
        finally:
            store.dispose()

    def test_bad_arguments_exit_with_usage(self, tmp_path):
        out = subprocess.run(
            [sys.executable, "-m", "clickstream.synthetic", "--url", "sqlite:///x.db", "--sessions", "-3"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert out.returncode == 2 and "--sessions must be >= 0" in out.stderr
