"""Skip-above training pairs with clipped inverse-propensity weights."""

from __future__ import annotations

import math

import pytest

from clickstream.signal import PairStats, TrainingPair, session_pairs, skip_above_pairs

THETA = [1.0, 0.5, 0.25, 0.05, math.nan, None]


def _triples(pairs: list[TrainingPair]) -> list[tuple[str, int, str, int, float]]:
    return [
        (p.positive_object_id, p.positive_position, p.negative_object_id, p.negative_position, p.weight) for p in pairs
    ]


def test_a_click_is_preferred_to_every_unclicked_result_above_it() -> None:
    pairs, stats = skip_above_pairs("s1", "Bert  Large", ["a", "b", "c", "d"], {"c"}, theta=THETA)
    assert _triples(pairs) == [("c", 3, "a", 1, 4.0), ("c", 3, "b", 2, 4.0)]
    assert {(p.session_id, p.query) for p in pairs} == {("s1", "Bert  Large")}  # the stored text, unchanged
    assert (stats.sessions, stats.positives, stats.pairs, stats.skipped_unidentified, stats.clipped) == (1, 1, 2, 0, 0)


def test_clicked_results_are_never_negatives_and_a_top_click_makes_no_pair() -> None:
    pairs, stats = skip_above_pairs("s", "q", ["a", "b", "c"], {"a", "c"}, theta=THETA)
    assert _triples(pairs) == [("c", 3, "b", 2, 4.0)]
    assert stats.positives == 2
    assert skip_above_pairs("s", "q", ["a", "b"], {"a"}, theta=THETA)[0] == []
    assert skip_above_pairs("s", "q", ["a", "b"], set(), theta=THETA)[0] == []


def test_weights_are_clipped() -> None:
    pairs, stats = skip_above_pairs("s", "q", ["a", "b", "c", "d"], {"d"}, theta=THETA, max_ips_weight=10)
    assert {p.weight for p in pairs} == {10.0} and len(pairs) == 3 and stats.clipped == 1
    pairs, _ = skip_above_pairs("s", "q", ["a", "b", "c", "d"], {"d"}, theta=THETA, max_ips_weight=50)
    assert [p.weight for p in pairs] == pytest.approx([20.0] * 3)


def test_positives_at_unidentified_positions_are_skipped_and_counted() -> None:
    results = ["a", "b", "c", "d", "e", "f", "g"]
    pairs, stats = skip_above_pairs("s", "q", results, {"e", "f", "g"}, theta=THETA)
    assert pairs == []  # e: θ NaN, f: θ None, g: beyond the propensities
    assert (stats.positives, stats.skipped_unidentified) == (3, 3)


def test_duplicates_count_at_their_first_position_and_unshown_clicks_are_ignored() -> None:
    pairs, stats = skip_above_pairs("s", "q", ["a", "b", "a", "c"], {"c", "x"}, theta=THETA + [0.1])
    assert _triples(pairs) == [("c", 3, "a", 1, 4.0), ("c", 3, "b", 2, 4.0)]
    assert stats.positives == 1


def test_bad_weight_cap_is_named() -> None:
    for bad in (0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="max_ips_weight"):
            skip_above_pairs("s", "q", ["a"], set(), theta=THETA, max_ips_weight=bad)


def test_session_pairs_follow_the_session_rules() -> None:
    session = {
        "session_id": "s9",
        "search_query": "BERT",
        "search_results": [{"object_id": o, "rank": float(i)} for i, o in enumerate("abc", start=1)],
        "is_irrelevant": False,
        "is_payload_search": False,
    }
    events = [{"object_id": "b", "event_type": "click"}, {"object_id": "a", "event_type": "like"}]
    pairs, stats = session_pairs(session, events, theta=THETA)
    assert _triples(pairs) == [("b", 2, "a", 1, 2.0)] and pairs[0].query == "BERT"
    for flag in ("is_irrelevant", "is_payload_search"):
        assert session_pairs({**session, flag: True}, events, theta=THETA) == ([], type(stats)())


def test_pair_columns_of_many_sessions_are_the_sessions_pairs_in_order() -> None:
    from clickstream.signal.pairs import PairColumns

    sessions = [
        ("s1", "Q", ["a", "b", "c", "d"], {"c", "d"}),
        ("s2", "q", ["a", "b", "a", "c"], {"c", "x"}),
        ("s3", "q", ["a", "b"], {"a"}),
        ("s4", "r", [f"o{i}" for i in range(12)], {"o11", "o5"}),
    ]
    columns = PairColumns(THETA, max_ips_weight=3)
    expected, stats = [], PairStats()
    for sid, query, results, clicked in sessions:
        columns.add(sid, query, results, clicked, query.lower())
        pairs, st = skip_above_pairs(sid, query, results, clicked, theta=THETA, max_ips_weight=3)
        expected += pairs
        stats.add(st)
    assert columns.pairs() == expected and columns.stats == stats and stats.clipped > 0
    assert columns.columns["query_key"] == [p.query.lower() for p in expected]
