"""The PBM fit: recovers a known truth, says what it cannot identify, shrinks rare pairs, stops properly."""

from __future__ import annotations

import logging
import math
from typing import Any, cast

import numpy as np
import pytest

from clickstream import models
from clickstream.signal import ClickCounts, CountsBuilder, fit_pbm, normalize_query, session_signal
from clickstream.signal.evaluate import ndcg_at, score_fit
from clickstream.signal.pbm import NO_CLICKS, NO_IMPRESSIONS, NO_TOP_CLICKS, NOT_LINKED
from clickstream.synthetic import generate, pbm_truth

START = 1_700_000_000_000


def _aggregate(sessions) -> tuple[ClickCounts, CountsBuilder]:
    builder = CountsBuilder()
    for s in sessions:
        builder.add_session(session_signal(s.session, s.events + s.late_events))
    return builder.build(), builder


@pytest.fixture(scope="module")
def truth_batch():
    truth = pbm_truth(seed=3, n_queries=10, n_candidates=12, page_sizes=(10,), max_position=10)
    sessions = list(generate(20_000, seed=3, start_ms=START, truth=truth))
    counts, builder = _aggregate(sessions)
    return truth, sessions, counts, builder


class TestRecoversTheTruth:
    def test_theta_gamma_and_ranking_within_tolerance_and_better_than_raw_ctr(self, truth_batch) -> None:
        truth, _, counts, _ = truth_batch
        fit = fit_pbm(counts, max_position=10)
        assert fit.converged and fit.identifiability.identified == tuple(range(1, 11))
        score = score_fit(fit, truth.theta, truth.gamma_by_pair(), min_impressions=200)
        assert score.theta_max_abs_error <= 0.03 < score.naive_theta_max_abs_error
        assert score.gamma_pairs >= 100 and score.gamma_mae <= 0.05 < score.naive_gamma_mae
        assert score.ndcg >= 0.97
        assert fit.theta[0] == 1.0 and np.all(fit.theta[1:] < 1)
        assert np.all((fit.theta_se[1:] > 0) & (fit.theta_se[1:] < 0.05)) and fit.theta_se[0] == 0

    def test_per_pair_outputs(self, truth_batch) -> None:
        _, _, counts, _ = truth_batch
        fit = fit_pbm(counts, max_position=10)
        rows = list(fit.judgment_rows())
        assert len(rows) == counts.n_pairs
        for r in rows[:50]:
            assert 0 < r["gamma"] < 1 and 1 <= r["mean_position"] <= 10
            assert r["raw_ctr"] == r["clicks"] / r["impressions"]
            # effective sample size: expected examinations, at most the impressions
            assert 0 < r["effective_sample_size"] <= r["impressions"]
        table = fit.propensity_rows()
        assert [r["position"] for r in table] == list(range(1, 11))
        assert table[0]["theta"] == 1.0 and all(r["identified"] and r["reason"] is None for r in table)
        assert sum(r["impressions"] for r in table) == int(counts.row_impressions.sum())

    def test_the_aggregation_leaves_out_irrelevant_and_payload_sessions_and_merges_query_variants(
        self, truth_batch
    ) -> None:
        truth, sessions, counts, builder = truth_batch
        irrelevant = sum(s.session["is_irrelevant"] for s in sessions)
        payload = sum(s.session["is_payload_search"] for s in sessions)
        assert irrelevant > 500 and payload > 1000
        assert builder.sessions == len(sessions) - irrelevant - payload
        assert int(counts.row_impressions.sum()) == 10 * builder.sessions
        texts = {s.session["search_query"] for s in sessions if s.session["search_query"]}
        assert len(texts) > 3 * len(truth.queries)  # variants were typed...
        assert set(counts.pair_query) == set(truth.queries)  # ...and grouped under the truth's keys
        assert {normalize_query(t) for t in texts} == set(truth.queries)

    def test_including_irrelevant_sessions_would_bias_the_fit(self, truth_batch) -> None:
        truth, sessions, counts, _ = truth_batch
        builder = CountsBuilder()
        for s in sessions:
            builder.add_session(session_signal({**s.session, "is_irrelevant": False}, s.events + s.late_events))
        polluted = fit_pbm(builder.build(), max_position=10)
        clean = fit_pbm(counts, max_position=10)
        gamma = truth.gamma_by_pair()
        assert (
            score_fit(polluted, truth.theta, gamma, min_impressions=200).gamma_mae
            > score_fit(clean, truth.theta, gamma, min_impressions=200).gamma_mae
        )

    def test_generated_sessions_have_the_api_shapes(self, truth_batch) -> None:
        _, sessions, _, _ = truth_batch
        for s in sessions[:300]:
            models.SessionIn.model_validate(s.session)
            for e in s.events + s.late_events:
                models.EventIn.model_validate(e)
                assert e["event_type"] == "click"
                assert s.session["created_at"] < e["created_at"] <= s.session["created_at"] + 120_000


