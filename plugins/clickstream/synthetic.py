"""A realistic, deterministic synthetic clickstream for demos, tests and benchmarks.

:func:`generate` yields sessions (the shape of :class:`clickstream.models.SessionIn`) with their events
(the shape of :class:`clickstream.models.EventIn`), the same ones for the same ``seed`` and ``start_ms``:

* query popularity is Zipf-skewed (a few head queries, a long tail);
* every keyword session shows several results (5 to 20, ranked 1..n);
* clicks follow a position-biased cascade: the top ranks get most clicks, about a third of the sessions
  get none; some clicks are followed by a ``download`` or ``like``, a few events touch objects that were
  not among the results;
* some sessions are marked irrelevant by the user, some are payload-search sessions (a filter, no query);
* some clicks arrive *late*, after the batch is released (:attr:`SyntheticSession.late_events`);
* a few clients retry a push (duplicates) or push events before registering the session.

:func:`seed_store` puts them into a store through its public operations (live ingestion, timestamps near
the store's clock) and returns counts. From a shell::

    python -m clickstream.synthetic --url sqlite:////tmp/store.db --sessions 10000 --release-id demo-1

**Ground-truth mode** (``generate(..., truth=pbm_truth(...))``, or ``--eta`` / ``--truth-out`` on the
command line): clicks follow a position-based click model with *known* parameters, so that the training
signal's estimates (``clickstream.signal``) can be scored against them. See :class:`PBMTruth`::

    python -m clickstream.synthetic --url sqlite:////tmp/store.db --sessions 20000 --eta 1 --truth-out /tmp/truth.json
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from clickstream.store import SessionStore

_TOPICS = (
    "transformer",
    "bert",
    "llama",
    "resnet",
    "yolo",
    "diffusion",
    "whisper",
    "clip",
    "gpt",
    "t5",
    "vit",
    "unet",
    "xgboost",
    "lightgbm",
    "wav2vec",
    "segment anything",
    "mistral",
    "stable diffusion",
    "detr",
    "roberta",
    "electra",
    "mobilenet",
    "efficientnet",
    "sentence embeddings",
    "reranker",
    "tokenizer",
)
_TASKS = (
    "classification",
    "summarization",
    "translation",
    "detection",
    "segmentation",
    "question answering",
    "speech recognition",
    "text generation",
    "embeddings",
    "ner",
    "sentiment",
    "retrieval",
)
_QUALIFIERS = ("", "", "", "small", "large", "fine-tuned", "multilingual", "quantized", "onnx", "distilled")
_SORT_FIELDS = ("stars", "downloads", "updated_at", "likes")
_ENGINES = ("bm25", "hybrid", "dense")


class SyntheticSession(NamedTuple):
    """One generated session.

    :param session: the registration body (``SessionIn`` shape).
    :param events: events that arrive while the batch collects (``EventIn`` shape), earliest first.
    :param late_events: events that happened during the session but arrive after the batch is released.
    :param duplicate_push: the client retries its push (the store answers the events as duplicates).
    :param events_first: the client pushes events before it registers the session.
    """

    session: dict[str, Any]
    events: list[dict[str, Any]]
    late_events: list[dict[str, Any]]
    duplicate_push: bool = False
    events_first: bool = False


@dataclass
class SeedCounts:
    """What :func:`seed_store` did. ``held_late`` carries the late events it kept back (see ``hold_late``)."""

    sessions: int = 0
    already_registered: int = 0
    events: int = 0
    duplicates: int = 0
    late_events: int = 0
    late_events_held: int = 0
    irrelevant_sessions: int = 0
    payload_search_sessions: int = 0
    sessions_with_click: int = 0
    batch_ids: list[str] = field(default_factory=list)
    release: dict[str, Any] | None = None
    seconds: float = 0.0
    held_late: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The counts as a JSON-ready dict (without the held events themselves)."""
        data = asdict(self)
        del data["held_late"]
        return data


# ------------------------------------------------------------------------------------------ generation


def _query_pool(rng: random.Random, size: int) -> list[str]:
    combos = [" ".join(p for p in (q, t, k) if p) for t in _TOPICS for k in _TASKS for q in _QUALIFIERS]
    rng.shuffle(combos)
    return list(dict.fromkeys(combos))[:size]


