"""Scoring a fit against a known truth (the synthetic generator's ground-truth mode): used by the tests and
``bench/bench_labels.py``, and by anyone checking the model on data whose truth they know.

Each score is given for the fit and for the naive estimate beside it:

* ``θ``: the largest absolute error over positions ``1..positions``; naive ``θ_k`` = raw click-through rate
  at ``k`` / raw click-through rate at 1;
* ``γ``: the mean absolute error over the pairs with at least ``min_impressions`` impressions (and a ``γ``);
  naive ``γ`` = the pair's raw click-through rate;
* ranking: per query, NDCG@``k`` of the query's objects ordered by the estimate, the true ``γ`` being the
  gains, divided by the DCG of the order by true ``γ``; averaged over queries with at least 2 objects.
  Ties in an estimate are broken by object id (the same rule for every estimate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clickstream.signal.pbm import PBMFit

__all__ = ["TruthScore", "ndcg_at", "score_fit"]


def ndcg_at(gains_in_order: Sequence[float], k: int = 10) -> float:
    """NDCG@k of a ranked list whose items have these (true) gains; 1.0 when the ideal DCG is 0."""
    g = np.asarray(gains_in_order, dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(2, min(k, g.size) + 2))
    dcg = float(g[:k] @ discounts)
    ideal = float(np.sort(g)[::-1][:k] @ discounts)
    return 1.0 if ideal <= 0 else dcg / ideal


@dataclass(frozen=True)
class TruthScore:
    """How close a fit is to the truth; ``naive_*`` are the raw click-through-rate estimates' scores."""

    theta_max_abs_error: float
    naive_theta_max_abs_error: float
    theta_positions: int
    theta_unidentified: tuple[int, ...]
    gamma_mae: float
    naive_gamma_mae: float
    gamma_pairs: int
    ndcg: float
    naive_ndcg: float
    ndcg_queries: int
    theta_z: tuple[float, ...]

    @property
    def theta_coverage_95(self) -> float:
        """Share of the positions 2.. whose true ``θ`` lies within the fit's ``θ ± 1.96·se``."""
        z = [abs(x) for x in self.theta_z if not math.isnan(x)]
        return sum(x <= 1.96 for x in z) / len(z) if z else math.nan


def score_fit(
    fit: PBMFit,
    theta: Sequence[float],
    gamma: Mapping[tuple[str, str], float],
    *,
    positions: int = 10,
    min_impressions: int = 50,
    k: int = 10,
) -> TruthScore:
    """Score ``fit`` against the true ``theta`` (positions 1..) and ``gamma`` per (query key, object).

    An unidentified position among ``1..positions`` makes ``theta_max_abs_error`` NaN (and is listed).
    """
    P = min(positions, fit.max_position, len(theta))
    true_theta = np.asarray(theta[:P], dtype=np.float64)
    est = fit.theta[:P]
    naive = fit.position_ctr[:P] / fit.position_ctr[0]
    unidentified = tuple(int(i) + 1 for i in np.flatnonzero(~fit.identified[:P]))
    err = float(np.abs(est - true_theta).max()) if not unidentified else math.nan
    naive_err = float(np.nanmax(np.abs(naive - true_theta)))
    z = tuple(
        float((fit.theta[i] - theta[i]) / fit.theta_se[i]) if fit.theta_se[i] > 0 else math.nan
        for i in range(1, min(fit.max_position, len(theta)))
        if fit.identified[i]
    )

    true_g = np.array([gamma.get((q, o), math.nan) for q, o in zip(fit.pair_query, fit.pair_object, strict=True)])
    sel = (fit.pair_impressions >= min_impressions) & ~np.isnan(fit.gamma) & ~np.isnan(true_g)
    gamma_mae = float(np.abs(fit.gamma[sel] - true_g[sel]).mean()) if sel.any() else math.nan
    naive_mae = float(np.abs(fit.pair_ctr[sel] - true_g[sel]).mean()) if sel.any() else math.nan

    by_query: dict[str, list[int]] = {}
    for i in np.flatnonzero(~np.isnan(fit.gamma) & ~np.isnan(true_g)):
        by_query.setdefault(fit.pair_query[i], []).append(int(i))
    ours: list[float] = []
    raw: list[float] = []
    for idx in by_query.values():
        if len(idx) < 2:
            continue
        for estimate, out in ((fit.gamma, ours), (fit.pair_ctr, raw)):
            order = sorted(idx, key=lambda i: (-float(estimate[i]), fit.pair_object[i]))
            out.append(ndcg_at([true_g[i] for i in order], k))
    return TruthScore(
        theta_max_abs_error=err,
        naive_theta_max_abs_error=naive_err,
        theta_positions=P,
        theta_unidentified=unidentified,
        gamma_mae=gamma_mae,
        naive_gamma_mae=naive_mae,
        gamma_pairs=int(sel.sum()),
        ndcg=float(np.mean(ours)) if ours else math.nan,
        naive_ndcg=float(np.mean(raw)) if raw else math.nan,
        ndcg_queries=len(ours),
        theta_z=z,
    )