def _counts(rows) -> ClickCounts:
    return ClickCounts.from_rows(rows, normalize=False)


class TestIdentifiability:
    def test_one_ranking_per_query_identifies_no_position_but_the_first(self) -> None:
        truth = pbm_truth(seed=5, n_queries=5, n_candidates=10, page_sizes=(10,), ranking_noise=0.0, max_position=10)
        counts, _ = _aggregate(generate(3000, seed=5, start_ms=START, truth=truth))
        assert np.all(np.bincount(counts.row_pair) == 1)  # each pair at one position only
        fit = fit_pbm(counts, max_position=12)
        ident = fit.identifiability
        assert ident.identified == (1,)
        assert {k for k, why in ident.unidentified.items() if why == NOT_LINKED} == set(range(2, 11))
        assert ident.unidentified[11] == ident.unidentified[12] == NO_IMPRESSIONS
        assert not ident.any_position_beyond_first
        assert np.all(np.isnan(fit.theta[1:])) and np.all(np.isnan(fit.theta_se[1:]))
        assert fit.theta_at(1) == 1.0 and fit.theta_at(2) is None
        # only the pairs shown at position 1 get a γ; the others are counted, not guessed
        at_top = np.isin(np.arange(counts.n_pairs), counts.row_pair[counts.row_position == 1])
        assert np.all(~np.isnan(fit.gamma[at_top])) and np.all(np.isnan(fit.gamma[~at_top]))
        assert ident.unidentified_pairs == int((~at_top).sum())
        assert "2-10 (not linked to position 1" in ident.describe()
        rows = fit.propensity_rows()
        assert rows[1]["theta"] is None and rows[1]["reason"] == NOT_LINKED and rows[1]["clicks"] > 0

    def test_positions_are_linked_only_through_clicked_pairs_shown_at_both(self) -> None:
        rows = [
            ("q", "a", 1, 100, 50),
            ("q", "a", 2, 100, 25),  # a links 1-2
            ("q", "b", 2, 100, 20),
            ("q", "b", 3, 100, 10),  # b links 2-3 (so 3 is linked to 1)
            ("q", "c", 4, 100, 10),  # c only at 4: not linked
            ("q", "d", 1, 100, 0),
            ("q", "d", 4, 100, 0),  # d was never clicked: links nothing
            ("q", "e", 1, 100, 30),
            ("q", "e", 5, 100, 0),  # position 5: shown, never clicked
        ]
        fit = fit_pbm(_counts(rows), max_position=6)
        ident = fit.identifiability
        assert ident.identified == (1, 2, 3)
        assert ident.unidentified == {4: NOT_LINKED, 5: NO_CLICKS, 6: NO_IMPRESSIONS}
        assert ident.unidentified_pairs == 1  # c: shown only at 4
        assert math.isnan(fit.gamma[fit.pair_object.index("c")])
        assert not math.isnan(fit.gamma[fit.pair_object.index("d")])  # seen at position 1: γ near 0
        assert fit.theta[1] == pytest.approx(0.5, abs=0.05) and fit.theta[2] == pytest.approx(0.25, abs=0.05)

    def test_no_clicks_at_the_top_means_no_scale(self, caplog: pytest.LogCaptureFixture) -> None:
        fit = fit_pbm(_counts([("q", "a", 1, 10, 0), ("q", "a", 2, 10, 3)]), max_position=3)
        assert fit.identifiability.identified == () and set(fit.identifiability.unidentified.values()) == {
            NO_TOP_CLICKS
        }
        assert np.all(np.isnan(fit.theta)) and np.all(np.isnan(fit.gamma))
        assert fit.iterations == 0 and not fit.converged
        assert "no position is identified" in fit.identifiability.describe()

    def test_rows_beyond_max_position_are_left_out_and_counted(self) -> None:
        rows = [("q", "a", 1, 10, 5), ("q", "a", 2, 10, 3), ("q", "a", 9, 7, 1), ("q", "z", 8, 4, 0)]
        fit = fit_pbm(_counts(rows), max_position=3)
        assert (fit.excluded.rows, fit.excluded.impressions, fit.excluded.clicks) == (2, 11, 1)
        assert [r["object_id"] for r in fit.judgment_rows()] == ["a"]  # z has no impression within 1..3
        assert fit.pair_impressions.tolist() == [20, 0]