def _zipf_cdf(n: int, s: float) -> list[float]:
    weights = [1.0 / (k**s) for k in range(1, n + 1)]
    return list(itertools.accumulate(weights))


def generate(
    n_sessions: int,
    *,
    seed: int = 0,
    start_ms: int,
    span_ms: int = 3_600_000,
    id_prefix: str | None = None,
    n_queries: int = 500,
    n_objects: int = 5000,
    n_users: int = 2000,
    zipf_s: float = 1.1,
    payload_search_rate: float = 0.08,
    irrelevant_rate: float = 0.05,
    late_rate: float = 0.05,
    duplicate_rate: float = 0.01,
    events_first_rate: float = 0.02,
    truth: PBMTruth | None = None,
) -> Iterator[SyntheticSession]:
    """Yield ``n_sessions`` synthetic sessions, deterministic for ``seed`` and ``start_ms``.

    :param n_sessions: how many sessions.
    :param seed: random seed; the same seed (and ``start_ms``) gives the same sessions and events.
    :param start_ms: ``created_at`` of the first session (ms since epoch); sessions spread over ``span_ms``.
    :param span_ms: time the sessions spread over; every event happens within 2 minutes of its session.
    :param id_prefix: session ids are ``<id_prefix>-<i>``; default ``sess-<seed>``. Seeding one store twice
        with other timestamps needs another prefix (the same id with other content is a conflict).
    :param n_queries: distinct keyword queries (popularity is Zipf-distributed with exponent ``zipf_s``).
    :param n_objects: catalogue size (object ids ``obj-<n>``).
    :param n_users: distinct users; 5 % of the sessions are anonymous.
    :param payload_search_rate: share of payload-search sessions (a filter, no query).
    :param irrelevant_rate: share of sessions the user marked irrelevant.
    :param late_rate: share of sessions with clicks that arrive after the release.
    :param duplicate_rate: share of sessions whose client pushes its events twice.
    :param events_first_rate: share of sessions whose events are pushed before the registration.
    :param truth: ground-truth mode: queries, candidates, rankings and clicks come from this known
        position-based model (see :class:`PBMTruth`); ``n_queries`` and ``n_objects`` are then the truth's.
        Without it (the default) the sessions are exactly those of earlier versions for the same seed.
    """
    if n_sessions < 0:
        raise ValueError(f"n_sessions must be >= 0, got {n_sessions}")
    if truth is not None:
        yield from _generate_truth(
            n_sessions,
            truth,
            seed=seed,
            start_ms=start_ms,
            span_ms=span_ms,
            id_prefix=id_prefix,
            n_users=n_users,
            zipf_s=zipf_s,
            payload_search_rate=payload_search_rate,
            irrelevant_rate=irrelevant_rate,
            late_rate=late_rate,
            duplicate_rate=duplicate_rate,
            events_first_rate=events_first_rate,
        )
        return
    rng = random.Random(seed)
    prefix = id_prefix if id_prefix is not None else f"sess-{seed}"
    queries = _query_pool(random.Random(seed * 7919 + 1), n_queries)
    cdf = _zipf_cdf(len(queries), zipf_s)
    total = cdf[-1]
    results_cache: dict[int, list[str]] = {}
    step = span_ms / max(n_sessions, 1)
    width = max(6, len(str(n_sessions)))

    for i in range(n_sessions):
        created = start_ms + int(i * step + rng.random() * step)
        sid = f"{prefix}-{i:0{width}d}"
        payload_search = rng.random() < payload_search_rate
        qi = bisect.bisect_left(cdf, rng.random() * total)
        if qi not in results_cache:  # a query shows the same results every time it is asked
            qrng = random.Random(seed * 1_000_003 + qi)
            results_cache[qi] = [f"obj-{qrng.randrange(n_objects)}" for _ in range(20)]
        shown = results_cache[qi][: rng.randint(5, 20)]
        if payload_search:
            shown = [f"obj-{rng.randrange(n_objects)}" for _ in range(rng.randint(5, 10))]
        search_results = [
            {"object_id": obj, "rank": float(r), "meta": {"score": round(1.0 / (r + rng.random()), 4)}}
            for r, obj in enumerate(shown, start=1)
        ]
        with_filter = payload_search or rng.random() < 0.3
        session: dict[str, Any] = {
            "session_id": sid,
            "search_query": None if payload_search else queries[qi],
            "search_results": search_results,
            "search_meta": {
                "latency_ms": int(rng.lognormvariate(4.8, 0.5)),
                "engine": rng.choice(_ENGINES),
                "total_hits": rng.randint(len(shown), 5000),
            },
            "payload_filter": {"task": rng.choice(_TASKS), "library": rng.choice(("pytorch", "jax", "onnx"))}
            if with_filter
            else None,
            "sort_by": {"field": rng.choice(_SORT_FIELDS), "order": rng.choice(("desc", "desc", "asc"))}
            if rng.random() < 0.15
            else None,
            "user_id": None if rng.random() < 0.05 else f"user-{int(rng.paretovariate(1.2)) % n_users}",
            "created_at": created,
            "is_irrelevant": (not payload_search) and rng.random() < irrelevant_rate,
            "is_payload_search": payload_search,
        }

        events: list[dict[str, Any]] = []
        t = created
        if not session["is_irrelevant"]:
            # position-biased cascade: examine ranks top-down, click with a probability falling with rank
            for rank, obj in enumerate(shown, start=1):
                if len(events) >= 6 or rng.random() > 0.93**rank + 0.1:
                    continue
                if rng.random() < 0.42 / rank**0.9:
                    t += rng.randint(1_000, 15_000)
                    events.append(
                        {
                            "event_id": f"evt-{len(events):03d}",
                            "object_id": obj,
                            "event_type": "click",
                            "created_at": t,
                            "meta": {"clicked_rank": rank},
                        }
                    )
                    if rng.random() < 0.15:
                        t += rng.randint(1_000, 10_000)
                        events.append(
                            {
                                "event_id": f"evt-{len(events):03d}",
                                "object_id": obj,
                                "event_type": rng.choice(("download", "like")),
                                "created_at": t,
                                "meta": None,
                            }
                        )
            if rng.random() < 0.02:  # navigation to an object that was not shown
                t += rng.randint(1_000, 10_000)
                events.append(
                    {
                        "event_id": f"evt-{len(events):03d}",
                        "object_id": f"obj-{rng.randrange(n_objects)}",
                        "event_type": "navigate",
                        "created_at": t,
                        "meta": {"from": "related"},
                    }
                )
        late: list[dict[str, Any]] = []
        if events and rng.random() < late_rate:
            cut = rng.randrange(len(events))
            events, late = events[:cut], events[cut:]
        yield SyntheticSession(
            session,
            events,
            late,
            duplicate_push=bool(events) and rng.random() < duplicate_rate,
            events_first=bool(events) and rng.random() < events_first_rate,
        )


