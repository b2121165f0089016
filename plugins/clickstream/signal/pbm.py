"""The position-based click model (PBM), fitted by expectation-maximization on aggregated counts.

Model: a session shows object ``d`` for query ``q`` at position ``k``; the user examines position ``k``
with probability ``θ_k`` (the position's *propensity*, the same for every query) and finds ``d``
attractive with probability ``γ_qd`` (independently); a click is "examined and attractive":
``P(click) = θ_k · γ_qd``. Only products are observed, so the scale is fixed by ``θ_1 = 1``: ``γ_qd`` is
then the click-through rate ``d`` would have at the top.

EM on counts (``n`` impressions and ``m`` clicks per (pair, position) row). With the current ``θ, γ``, a
non-click was "examined, not attractive" with probability ``θ(1-γ)/(1-θγ)`` and "attractive, not examined"
with probability ``(1-θ)γ/(1-θγ)``; so, per row, the expected examined impressions are
``m + (n-m)·θ(1-γ)/(1-θγ)`` and the expected attractive ones ``m + (n-m)·(1-θ)γ/(1-θγ)``, and

* ``θ_k`` = expected examined impressions at ``k`` / impressions at ``k`` (for ``k >= 2``; ``θ_1`` stays
  1, which also keeps every ``θ_k <= 1``: no position is examined more than the top one);
* ``γ_qd`` = (expected attractive impressions of the pair + ``s·μ``) / (impressions of the pair + ``s``),
  the maximum a posteriori update under a Beta prior worth ``s`` (``prior_strength``) pseudo-impressions
  centred on the batch mean ``μ`` = clicks / expected examinations (recomputed each iteration). A pair
  seen a few times stays near ``μ`` instead of jumping to 0 or 1; a pair seen often is hardly moved.

Each iteration is a handful of vector operations and ``np.bincount`` sums over the rows. It stops when no
``θ`` or ``γ`` moved by more than ``tol``, or after ``max_iter`` iterations.

**Identifiability.** ``θ_k`` can only be measured against ``θ_1`` through (query, object) pairs that were
shown both at ``k`` and at a position already measured: their clicks at both places give the ratio. The
positions that have clicks are the nodes of a graph; a pair with at least one click links all the
positions (with clicks) it was shown at. ``θ_k`` is identified when position 1 has clicks and ``k`` has
clicks and is connected to position 1. Any other position gets no number (``NaN``), with the reason in
:class:`Identifiability`; its rows are left out of the fit, and a pair shown only at such positions gets
no ``γ`` either. (A position without clicks would have the estimate 0 and could link nothing.) When every
query always shows the same ranking, each pair sits at one position, nothing links, and only position 1
is identified: the fit says so instead of inventing numbers.

**Uncertainty.** ``theta_se`` is the standard error from the observed information of the log posterior at
the fit (the ``γ`` nuisance parameters profiled out by a Schur complement; ``θ_1`` is fixed, so its error
is 0). ``bench/bench_labels.py`` measures how well its 95 % intervals cover the generator's true ``θ``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clickstream.signal.counts import ClickCounts

__all__ = [
    "DEFAULT_MAX_ITER",
    "DEFAULT_MAX_POSITION",
    "DEFAULT_PRIOR_STRENGTH",
    "DEFAULT_TOL",
    "Excluded",
    "Identifiability",
    "PBMFit",
    "fit_pbm",
]

LOG = logging.getLogger(__name__)

#: ``[clickstream] label_max_position``: propensities are estimated for positions 1..this.
DEFAULT_MAX_POSITION = 20
#: Pseudo-impressions of the Beta prior on ``γ`` (centred on the batch mean).
DEFAULT_PRIOR_STRENGTH = 2.0
#: Stop when no parameter moved by more than this in an iteration.
DEFAULT_TOL = 1e-6
#: Stop after this many iterations (``converged`` is then false).
DEFAULT_MAX_ITER = 2000

NO_IMPRESSIONS = "no impressions at this position"
NO_CLICKS = "no clicks at this position"
NO_TOP_CLICKS = "position 1 has no clicks, so there is no scale (θ_1 = 1) to measure any position against"
NOT_LINKED = (
    "not linked to position 1: no clicked (query, object) pair was shown both here and at a position "
    "linked to position 1"
)

_EPS = 1e-12
_SE_CHUNK = 1 << 16  # pairs per block of the information matrix


@dataclass(frozen=True)
class Identifiability:
    """Which positions the batch identifies, and why the others are not.

    :param identified: positions (1-based) whose ``θ`` the fit estimates.
    :param unidentified: position -> reason, for every other position in ``1..max_position``.
    :param unidentified_pairs: pairs (with impressions at positions <= ``max_position``) shown only at
        unidentified positions: they get no ``γ``.
    """

    identified: tuple[int, ...]
    unidentified: dict[int, str]
    unidentified_pairs: int

    @property
    def any_position_beyond_first(self) -> bool:
        """At least one position other than 1 is identified (else there is no position bias to report)."""
        return any(k > 1 for k in self.identified)

    def describe(self) -> str:
        """One line for a log or a report."""
        if not self.identified:
            return f"no position is identified: {NO_TOP_CLICKS}"
        text = f"identified positions: {_ranges(self.identified)}"
        if self.unidentified:
            by_reason: dict[str, list[int]] = {}
            for k, why in sorted(self.unidentified.items()):
                by_reason.setdefault(why, []).append(k)
            text += "; unidentified: " + "; ".join(f"{_ranges(ks)} ({why})" for why, ks in by_reason.items())
        if self.unidentified_pairs:
            text += f"; {self.unidentified_pairs} pair(s) shown only at unidentified positions get no γ"
        return text


def _ranges(ks: tuple[int, ...] | list[int]) -> str:
    spans: list[list[int]] = []
    for k in sorted(ks):
        if spans and spans[-1][1] == k - 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


@dataclass(frozen=True)
class Excluded:
    """Rows left out because their position is beyond ``max_position``."""

    rows: int = 0
    impressions: int = 0
    clicks: int = 0


@dataclass(frozen=True)
class PBMFit:
    """The fitted model, per position and per (query, object) pair.

    Per position (arrays of length ``max_position``; index ``k - 1`` is position ``k``):
    ``position_impressions``, ``position_clicks``, ``position_ctr`` (clicks / impressions, ``NaN`` without
    impressions), ``theta`` (``NaN`` when unidentified; ``theta[0] == 1``), ``theta_se`` (standard error,
    ``NaN`` when unidentified or not computable), ``identified`` (bool).

    Per pair (arrays aligned with the input's ``pair_query`` / ``pair_object``; counts only at positions
    ``<= max_position``): ``pair_impressions``, ``pair_clicks``, ``pair_mean_position`` (impression-weighted),
    ``pair_ctr``, ``gamma`` (``NaN`` when the pair was shown only at unidentified positions, or not at all
    within ``max_position``), ``pair_ess``: the effective sample size, the expected number of examinations
    ``Σ n_k · θ_k`` over the pair's impressions at identified positions (what ``γ``'s precision rests on:
    a pair shown 100 times at a position examined 10 % of the time is worth about 10 top impressions).

    Fit: ``iterations``, ``converged`` (stopped on ``tol``, not on ``max_iter``), ``change`` (largest
    parameter move in the last iteration), ``log_posterior``, ``prior_mean`` (the batch mean ``μ``),
    ``identifiability``, ``excluded`` (rows beyond ``max_position``), ``seconds``.
    """

    max_position: int
    prior_strength: float
    tol: float
    max_iter: int
    position_impressions: np.ndarray
    position_clicks: np.ndarray
    position_ctr: np.ndarray
    theta: np.ndarray
    theta_se: np.ndarray
    identified: np.ndarray
    pair_query: tuple[str, ...]
    pair_object: tuple[str, ...]
    pair_impressions: np.ndarray
    pair_clicks: np.ndarray
    pair_mean_position: np.ndarray
    pair_ctr: np.ndarray
    gamma: np.ndarray
    pair_ess: np.ndarray
    iterations: int
    converged: bool
    change: float
    log_posterior: float
    prior_mean: float
    identifiability: Identifiability
    excluded: Excluded = field(default_factory=Excluded)
    seconds: float = 0.0

    def theta_at(self, position: int) -> float | None:
        """``θ`` of a position, ``None`` when it is unidentified or outside ``1..max_position``."""
        if not 1 <= position <= self.max_position or not self.identified[position - 1]:
            return None
        return float(self.theta[position - 1])

    def propensity_rows(self) -> list[dict[str, Any]]:
        """The ``propensities`` table: one row per position ``1..max_position`` (``None`` for no number)."""
        return [
            {
                "position": k,
                "impressions": int(self.position_impressions[k - 1]),
                "clicks": int(self.position_clicks[k - 1]),
                "raw_ctr": _num(self.position_ctr[k - 1]),
                "theta": _num(self.theta[k - 1]),
                "theta_se": _num(self.theta_se[k - 1]),
                "identified": bool(self.identified[k - 1]),
                "reason": self.identifiability.unidentified.get(k),
            }
            for k in range(1, self.max_position + 1)
        ]

    def judgment_rows(self) -> Iterator[dict[str, Any]]:
        """The ``judgments`` table: one row per pair with impressions at positions ``<= max_position``."""
        for i in np.flatnonzero(self.pair_impressions > 0):
            yield {
                "query": self.pair_query[i],
                "object_id": self.pair_object[i],
                "impressions": int(self.pair_impressions[i]),
                "clicks": int(self.pair_clicks[i]),
                "mean_position": float(self.pair_mean_position[i]),
                "raw_ctr": float(self.pair_ctr[i]),
                "gamma": _num(self.gamma[i]),
                "effective_sample_size": float(self.pair_ess[i]),
            }

    def summary(self) -> dict[str, Any]:
        """The fit's facts as a JSON-ready dict (for a log line or a manifest)."""
        return {
            "max_position": self.max_position,
            "prior_strength": self.prior_strength,
            "prior_mean": _num(self.prior_mean),
            "iterations": self.iterations,
            "converged": self.converged,
            "change": _num(self.change),
            "tol": self.tol,
            "max_iter": self.max_iter,
            "log_posterior": _num(self.log_posterior),
            "identified_positions": list(self.identifiability.identified),
            "unidentified_positions": {str(k): v for k, v in sorted(self.identifiability.unidentified.items())},
            "unidentified_pairs": self.identifiability.unidentified_pairs,
            "pairs": int((self.pair_impressions > 0).sum()),
            "excluded_rows_beyond_max_position": self.excluded.rows,
            "excluded_impressions_beyond_max_position": self.excluded.impressions,
            "seconds": round(self.seconds, 3),
        }