class TestPrior:
    def test_a_rarely_seen_pair_shrinks_toward_the_batch_mean(self) -> None:
        rows = [("q", f"o{i}", 1 + i % 2, 400, 80 if i % 2 == 0 else 40) for i in range(40)]
        rows += [("q", f"o{i}", 2 - i % 2, 400, 40 if i % 2 == 0 else 80) for i in range(40)]
        rows += [("q", "rare-clicked", 1, 2, 2), ("q", "rare-skipped", 1, 2, 0)]
        counts = _counts(rows)
        shrunk = fit_pbm(counts, max_position=2, prior_strength=2.0)
        plain = fit_pbm(counts, max_position=2, prior_strength=0.0)
        i_hi, i_lo = counts.pair_object.index("rare-clicked"), counts.pair_object.index("rare-skipped")
        assert plain.gamma[i_hi] == pytest.approx(1.0) and plain.gamma[i_lo] == pytest.approx(0.0)
        mu = shrunk.prior_mean
        assert 0.1 < mu < 0.3
        # 2 clicks of 2 with 2 pseudo-impressions at the mean: (2 + 2 mu) / 4, and (0 + 2 mu) / 4
        assert shrunk.gamma[i_hi] == pytest.approx((2 + 2 * mu) / 4, abs=1e-3)
        assert shrunk.gamma[i_lo] == pytest.approx(2 * mu / 4, abs=1e-3)
        # a pair seen 800 times hardly moves
        often = counts.pair_object.index("o0")
        assert abs(shrunk.gamma[often] - plain.gamma[often]) < 0.005

    def test_the_effective_sample_size_is_the_expected_examinations(self) -> None:
        rows = [("q", "a", 1, 100, 40), ("q", "a", 2, 100, 20), ("q", "b", 1, 50, 10), ("q", "b", 2, 300, 30)]
        fit = fit_pbm(_counts(rows), max_position=2)
        a = fit.pair_object.index("b")
        assert fit.pair_ess[a] == pytest.approx(50 + 300 * fit.theta[1])