# ------------------------------------------------------------------------------------ ground-truth mode


@dataclass(frozen=True)
class PBMTruth:
    """A known position-based click model: what :func:`generate` draws clicks from in ground-truth mode.

    * examination ``θ_k = (1/k)^eta`` for positions ``k = 1..max_position`` (``θ_1 = 1``);
    * a fixed pool of queries (``queries``, already normalized: lowercase ASCII, single spaces), asked with
      Zipf popularity (``generate``'s ``zipf_s``; index 0 is the most popular);
    * per query, ``candidates`` (distinct object ids) with an attractiveness ``gamma`` each, drawn from
      Beta(``gamma_a``, ``gamma_b``), and an engine score ``score`` (``engine_quality · logit(γ)`` plus
      unit Gaussian noise: the engine is correlated with, not equal to, the truth);
    * each session ranks the query's candidates by score plus Gaussian noise of ``ranking_noise`` (so one
      object appears at several positions across sessions) and shows the top ``page`` of them, a page being
      one of ``page_sizes`` (equally likely); a shown result at position ``k`` is clicked with probability
      ``θ_k · γ`` (Bernoulli, independently);
    * a share ``variant_rate`` of the sessions type the query differently (upper case, title case, extra or
      exotic whitespace, fullwidth letters) but normalizing to the same key;
    * payload-search sessions (no query) click random results, and sessions the user marked irrelevant
      click with probability ``θ_k · (1 - γ)``: both must be left out of a fit, or they bias it.

    Build one with :func:`pbm_truth`. :meth:`as_json` is the file ``--truth-out`` writes.
    """

    eta: float
    theta: tuple[float, ...]
    queries: tuple[str, ...]
    candidates: tuple[tuple[str, ...], ...]
    gamma: tuple[tuple[float, ...], ...]
    score: tuple[tuple[float, ...], ...]
    seed: int = 0
    ranking_noise: float = 2.0
    page_sizes: tuple[int, ...] = (10, 20)
    variant_rate: float = 0.3
    gamma_a: float = 1.0
    gamma_b: float = 2.0

    @property
    def max_position(self) -> int:
        return len(self.theta)

    def gamma_by_pair(self) -> dict[tuple[str, str], float]:
        """``γ`` per (normalized query, object_id)."""
        return {
            (q, obj): g
            for q, objs, gs in zip(self.queries, self.candidates, self.gamma, strict=True)
            for obj, g in zip(objs, gs, strict=True)
        }

    def as_json(self) -> dict[str, Any]:
        """The truth as JSON: the model's parameters, ``theta`` (positions 1..), ``gamma`` by query then object."""
        return {
            "model": "pbm",
            "eta": self.eta,
            "seed": self.seed,
            "max_position": self.max_position,
            "theta": list(self.theta),
            "ranking_noise": self.ranking_noise,
            "page_sizes": list(self.page_sizes),
            "variant_rate": self.variant_rate,
            "gamma_prior": {"a": self.gamma_a, "b": self.gamma_b},
            "gamma": {
                q: dict(zip(objs, gs, strict=True))
                for q, objs, gs in zip(self.queries, self.candidates, self.gamma, strict=True)
            },
        }

    def write(self, path: str | Path) -> None:
        """Write :meth:`as_json` to ``path``."""
        Path(path).write_text(json.dumps(self.as_json(), indent=1) + "\n")


