"""Training pairs for contrastive fine-tuning (sentence-transformers style), from one session at a time.

Rule ("skip-above", Joachims 2002): a clicked result is preferred to every result shown *above* it that
was not clicked: the user passed over those on the way down. Each (query, positive, negative) triple is
weighted by inverse propensity, ``1 / θ`` of the positive's position, clipped at ``max_ips_weight``, so
that clicks at rarely examined positions count as much, in expectation, as clicks at the top.

The rules, precisely (:func:`skip_above_pairs`):

* positions are 1-based indices of the shown results; an object listed twice counts at its first
  position (the later entries are ignored, as in :func:`clickstream.signal.counts.session_signal`);
* a positive is a clicked object that was shown; clicks on objects not shown are ignored;
* its negatives are the shown, not-clicked objects at smaller positions; a click at position 1 makes no
  pair, nor does a session whose clicks are all on consecutive top results;
* a positive at a position whose ``θ`` is unidentified (``None`` or ``NaN``), or beyond the positions
  ``theta`` covers, makes no pair: an inverse propensity there would be invented. Such positives are
  counted (:attr:`PairStats.skipped_unidentified`) so a report can say how many clicks were left out;
* ``weight = min(1 / θ_k, max_ips_weight)``; ``θ_1 = 1`` gives weight 1; a weight that was clipped is
  counted (:attr:`PairStats.clipped`).

Sessions are filtered as for the click model (irrelevant, payload-search, no query: no pairs); pass the
:class:`~clickstream.signal.counts.SessionSignal` fields, or use :func:`session_pairs`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clickstream.signal.counts import session_signal

__all__ = ["DEFAULT_MAX_IPS_WEIGHT", "PairColumns", "PairStats", "TrainingPair", "session_pairs", "skip_above_pairs"]

#: ``[clickstream] max_ips_weight``: the largest inverse-propensity weight a pair gets.
DEFAULT_MAX_IPS_WEIGHT = 10.0


@dataclass(frozen=True)
class TrainingPair:
    """One row of the ``pairs`` table: ``query`` is the session's stored query text (not normalized)."""

    session_id: str
    query: str
    positive_object_id: str
    positive_position: int
    negative_object_id: str
    negative_position: int
    weight: float


@dataclass
class PairStats:
    """Counts kept while making pairs (add several sessions' into one)."""

    sessions: int = 0
    positives: int = 0
    pairs: int = 0
    skipped_unidentified: int = 0
    clipped: int = 0

    def add(self, other: PairStats) -> None:
        self.sessions += other.sessions
        self.positives += other.positives
        self.pairs += other.pairs
        self.skipped_unidentified += other.skipped_unidentified
        self.clipped += other.clipped


