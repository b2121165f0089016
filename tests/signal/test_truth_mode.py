"""The generator's ground-truth mode: a known PBM, deterministic, written as JSON, usable by seed_store."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from clickstream.signal import normalize_query
from clickstream.store import SessionStore
from clickstream.synthetic import generate, main, pbm_truth, query_variant, seed_store

START = 1_700_000_000_000


def test_the_truth_is_a_pbm_with_known_parameters() -> None:
    truth = pbm_truth(seed=1, eta=0.5, n_queries=7, n_candidates=15, max_position=12, page_sizes=(5, 12))
    assert truth.theta == tuple((1 / k) ** 0.5 for k in range(1, 13)) and truth.max_position == 12
    assert len(truth.queries) == 7 and all(len(c) == len(set(c)) == 15 for c in truth.candidates)
    assert all(q == normalize_query(q) for q in truth.queries)
    assert all(0 < g < 1 for gs in truth.gamma for g in gs)
    assert truth == pbm_truth(seed=1, eta=0.5, n_queries=7, n_candidates=15, max_position=12, page_sizes=(5, 12))
    assert truth != pbm_truth(seed=2, eta=0.5, n_queries=7, n_candidates=15, max_position=12, page_sizes=(5, 12))
    data = truth.as_json()
    assert data["eta"] == 0.5 and data["theta"] == list(truth.theta)
    assert {(q, o): g for q, objs in data["gamma"].items() for o, g in objs.items()} == truth.gamma_by_pair()


def test_bad_truth_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="eta"):
        pbm_truth(eta=-1)
    with pytest.raises(ValueError, match="page_sizes"):
        pbm_truth(page_sizes=(30,))
    with pytest.raises(ValueError, match="n_queries"):
        pbm_truth(n_queries=100_000)


def test_sessions_are_deterministic_rankings_vary_and_variants_share_a_key() -> None:
    truth = pbm_truth(seed=2, n_queries=5)
    first = list(generate(400, seed=4, start_ms=START, truth=truth))
    assert first == list(generate(400, seed=4, start_ms=START, truth=truth))
    assert first != list(generate(400, seed=5, start_ms=START, truth=truth))
    positions: dict[tuple[str, str], set[int]] = {}
    for s in first:
        if s.session["search_query"]:
            key = normalize_query(s.session["search_query"])
            assert key in truth.queries
            for r in s.session["search_results"]:
                positions.setdefault((key, r["object_id"]), set()).add(int(r["rank"]))
    assert sum(len(p) >= 3 for p in positions.values()) > 0.8 * len(positions)  # seen at several positions
    pages = Counter(len(s.session["search_results"]) for s in first if s.session["search_query"])
    assert set(pages) == {10, 20}


def test_query_variants_normalize_back() -> None:
    import random

    rng = random.Random(0)
    for q in pbm_truth(n_queries=40).queries:
        for _ in range(8):
            v = query_variant(q, rng)
            assert normalize_query(v) == q


def test_seed_store_and_the_cli_write_the_truth(tmp_path: Path) -> None:
    truth = pbm_truth(seed=0, n_queries=5)
    store = SessionStore.from_url(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    try:
        counts = seed_store(store, 60, seed=0, truth=truth)
        assert counts.sessions == 60 and counts.payload_search_sessions > 0
    finally:
        store.dispose()
    out = tmp_path / "truth.json"
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["--url", url, "--sessions", "30", "--truth-out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["eta"] == 1.0 and data["theta"][1] == 0.5 and len(data["gamma"]) == 50
    assert data == json.loads(json.dumps(pbm_truth(seed=0).as_json()))