def pbm_truth(
    *,
    seed: int = 0,
    eta: float = 1.0,
    max_position: int = 20,
    n_queries: int = 50,
    n_candidates: int = 20,
    n_objects: int = 5000,
    gamma_a: float = 1.0,
    gamma_b: float = 2.0,
    engine_quality: float = 1.0,
    ranking_noise: float = 2.0,
    page_sizes: tuple[int, ...] = (10, 20),
    variant_rate: float = 0.3,
) -> PBMTruth:
    """A ground truth for :func:`generate` (see :class:`PBMTruth`), deterministic for its arguments.

    :param eta: examination decays as ``θ_k = (1/k)^eta``.
    :param max_position: positions with a ``θ``; no page is longer.
    :param n_queries: the query pool (at most the generator's distinct query texts, about 2,000). The defaults
        (50 queries of 20 candidates, 1,000 pairs) give most pairs enough examinations in 200,000 sessions
        for ``γ`` to be measurable within a few hundredths: with many more pairs per session the error of
        any estimate is the sampling noise of the few clicks each pair gets.
    :param n_candidates: objects per query (at least the longest page).
    :param gamma_a: ``γ`` ~ Beta(``gamma_a``, ``gamma_b``) per (query, object).
    :param engine_quality: weight of ``logit(γ)`` in the engine's score (0: a ranking unrelated to ``γ``).
    :param ranking_noise: standard deviation of the per-session noise added to the scores before sorting.
    :param page_sizes: results shown per session, one of these, equally likely.
    :param variant_rate: share of sessions typing the query in another form with the same normalized key.
    """
    if not (eta >= 0 and math.isfinite(eta)):
        raise ValueError(f"eta: expected a finite number >= 0, got {eta!r}")
    if max_position < 1:
        raise ValueError(f"max_position: expected >= 1, got {max_position!r}")
    if not page_sizes or min(page_sizes) < 1 or max(page_sizes) > min(max_position, n_candidates):
        raise ValueError(
            f"page_sizes: expected sizes between 1 and min(max_position, n_candidates), got {page_sizes!r}"
        )
    if n_candidates > n_objects:
        raise ValueError(f"n_candidates: expected <= n_objects ({n_objects}), got {n_candidates!r}")
    rng = random.Random(f"pbm-truth-{seed}")
    queries = _query_pool(random.Random(seed * 7919 + 1), n_queries)
    if len(queries) < n_queries:
        raise ValueError(f"n_queries: at most {len(queries)} distinct queries, got {n_queries}")
    candidates, gammas, scores = [], [], []
    for _ in queries:
        objs = [f"obj-{i}" for i in rng.sample(range(n_objects), n_candidates)]
        gs = [min(max(rng.betavariate(gamma_a, gamma_b), 1e-4), 1 - 1e-4) for _ in objs]
        candidates.append(tuple(objs))
        gammas.append(tuple(gs))
        scores.append(tuple(engine_quality * math.log(g / (1 - g)) + rng.gauss(0.0, 1.0) for g in gs))
    return PBMTruth(
        eta=float(eta),
        theta=tuple((1.0 / k) ** eta for k in range(1, max_position + 1)),
        queries=tuple(queries),
        candidates=tuple(candidates),
        gamma=tuple(gammas),
        score=tuple(scores),
        seed=seed,
        ranking_noise=ranking_noise,
        page_sizes=tuple(page_sizes),
        variant_rate=variant_rate,
        gamma_a=gamma_a,
        gamma_b=gamma_b,
    )