class PairColumns:
    """The skip-above pairs of many sessions gathered as columns (one list per :class:`TrainingPair` field,
    plus ``query_key``), without a Python object per pair: what a table of pairs is built from. The weights
    are computed once per position. :attr:`stats` sums the sessions' :class:`PairStats`.

    :param theta: ``θ`` per position, ``theta[k - 1]`` for position ``k``; ``None`` or ``NaN``: unidentified.
    :param max_ips_weight: the largest weight (``>= 1``).
    :raises ValueError: ``max_ips_weight`` below 1 or not finite.
    """

    FIELDS = (
        "session_id",
        "query",
        "query_key",
        "positive_object_id",
        "positive_position",
        "negative_object_id",
        "negative_position",
        "weight",
    )

    def __init__(self, theta: Sequence[float | None], max_ips_weight: float = DEFAULT_MAX_IPS_WEIGHT) -> None:
        if not (isinstance(max_ips_weight, (int, float)) and math.isfinite(max_ips_weight) and max_ips_weight >= 1):
            raise ValueError(f"max_ips_weight: expected a finite number >= 1, got {max_ips_weight!r}")
        self._weights: list[tuple[float, bool] | None] = []  # per position: (weight, clipped), None: unidentified
        for th in theta:
            if th is None or math.isnan(th) or th <= 0:
                self._weights.append(None)
            else:
                weight = 1.0 / th
                self._weights.append((float(max_ips_weight), True) if weight > max_ips_weight else (weight, False))
        self.stats = PairStats()
        self.columns: dict[str, list[Any]] = {name: [] for name in self.FIELDS}

    def add(
        self, session_id: str, query: str, results: Sequence[str], clicked: Collection[str], query_key: str = ""
    ) -> int:
        """Add the pairs of one session (:func:`skip_above_pairs`'s rules); how many were added."""
        stats, weights, cols = self.stats, self._weights, self.columns
        stats.sessions += 1
        clicked_set = clicked if isinstance(clicked, (set, frozenset)) else set(clicked)
        above_positions: list[int] = []  # not-clicked results above the current position
        above_ids: list[str] = []
        added = 0
        for k, obj in enumerate(dict.fromkeys(results), start=1):
            if obj not in clicked_set:
                above_positions.append(k)
                above_ids.append(obj)
                continue
            stats.positives += 1
            w = weights[k - 1] if k <= len(weights) else None
            if w is None:
                stats.skipped_unidentified += 1
                continue
            n = len(above_ids)
            if not n:
                continue
            weight, clipped = w
            if clipped:
                stats.clipped += 1
            cols["positive_object_id"].extend([obj] * n)
            cols["positive_position"].extend([k] * n)
            cols["negative_object_id"].extend(above_ids)
            cols["negative_position"].extend(above_positions)
            cols["weight"].extend([weight] * n)
            added += n
        if added:
            cols["session_id"].extend([session_id] * added)
            cols["query"].extend([query] * added)
            cols["query_key"].extend([query_key] * added)
            stats.pairs += added
        return added

    def pairs(self) -> list[TrainingPair]:
        """The gathered pairs as :class:`TrainingPair` objects, in order."""
        c = self.columns
        return [
            TrainingPair(*row)
            for row in zip(
                c["session_id"],
                c["query"],
                c["positive_object_id"],
                c["positive_position"],
                c["negative_object_id"],
                c["negative_position"],
                c["weight"],
                strict=True,
            )
        ]


def skip_above_pairs(
    session_id: str,
    query: str,
    results: Sequence[str],
    clicked: Collection[str],
    *,
    theta: Sequence[float | None],
    max_ips_weight: float = DEFAULT_MAX_IPS_WEIGHT,
) -> tuple[list[TrainingPair], PairStats]:
    """The skip-above pairs of one session, weighted by clipped inverse propensity (see the module; many
    sessions into a table: :class:`PairColumns`).

    :param results: object ids in the order shown.
    :param clicked: object ids the session clicked.
    :param theta: ``θ`` per position, ``theta[k - 1]`` for position ``k`` (``PBMFit.theta`` fits);
        ``None`` or ``NaN``: unidentified.
    :param max_ips_weight: the largest weight (``>= 1``).
    :raises ValueError: ``max_ips_weight`` below 1 or not finite.
    """
    columns = PairColumns(theta, max_ips_weight)
    columns.add(session_id, query, results, clicked)
    return columns.pairs(), columns.stats


def session_pairs(
    session: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    *,
    theta: Sequence[float | None],
    max_ips_weight: float = DEFAULT_MAX_IPS_WEIGHT,
) -> tuple[list[TrainingPair], PairStats]:
    """:func:`skip_above_pairs` of a session in the ``SessionIn`` shape with its events; an excluded
    session (irrelevant, payload search, no query) gives no pairs and counts no session."""
    signal = session_signal(session, events)
    if signal is None:
        return [], PairStats()
    return skip_above_pairs(
        str(session["session_id"]),
        signal.query,
        signal.results,
        signal.clicked,
        theta=theta,
        max_ips_weight=max_ips_weight,
    )
