"""The training signal: position-bias estimates, debiased relevance labels and training pairs.

Pure Python and numpy (no database, no Airflow, no FastAPI), in layers:

* :mod:`~clickstream.signal.normalize`: :func:`normalize_query`, the grouping key of a query text;
* :mod:`~clickstream.signal.counts`: which sessions and results count, and the aggregated counts per
  (query key, object, position) the model is fitted on;
* :mod:`~clickstream.signal.pbm`: the position-based click model fitted by EM (:func:`fit_pbm`):
  propensities ``θ`` per position with standard errors and an identifiability report, attractiveness
  ``γ`` per (query, object);
* :mod:`~clickstream.signal.pairs`: skip-above training pairs weighted by clipped inverse propensity;
* :mod:`~clickstream.signal.evaluate`: scores of a fit against a known truth (the synthetic generator's
  ground-truth mode).

See docs/training-signal.md.
"""

from clickstream.signal.counts import ClickCounts, CountsBuilder, SessionSignal, session_signal
from clickstream.signal.normalize import normalize_query
from clickstream.signal.pairs import DEFAULT_MAX_IPS_WEIGHT, PairStats, TrainingPair, session_pairs, skip_above_pairs
from clickstream.signal.pbm import DEFAULT_MAX_POSITION, Identifiability, PBMFit, fit_pbm

__all__ = [
    "DEFAULT_MAX_IPS_WEIGHT",
    "DEFAULT_MAX_POSITION",
    "ClickCounts",
    "CountsBuilder",
    "Identifiability",
    "PBMFit",
    "PairStats",
    "SessionSignal",
    "TrainingPair",
    "fit_pbm",
    "normalize_query",
    "session_pairs",
    "session_signal",
    "skip_above_pairs",
]