class TestConvergence:
    # 30 pairs at 5 positions each, clicks about n / k * (0.2 + i / 40) (a PBM with θ_k = 1/k, plus rounding)
    ROWS = [
        ("q", f"o{i}", k, 50 + 7 * i, round((50 + 7 * i) / k * (0.2 + i / 40))) for i in range(30) for k in range(1, 6)
    ]

    def test_stops_on_the_tolerance_and_logs_progress(self, caplog: pytest.LogCaptureFixture) -> None:
        log = logging.getLogger("test.pbm")
        with caplog.at_level(logging.INFO, logger="test.pbm"):
            fit = fit_pbm(_counts(self.ROWS), max_position=5, tol=1e-8, max_iter=100_000, log=log, log_every=5)
        assert fit.converged and fit.change < 1e-8 and 5 < fit.iterations < 100_000
        progress = [r.getMessage() for r in caplog.records if "PBM iteration" in r.getMessage()]
        assert len(progress) == fit.iterations // 5 and "largest change" in progress[0]
        assert "converged after" in caplog.records[-1].getMessage()
        loose = fit_pbm(_counts(self.ROWS), max_position=5, tol=1e-2)
        assert loose.converged and loose.iterations < fit.iterations

    def test_stops_on_the_iteration_cap(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING):
            fit = fit_pbm(_counts(self.ROWS), max_position=5, tol=1e-15, max_iter=3)
        assert fit.iterations == 3 and not fit.converged and fit.change >= 1e-15
        assert any("iteration cap (3)" in r.getMessage() for r in caplog.records)
        assert fit.summary()["converged"] is False

    def test_bad_parameters_are_named(self) -> None:
        counts = _counts(self.ROWS)
        for kwargs, field in [
            ({"max_position": 0}, "max_position"),
            ({"prior_strength": -1.0}, "prior_strength"),
            ({"tol": 0.0}, "tol"),
            ({"max_iter": -1}, "max_iter"),
            ({"log_every": -2}, "log_every"),
        ]:
            with pytest.raises(ValueError, match=field):
                fit_pbm(counts, **cast(dict[str, Any], kwargs))


class TestCounts:
    def test_rows_with_the_same_normalized_key_are_merged(self) -> None:
        counts = ClickCounts.from_rows(
            [("BERT", "a", 1, 3, 1), ("  bert ", "a", 1, 2, 2), ("ＢＥＲＴ", "a", 2, 4, 0), ("bert", "b", 1, 1, 0)]
        )
        assert counts.pair_query == ("bert", "bert") and counts.pair_object == ("a", "b")
        assert counts.row_pair.tolist() == [0, 0, 1]
        assert counts.row_position.tolist() == [1, 2, 1]
        assert counts.row_impressions.tolist() == [5, 4, 1] and counts.row_clicks.tolist() == [3, 0, 0]
        with pytest.raises(ValueError):
            counts.row_clicks[0] = 9  # read-only

    @pytest.mark.parametrize(
        ("row", "field"),
        [
            (("q", "a", 0, 1, 0), "position"),
            (("q", "a", 1, -1, 0), "impressions"),
            (("q", "a", 1, 2, 3), "clicks"),
            (("q", "", 1, 1, 0), "object_id"),
            ((None, "a", 1, 1, 0), "query"),
            (("q", "a", 1.5, 1, 0), "position"),
        ],
    )
    def test_a_bad_row_is_refused_naming_the_field(self, row, field) -> None:
        with pytest.raises(ValueError, match=field):
            ClickCounts.from_rows([row])

    def test_session_rules(self) -> None:
        base = {
            "session_id": "s",
            "search_query": " BERT ",
            "search_results": [{"object_id": o} for o in ("a", "b", "a", "c")],
            "is_irrelevant": False,
            "is_payload_search": False,
        }
        events = [
            {"object_id": "c", "event_type": "click"},
            {"object_id": "c", "event_type": "click"},
            {"object_id": "b", "event_type": "download"},
            {"object_id": "zzz", "event_type": "click"},
        ]
        sig = session_signal(base, events)
        assert sig is not None
        assert (sig.query, sig.key, sig.results, sig.clicked) == (" BERT ", "bert", ("a", "b", "c"), {"c"})
        assert session_signal({**base, "is_irrelevant": True}, events) is None
        assert session_signal({**base, "is_payload_search": True}, events) is None
        assert session_signal({**base, "search_query": None}, events) is None
        assert session_signal({**base, "search_query": " \t"}, events) is None
        builder = CountsBuilder()
        builder.add_session(sig)
        builder.add_session(None)
        counts = builder.build()
        assert builder.sessions == 1
        assert list(zip(counts.row_position.tolist(), counts.row_clicks.tolist(), strict=True)) == [
            (1, 0),
            (2, 0),
            (3, 1),
        ]


def test_ndcg() -> None:
    assert ndcg_at([3, 2, 1]) == 1.0
    assert ndcg_at([1, 2, 3]) < 1.0
    assert ndcg_at([0, 0]) == 1.0
    assert ndcg_at([1, 0, 0, 5], k=2) == pytest.approx(1.0 / (5.0 + 1.0 / math.log2(3)))