def _fullwidth(text: str) -> str:
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


_VARIANTS: tuple[Callable[[str], str], ...] = (
    str.upper,
    str.title,
    lambda q: "  " + q.replace(" ", "   ") + " ",
    lambda q: "\t" + q.replace(" ", "\u00a0") + "\n",
    _fullwidth,
    lambda q: _fullwidth(q[: len(q) // 2]) + q[len(q) // 2 :].upper(),
)


def query_variant(query: str, rng: random.Random) -> str:
    """``query`` typed another way (case, whitespace, fullwidth forms); it normalizes back to ``query``."""
    return rng.choice(_VARIANTS)(query)


def _generate_truth(
    n_sessions: int,
    truth: PBMTruth,
    *,
    seed: int,
    start_ms: int,
    span_ms: int,
    id_prefix: str | None,
    n_users: int,
    zipf_s: float,
    payload_search_rate: float,
    irrelevant_rate: float,
    late_rate: float,
    duplicate_rate: float,
    events_first_rate: float,
) -> Iterator[SyntheticSession]:
    rng = random.Random(f"pbm-sessions-{seed}")
    prefix = id_prefix if id_prefix is not None else f"sess-{seed}"
    cdf = _zipf_cdf(len(truth.queries), zipf_s)
    total = cdf[-1]
    step = span_ms / max(n_sessions, 1)
    width = max(6, len(str(n_sessions)))
    theta = truth.theta
    n_objects = max(int(o[4:]) for objs in truth.candidates for o in objs) + 1
    for i in range(n_sessions):
        created = start_ms + int(i * step + rng.random() * step)
        sid = f"{prefix}-{i:0{width}d}"
        payload_search = rng.random() < payload_search_rate
        qi = bisect.bisect_left(cdf, rng.random() * total)
        page = rng.choice(truth.page_sizes)
        if payload_search:
            shown = [(f"obj-{rng.randrange(n_objects)}", 0.5, 0.0) for _ in range(rng.randint(5, 10))]
        else:
            noisy = sorted(
                (
                    (s + rng.gauss(0.0, truth.ranking_noise), obj, g)
                    for obj, g, s in zip(truth.candidates[qi], truth.gamma[qi], truth.score[qi], strict=True)
                ),
                reverse=True,
            )
            shown = [(obj, g, sc) for sc, obj, g in noisy[:page]]
        irrelevant = (not payload_search) and rng.random() < irrelevant_rate
        query = truth.queries[qi]
        if not payload_search and rng.random() < truth.variant_rate:
            query = query_variant(query, rng)
        session: dict[str, Any] = {
            "session_id": sid,
            "search_query": None if payload_search else query,
            "search_results": [
                {"object_id": obj, "rank": float(r), "meta": {"score": round(sc, 4)}}
                for r, (obj, _, sc) in enumerate(shown, start=1)
            ],
            "search_meta": {
                "latency_ms": int(rng.lognormvariate(4.8, 0.5)),
                "engine": "pbm-truth",
                "total_hits": len(truth.candidates[qi]),
            },
            "payload_filter": {"task": rng.choice(_TASKS)} if payload_search else None,
            "sort_by": None,
            "user_id": None if rng.random() < 0.05 else f"user-{int(rng.paretovariate(1.2)) % n_users}",
            "created_at": created,
            "is_irrelevant": irrelevant,
            "is_payload_search": payload_search,
        }
        events: list[dict[str, Any]] = []
        t = created
        for rank, (obj, g, _) in enumerate(shown, start=1):
            p = theta[rank - 1] * (1.0 - g if irrelevant else g)
            if rng.random() < p:
                t += rng.randint(500, 5_000)
                events.append(
                    {
                        "event_id": f"evt-{len(events):03d}",
                        "object_id": obj,
                        "event_type": "click",
                        "created_at": t,
                        "meta": {"clicked_rank": rank},
                    }
                )
        late: list[dict[str, Any]] = []
        if events and rng.random() < late_rate:
            cut = rng.randrange(len(events))
            events, late = events[:cut], events[cut:]
        yield SyntheticSession(
            session,
            events,
            late,
            duplicate_push=bool(events) and rng.random() < duplicate_rate,
            events_first=bool(events) and rng.random() < events_first_rate,
        )


# ------------------------------------------------------------------------------------------ seeding


def _as_store(store_or_hook: Any) -> tuple[SessionStore, bool]:
    """A :class:`SessionStore` for a store, a hook (anything with ``get_conn()``) or a URL; owned?"""
    from clickstream.store import SessionStore

    if isinstance(store_or_hook, SessionStore):
        return store_or_hook, False
    if isinstance(store_or_hook, str):
        return SessionStore.from_url(store_or_hook), True
    if hasattr(store_or_hook, "get_conn"):
        return store_or_hook.get_conn(), False
    raise TypeError(f"store_or_hook: expected a SessionStore, a ClickstreamHook or a URL, got {store_or_hook!r}")


def seed_store(
    store_or_hook: Any,
    n_sessions: int,
    *,
    seed: int = 0,
    release_id: str | None = None,
    hold_late: bool | None = None,
    id_prefix: str | None = None,
    span_ms: int = 3_600_000,
    log_every: int = 0,
    **generate_kwargs: Any,
) -> SeedCounts:
    """Register ``n_sessions`` synthetic sessions and push their events through the store's operations.

    Timestamps lie in the hour before the store's clock (the live-ingestion window accepts them).

    :param store_or_hook: a :class:`~clickstream.store.SessionStore`, a
        :class:`~clickstream.hooks.ClickstreamHook`, or a store URL (migrated first, then disposed).
    :param n_sessions: how many sessions to register.
    :param seed: the generator's seed (see :func:`generate`).
    :param release_id: when given, release the collecting batch under it once every session is in, then
        push the late events (so they count as late in the batch's metrics).
    :param hold_late: keep the late events back in :attr:`SeedCounts.held_late`, to push them with
        :func:`push_late_events` after a release made by the caller (e.g. a DAG run). By default they are
        pushed at the end: after the release when ``release_id`` is given, otherwise simply last (without a
        release there is nothing to be late for).
    :param id_prefix: session id prefix (see :func:`generate`).
    :param span_ms: time the sessions spread over, ending 5 minutes before the store's clock.
    :param log_every: print progress to stderr every this many sessions (0: silent).
    :param generate_kwargs: other arguments of :func:`generate` (rates, catalogue sizes).
    :returns: the counts (sessions, events, duplicates, late events, batches, release).
    """
    store, owned = _as_store(store_or_hook)
    if owned:
        store.migrate()
    try:
        return _seed(
            store,
            n_sessions,
            seed=seed,
            release_id=release_id,
            hold_late=bool(hold_late),
            id_prefix=id_prefix,
            span_ms=span_ms,
            log_every=log_every,
            generate_kwargs=generate_kwargs,
        )
    finally:
        if owned:
            store.dispose()


def _seed(
    store: SessionStore,
    n_sessions: int,
    *,
    seed: int,
    release_id: str | None,
    hold_late: bool,
    id_prefix: str | None,
    span_ms: int,
    log_every: int,
    generate_kwargs: dict[str, Any],
) -> SeedCounts:
    started = time.monotonic()
    counts = SeedCounts()
    now = store.clock()
    start_ms = now - span_ms - 5 * 60 * 1000
    late: list[tuple[str, list[dict[str, Any]]]] = []
    batches: dict[str, None] = {}
    for i, s in enumerate(
        generate(n_sessions, seed=seed, start_ms=start_ms, span_ms=span_ms, id_prefix=id_prefix, **generate_kwargs),
        start=1,
    ):
        sid = s.session["session_id"]
        if s.events_first:
            _push(store, counts, sid, s.events)
        reg = store.register_session(s.session)
        if reg.batch_id is not None:  # None: an erased session's id, not stored
            batches[reg.batch_id] = None
        if reg.status == "registered":
            counts.sessions += 1
        else:
            counts.already_registered += 1
        if not s.events_first:
            _push(store, counts, sid, s.events)
        if s.duplicate_push:
            _push(store, counts, sid, s.events)
        if s.late_events:
            late.append((sid, s.late_events))
        counts.irrelevant_sessions += s.session["is_irrelevant"]
        counts.payload_search_sessions += s.session["is_payload_search"]
        counts.sessions_with_click += any(e["event_type"] == "click" for e in s.events + s.late_events)
        if log_every and i % log_every == 0:
            rate = i / max(time.monotonic() - started, 1e-9)
            print(f"seeded {i}/{n_sessions} sessions ({rate:,.0f}/s)", file=sys.stderr)
    counts.batch_ids = list(batches)
    if release_id is not None:
        counts.release = store.release_batch(release_id).model_dump()
        while store.clock() <= counts.release["released_at"]:  # "late" means a later millisecond
            time.sleep(0.001)
    if hold_late:
        counts.held_late = late
        counts.late_events_held = sum(len(ev) for _, ev in late)
    else:
        for sid, events in late:
            counts.late_events += _push(store, counts, sid, events, late=True)
    counts.seconds = round(time.monotonic() - started, 3)
    return counts


def _push(
    store: SessionStore, counts: SeedCounts, session_id: str, events: list[dict[str, Any]], *, late: bool = False
) -> int:
    if not events:
        return 0
    result = store.push_events(session_id, events)
    if not late:
        counts.events += result.stored
    counts.duplicates += result.duplicates
    return result.stored


def push_late_events(store_or_hook: Any, counts: SeedCounts) -> int:
    """Push the late events :func:`seed_store` held back (``hold_late=True``); returns how many were stored.

    Call it after the batch was released so that they count as late events in the batch's metrics.
    """
    store, owned = _as_store(store_or_hook)
    try:
        stored = 0
        for sid, events in counts.held_late:
            stored += store.push_events(sid, events).stored
        counts.late_events += stored
        counts.late_events_held -= sum(len(ev) for _, ev in counts.held_late)
        counts.held_late = []
        return stored
    finally:
        if owned:
            store.dispose()


# ------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m clickstream.synthetic --url URL --sessions N``: seed a store and print the counts (JSON)."""
    parser = argparse.ArgumentParser(prog="python -m clickstream.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="session store URL (postgresql://... or sqlite:////abs/path.db)")
    parser.add_argument("--sessions", type=int, default=1000, help="how many sessions (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--release-id", default=None, help="release the batch under this id after seeding, then push the late events"
    )
    parser.add_argument("--id-prefix", default=None, help="session id prefix (default sess-<seed>)")
    parser.add_argument("--progress", type=int, default=0, metavar="N", help="print progress every N sessions")
    parser.add_argument(
        "--eta",
        type=float,
        default=None,
        help="ground-truth mode: clicks from a position-based model with examination (1/k)^ETA (default 1 "
        "when --truth-out is given)",
    )
    parser.add_argument(
        "--truth-out", type=Path, default=None, help="ground-truth mode: write the model's truth (θ, γ) as JSON here"
    )
    args = parser.parse_args(argv)
    if args.sessions < 0:
        parser.error("--sessions must be >= 0")
    if args.eta is not None and not (args.eta >= 0 and math.isfinite(args.eta)):
        parser.error("--eta must be a finite number >= 0")
    truth = None
    if args.eta is not None or args.truth_out is not None:
        truth = pbm_truth(seed=args.seed, eta=1.0 if args.eta is None else args.eta)
    if truth is not None and args.truth_out is not None:
        truth.write(args.truth_out)
    generate_kwargs: dict[str, Any] = {"truth": truth} if truth is not None else {}
    counts = seed_store(
        args.url,
        args.sessions,
        seed=args.seed,
        release_id=args.release_id,
        id_prefix=args.id_prefix,
        log_every=args.progress,
        **generate_kwargs,
    )
    print(json.dumps(counts.as_dict(), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    raise SystemExit(main())