def _num(x: float) -> float | None:
    return None if math.isnan(float(x)) else float(x)


# ------------------------------------------------------------------------------------------ the fit


def fit_pbm(
    counts: ClickCounts,
    *,
    max_position: int = DEFAULT_MAX_POSITION,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    log: logging.Logger | None = None,
    log_every: int = 50,
) -> PBMFit:
    """Fit the PBM to ``counts`` by EM (see the module's documentation).

    :param counts: aggregated impressions and clicks per (query key, object, position).
    :param max_position: estimate ``θ`` for positions ``1..max_position``; rows beyond are left out and
        counted in :attr:`PBMFit.excluded`.
    :param prior_strength: pseudo-impressions of the Beta prior on ``γ`` (``>= 0``; 0: plain maximum
        likelihood, so a pair without clicks gets ``γ = 0``).
    :param tol: stop when the largest change of any ``θ`` or ``γ`` in an iteration is below this.
    :param max_iter: stop after this many iterations (then ``converged`` is false and a warning is logged).
    :param log: where the progress goes (default: this module's logger); a line every ``log_every``
        iterations (0: none) with the change and the log posterior, and one at the end.
    :raises ValueError: a parameter out of range (the message names it).
    """
    started = time.perf_counter()
    log = log or LOG
    if isinstance(max_position, bool) or not isinstance(max_position, int) or max_position < 1:
        raise ValueError(f"max_position: expected an integer >= 1, got {max_position!r}")
    if not (isinstance(prior_strength, (int, float)) and math.isfinite(prior_strength) and prior_strength >= 0):
        raise ValueError(f"prior_strength: expected a finite number >= 0, got {prior_strength!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol: expected a number > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter: expected an integer >= 0, got {max_iter!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 0:
        raise ValueError(f"log_every: expected an integer >= 0, got {log_every!r}")

    K = max_position
    n_pairs = counts.n_pairs
    inside = counts.row_position <= K
    excluded = Excluded(
        rows=int((~inside).sum()),
        impressions=int(counts.row_impressions[~inside].sum()),
        clicks=int(counts.row_clicks[~inside].sum()),
    )
    pos = counts.row_position[inside]
    pair = counts.row_pair[inside]
    n = counts.row_impressions[inside].astype(np.float64)
    m = counts.row_clicks[inside].astype(np.float64)

    pos_n = np.bincount(pos, weights=n, minlength=K + 1)[: K + 1]
    pos_m = np.bincount(pos, weights=m, minlength=K + 1)[: K + 1]
    pair_n = np.bincount(pair, weights=n, minlength=n_pairs)
    pair_m = np.bincount(pair, weights=m, minlength=n_pairs)
    pair_kn = np.bincount(pair, weights=n * pos, minlength=n_pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        position_ctr = np.where(pos_n[1:] > 0, pos_m[1:] / np.maximum(pos_n[1:], 1), np.nan)
        pair_ctr = np.where(pair_n > 0, pair_m / np.maximum(pair_n, 1), np.nan)
        pair_mean_position = np.where(pair_n > 0, pair_kn / np.maximum(pair_n, 1), np.nan)

    ident_mask, reasons = _identify(pos, pair, m, pos_n, pos_m, n_pairs, K)
    fit_rows = ident_mask[pos]
    fit_pair_ids, f_pair = np.unique(pair[fit_rows], return_inverse=True)
    seen_pairs = pair_n > 0
    in_fit = np.zeros(n_pairs, dtype=bool)
    in_fit[fit_pair_ids] = True
    identifiability = Identifiability(
        identified=tuple(int(k) for k in np.flatnonzero(ident_mask)),
        unidentified=reasons,
        unidentified_pairs=int((seen_pairs & ~in_fit).sum()),
    )
    log.info(
        "PBM fit: %d rows (%d beyond position %d left out), %d pairs; %s",
        int(inside.sum()),
        excluded.rows,
        K,
        int(seen_pairs.sum()),
        identifiability.describe(),
    )

    theta_full = np.full(K + 1, np.nan)
    theta_se = np.full(K + 1, np.nan)
    gamma_full = np.full(n_pairs, np.nan)
    ess_full = np.zeros(n_pairs)
    iterations, converged, change, logpost, mu = 0, False, math.nan, math.nan, math.nan
    if fit_pair_ids.size:
        f_pos = pos[fit_rows]
        f_n = n[fit_rows]
        f_m = m[fit_rows]
        em = _em(
            f_pos, f_pair, f_n, f_m, ident_mask, float(prior_strength), tol, max_iter, log, log_every, pos_n, pos_m
        )
        theta, gamma, mu, iterations, converged, change, logpost = em
        theta_full[ident_mask] = theta[ident_mask]
        gamma_full[fit_pair_ids] = gamma
        ess_full[fit_pair_ids] = np.bincount(f_pair, weights=f_n * theta[f_pos], minlength=fit_pair_ids.size)
        theta_se[ident_mask] = _theta_se(f_pos, f_pair, f_n, f_m, theta, gamma, ident_mask, float(prior_strength), mu)[
            ident_mask
        ]
        if converged:
            log.info(
                "PBM fit converged after %d iterations (largest change %.2e < tol %.0e); log posterior %.6g",
                iterations,
                change,
                tol,
                logpost,
            )
        else:
            log.warning(
                "PBM fit stopped at the iteration cap (%d) before converging: largest change %.2e >= tol %.0e",
                iterations,
                change,
                tol,
            )
    else:
        log.warning("PBM fit: nothing to fit (%s)", identifiability.describe())

    return PBMFit(
        max_position=K,
        prior_strength=float(prior_strength),
        tol=float(tol),
        max_iter=max_iter,
        position_impressions=pos_n[1:].astype(np.int64),
        position_clicks=pos_m[1:].astype(np.int64),
        position_ctr=position_ctr,
        theta=theta_full[1:],
        theta_se=theta_se[1:],
        identified=ident_mask[1:].copy(),
        pair_query=counts.pair_query,
        pair_object=counts.pair_object,
        pair_impressions=pair_n.astype(np.int64),
        pair_clicks=pair_m.astype(np.int64),
        pair_mean_position=pair_mean_position,
        pair_ctr=pair_ctr,
        gamma=gamma_full,
        pair_ess=ess_full,
        iterations=iterations,
        converged=converged,
        change=float(change),
        log_posterior=float(logpost),
        prior_mean=float(mu),
        identifiability=identifiability,
        excluded=excluded,
        seconds=time.perf_counter() - started,
    )


def _identify(
    pos: np.ndarray,
    pair: np.ndarray,
    m: np.ndarray,
    pos_n: np.ndarray,
    pos_m: np.ndarray,
    n_pairs: int,
    K: int,
) -> tuple[np.ndarray, dict[int, str]]:
    """Identified positions (a bool mask over 0..K, index = position) and the reasons for the others."""
    has_clicks = pos_m > 0
    has_clicks[0] = False
    reasons: dict[int, str] = {}
    ident = np.zeros(K + 1, dtype=bool)
    if not has_clicks[1]:
        for k in range(1, K + 1):
            reasons[k] = NO_TOP_CLICKS
        return ident, reasons
    # edges: a clicked pair links every position (with clicks) it was shown at to its first such position
    clicked_pair = np.bincount(pair, weights=m, minlength=n_pairs) > 0
    node_rows = clicked_pair[pair] & has_clicks[pos]
    first = np.full(n_pairs, K + 1, dtype=np.int64)
    np.minimum.at(first, pair[node_rows], pos[node_rows])
    edges = np.unique(np.stack([first[pair[node_rows]], pos[node_rows]], axis=1), axis=0)
    parent = list(range(K + 2))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    root = find(1)
    for k in range(1, K + 1):
        if pos_n[k] == 0:
            reasons[k] = NO_IMPRESSIONS
        elif not has_clicks[k]:
            reasons[k] = NO_CLICKS
        elif find(k) != root:
            reasons[k] = NOT_LINKED
        else:
            ident[k] = True
    return ident, reasons


def _em(
    f_pos: np.ndarray,
    f_pair: np.ndarray,
    f_n: np.ndarray,
    f_m: np.ndarray,
    ident: np.ndarray,
    s: float,
    tol: float,
    max_iter: int,
    log: logging.Logger,
    log_every: int,
    pos_n_all: np.ndarray,
    pos_m_all: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float, int, bool, float, float]:
    K1 = ident.size
    P = int(f_pair.max()) + 1
    pos_n = np.bincount(f_pos, weights=f_n, minlength=K1)
    pair_n = np.bincount(f_pair, weights=f_n, minlength=P)
    pair_m = np.bincount(f_pair, weights=f_m, minlength=P)
    f_rest = f_n - f_m
    total_m = float(f_m.sum())
    # start: θ from the naive click-through-rate ratios, γ = clicks / expected examinations (shrunk)
    theta = np.zeros(K1)
    with np.errstate(invalid="ignore", divide="ignore"):
        naive = pos_m_all / np.maximum(pos_n_all, 1) / (pos_m_all[1] / pos_n_all[1])
    theta[ident] = np.clip(naive[ident], 1e-3, 1.0)
    theta[1] = 1.0
    exams = np.bincount(f_pair, weights=f_n * theta[f_pos], minlength=P)
    mu = min(max(total_m / max(float(exams.sum()), _EPS), 1e-6), 1 - 1e-6)
    gamma = np.clip((pair_m + s * mu) / (exams + s + _EPS), 0.0, 1.0)
    safe_pos_n = np.where(pos_n > 0, pos_n, 1.0)
    pos_m = np.bincount(f_pos, weights=f_m, minlength=K1)
    change = math.inf
    converged = False
    it = 0
    # per row, with tg = θγ and w = (n - m) / (1 - θγ): expected examined = m + w(θ - θγ), expected
    # attractive = m + w(γ - θγ); the clicks' sums are constant, so only the w terms are summed each time
    R = f_pos.size
    t, g, tg, w, tmp = (np.empty(R) for _ in range(5))
    for it in range(1, max_iter + 1):
        np.take(theta, f_pos, out=t)
        np.take(gamma, f_pair, out=g)
        np.multiply(t, g, out=tg)
        np.subtract(1.0, tg, out=w)
        np.maximum(w, _EPS, out=w)
        np.divide(f_rest, w, out=w)
        np.subtract(t, tg, out=tmp)
        tmp *= w
        new_theta = (pos_m + np.bincount(f_pos, weights=tmp, minlength=K1)) / safe_pos_n
        new_theta[~ident] = 0.0
        new_theta[1] = 1.0
        np.subtract(g, tg, out=tmp)
        tmp *= w
        mu = min(max(total_m / max(float(pos_n @ theta), _EPS), 1e-6), 1 - 1e-6)
        new_gamma = (pair_m + np.bincount(f_pair, weights=tmp, minlength=P) + s * mu) / (pair_n + s)
        change = max(float(np.abs(new_theta - theta).max()), float(np.abs(new_gamma - gamma).max()))
        theta, gamma = new_theta, new_gamma
        if log_every and it % log_every == 0:
            log.info(
                "PBM iteration %d: largest change %.3e; log posterior %.8g",
                it,
                change,
                _log_posterior(f_pos, f_pair, f_n, f_m, theta, gamma, s, mu),
            )
        if change < tol:
            converged = True
            break
    logpost = _log_posterior(f_pos, f_pair, f_n, f_m, theta, gamma, s, mu)
    return theta, gamma, mu, it, converged, change, logpost


def _log_posterior(
    f_pos: np.ndarray,
    f_pair: np.ndarray,
    f_n: np.ndarray,
    f_m: np.ndarray,
    theta: np.ndarray,
    gamma: np.ndarray,
    s: float,
    mu: float,
) -> float:
    p = np.clip(theta[f_pos] * gamma[f_pair], _EPS, 1 - _EPS)
    ll = float(f_m @ np.log(p) + (f_n - f_m) @ np.log1p(-p))
    if s > 0:
        g = np.clip(gamma, _EPS, 1 - _EPS)
        ll += float(s * mu * np.log(g).sum() + s * (1 - mu) * np.log1p(-g).sum())
    return ll


def _theta_se(
    f_pos: np.ndarray,
    f_pair: np.ndarray,
    f_n: np.ndarray,
    f_m: np.ndarray,
    theta: np.ndarray,
    gamma: np.ndarray,
    ident: np.ndarray,
    s: float,
    mu: float,
) -> np.ndarray:
    """Standard errors of ``θ`` from the observed information, ``γ`` profiled out (Schur complement).

    The log posterior's second derivatives, per row (``a`` clicks, ``b`` non-clicks, ``d = 1 - θγ``):
    ``∂²/∂θ² = -a/θ² - bγ²/d²``, ``∂²/∂γ² = -a/γ² - bθ²/d²`` (plus the prior's ``-sμ/γ² - s(1-μ)/(1-γ)²``),
    ``∂²/∂θ∂γ = -b/d²``. The information of the free ``θ`` (identified positions but 1) is
    ``I_θθ - I_θγ I_γγ⁻¹ I_γθ``, where ``I_γγ`` is diagonal; it is accumulated over blocks of pairs.
    """
    K1 = ident.size
    free = ident.copy()
    free[1] = False
    se = np.full(K1, np.nan)
    se[1] = 0.0
    cols = np.full(K1, -1, dtype=np.int64)
    cols[free] = np.arange(int(free.sum()))
    F = int(free.sum())
    if F == 0:
        return se
    t = np.clip(theta[f_pos], _EPS, 1.0)
    g = np.clip(gamma[f_pair], _EPS, 1 - _EPS)
    b = f_n - f_m
    d2 = np.maximum(1.0 - t * g, _EPS) ** 2
    i_tt = np.bincount(f_pos, weights=f_m / t**2 + b * g**2 / d2, minlength=K1)[free]
    P = gamma.size
    gg = np.clip(gamma, _EPS, 1 - _EPS)
    i_gg = np.bincount(f_pair, weights=f_m / g**2 + b * t**2 / d2, minlength=P)
    i_gg += s * mu / gg**2 + s * (1 - mu) / (1 - gg) ** 2
    cross = b / d2  # -∂²/∂θ∂γ
    row_col = cols[f_pos]
    keep = row_col >= 0
    order = np.argsort(f_pair[keep], kind="stable")
    k_pair = f_pair[keep][order]
    k_col = row_col[keep][order]
    k_cross = cross[keep][order]
    info = np.diag(i_tt)
    for start in range(0, P, _SE_CHUNK):
        lo, hi = np.searchsorted(k_pair, [start, start + _SE_CHUNK])
        if lo == hi:
            continue
        width = min(_SE_CHUNK, P - start)
        flat = np.bincount((k_pair[lo:hi] - start) * F + k_col[lo:hi], weights=k_cross[lo:hi], minlength=width * F)
        block = flat.astype(np.float64).reshape(width, F) / np.sqrt(i_gg[start : start + width])[:, None]
        info -= block.T @ block
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return se
    var = np.diag(cov)
    se[free] = np.where(var > 0, np.sqrt(np.abs(var)), np.nan)
    return se
