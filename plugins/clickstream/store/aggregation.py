"""The one aggregation pass over a batch that the search analytics and the training-signal labels share.

:func:`aggregate_batch` runs three named queries on a connection (the caller's snapshot; PostgreSQL first
turns JIT compilation off for it, ``aggregation_settings``):

* ``analytics_batch_totals``: the batch's sessions, payload-search sessions, irrelevant flags, events, clicks
  and late events;
* ``analytics_sessions``: one scan of the sessions: per RAW query text of the keyword sessions (not a payload
  search, with a query; NULL for the others) and length of the results, the sessions (sessions, results
  shown, sessions without results, irrelevant flags, and the batch's result lengths follow); and per (raw
  query, object, position, irrelevant flag), the sessions showing the object there (PostgreSQL expands each
  distinct result list of a query once, not each session's);
* ``analytics_impression_clicks``: the same (query, object, position, flag) rows over every session, for the
  sessions with a ``click`` on the object shown there, those with an event of ``label_event_types`` on it,
  and those whose first click was on it (from the events: only those sessions' results are expanded, once
  per clicked object). The first clicks give the sessions with a click and the reciprocal ranks.

The batch metrics (:mod:`clickstream.store.metrics`) are derived from the same pass (:class:`BatchSums`, over
every session); ``detail=False`` runs only what they need (``batch_result_lengths`` instead of
``analytics_sessions``, and the clicks grouped by position only), so the metrics step that keeps both makes
one pass, not two.

The database groups by the raw text; Python then merges the rows under :func:`normalize_query` of the
text, so memory is bounded by the distinct keys (queries, objects, positions), never by the sessions.

Definitions (the batch metrics' own, :mod:`clickstream.store.metrics`):

* a *click* is an event of type ``click`` (as the batch metrics' CTR and MRR); a session *with a click* has
  one on anything, shown or not; the reciprocal rank is that of the session's first click (by
  ``created_at``, then arrival), 0 when its object was not shown;
* an *impression* is a (session, object) pair of a keyword session's results, at the object's FIRST
  position (a result listed twice counts once, as the position curve counts it); a *clicked result* is an
  impression with a ``click`` on that object (once a session, however many clicks);
* the *average click position* is the mean 1-based position of the clicked results (as Algolia's): the sum
  of position x clicks over the impressions, divided by the clicked results;
* ``label_clicks`` counts, like ``clicks``, sessions with an event of one of ``label_event_types``
  (``[clickstream] label_event_types``, default ``click``) on the object: the labels step's positives;
* irrelevant sessions stay in the analytics (counted, and flagged per impression row, ``irrelevant``); the
  labels step leaves them out. Payload-search sessions have no query: counted in the totals only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from sqlalchemy import Connection

from clickstream.signal.normalize import normalize_query
from clickstream.store.db import Database, dumps

#: Positions of a query's kept click-through curve (its CTR by position).
QUERY_POSITIONS = 20


class Impression(NamedTuple):
    """Impressions of one object at one position under one normalized query, split by the irrelevant flag."""

    query: str
    object_id: str
    position: int
    irrelevant: bool
    shown: int
    clicks: int
    label_clicks: int


@dataclass
class ObjectStats:
    """An object's impressions, clicked impressions and the sum of the positions it was shown at."""

    object_id: str
    impressions: int = 0
    clicks: int = 0
    position_sum: int = 0

    def add(self, position: int, shown: int, clicks: int) -> None:
        self.impressions += shown
        self.clicks += clicks
        self.position_sum += position * shown


@dataclass
class QueryStats:
    """The per-query sums of one batch, under the normalized query ``key``.

    ``positions`` is the query's curve for positions 1..:data:`QUERY_POSITIONS`: ``[shown, clicks]`` pairs
    (impressions at that position, and clicked ones). ``objects`` are its objects (every one: the keep
    keeps the top ones).
    """

    key: str
    sessions: int = 0
    sessions_with_click: int = 0
    rr_sum: float = 0.0
    click_position_sum: int = 0
    clicks_on_results: int = 0
    results_shown_sum: int = 0
    no_result_sessions: int = 0
    irrelevant_sessions: int = 0
    positions: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in range(QUERY_POSITIONS)])
    objects: dict[str, ObjectStats] = field(default_factory=dict)

    @property
    def no_click_sessions(self) -> int:
        return self.sessions - self.sessions_with_click


@dataclass
class BatchTotals:
    """Exact totals of a batch: every rate of the batch stays exact whatever the top lists keep."""

    sessions: int = 0
    events: int = 0
    irrelevant_all: int = 0
    payload_search_sessions: int = 0
    keyword_sessions: int = 0
    sessions_with_click: int = 0
    rr_sum: float = 0.0
    click_position_sum: int = 0
    clicks_on_results: int = 0
    results_shown_sum: int = 0
    no_result_sessions: int = 0
    irrelevant_sessions: int = 0
    impressions: int = 0


@dataclass
class BatchSums:
    """Sums over EVERY session of the batch (keyword sessions or not): what the batch metrics
    (:func:`clickstream.store.metrics.metrics_of`) and their position curve are derived from.

    :ivar first_clicks: per position of a session's first click (its object's first position in the
        session's results; None: not shown), the sessions; their sum is the sessions with a click.
    :ivar clicked_positions: per position, the clicked results there (a (session, object) pair with a
        ``click``, at the object's first position).
    :ivar result_lengths: per length of the results list, the sessions.
    """

    sessions: int = 0
    irrelevant: int = 0
    events: int = 0
    clicks: int = 0
    late_events: int = 0
    first_clicks: dict[int | None, int] = field(default_factory=dict)
    clicked_positions: dict[int, int] = field(default_factory=dict)
    result_lengths: dict[int, int] = field(default_factory=dict)

    @property
    def sessions_with_click(self) -> int:
        return sum(self.first_clicks.values())

    @property
    def rr_sum(self) -> float:
        """The sum of the first clicks' reciprocal ranks (0 for an object not shown), exact then rounded once:
        the same whatever the grouping."""
        return reciprocal_rank_sum(self.first_clicks)

    def curve(self, max_position: int) -> list[tuple[int, int]]:
        """``(shown, clicks)`` for positions 1..``max_position``: the sessions with a result there, and the
        clicked results there."""
        return [
            (
                sum(n for length, n in self.result_lengths.items() if length >= position),
                self.clicked_positions.get(position, 0),
            )
            for position in range(1, max_position + 1)
        ]


def reciprocal_rank_sum(first_clicks: dict[int | None, int]) -> float:
    """``sum(sessions / position)`` over ``{position: sessions}`` (None positions add 0), computed exactly."""
    return float(sum((Fraction(n, p) for p, n in first_clicks.items() if p), Fraction(0)))


@dataclass(frozen=True)
class BatchAggregate:
    """The aggregation pass over one batch.

    :ivar impressions: per (normalized query, object, position, irrelevant): shown, clicks, label_clicks.
    :ivar queries: per normalized query (:class:`QueryStats`).
    :ivar objects: per object, over every keyword session (:class:`ObjectStats`).
    :ivar totals: :class:`BatchTotals`.
    :ivar batch: :class:`BatchSums`, over every session (the batch metrics).
    """

    batch_id: str
    impressions: list[Impression]
    queries: dict[str, QueryStats]
    objects: dict[str, ObjectStats]
    totals: BatchTotals
    batch: BatchSums = field(default_factory=BatchSums)


def aggregate_batch(
    db: Database,
    conn: Connection,
    batch_id: str,
    *,
    label_event_types: tuple[str, ...] | list[str] = ("click",),
    detail: bool = True,
    labels: bool = False,
) -> BatchAggregate:
    """The aggregation pass over batch ``batch_id`` on ``conn`` (run it in one snapshot: the caller's
    transaction, after ``snapshot_read`` on PostgreSQL). See the module docstring for the definitions.

    ``detail=False`` computes only :attr:`BatchAggregate.batch` (and the batch-wide :class:`BatchTotals`
    columns: sessions, events, irrelevant flags, payload searches): the batch metrics alone, without the
    per-query and per-object rows (no impressions are expanded).

    ``labels=True`` computes what the labels step needs, with the same definitions: the
    :attr:`BatchAggregate.impressions` (every row, as with ``detail``), the batch-wide :class:`BatchTotals`
    columns and, per query, the :class:`QueryStats` session counts (``sessions``, ``results_shown_sum``,
    ``no_result_sessions``, ``irrelevant_sessions``); not the first clicks (``label_impression_clicks``
    instead of ``analytics_impression_clicks``: no window over the clicks), the reciprocal ranks, the click
    positions, the per-query curves and objects, nor :attr:`BatchAggregate.objects` (empty) and the
    :class:`BatchSums` click columns (``first_clicks``, ``clicked_positions``: empty)."""
    totals, batch = BatchTotals(), BatchSums()
    if db.has("aggregation_settings"):  # PostgreSQL: no JIT compilation for the pass's statements
        db.run(conn, "aggregation_settings")
    t = db.run(conn, "analytics_batch_totals", batch_id=batch_id).mappings().one()
    totals.sessions, totals.events = int(t["sessions"]), int(t["events"])
    totals.irrelevant_all, totals.payload_search_sessions = int(t["irrelevant_all"]), int(t["payload_search_sessions"])
    batch.sessions, batch.irrelevant, batch.events = totals.sessions, totals.irrelevant_all, totals.events
    batch.clicks, batch.late_events = int(t["clicks"] or 0), int(t["late_events"] or 0)
    keys: dict[str, str] = {}  # raw text -> normalized key (raw texts repeat across the queries)

    def key_of(raw: str) -> str:
        key = keys.get(raw)
        if key is None:
            key = keys[raw] = normalize_query(raw)
        return key

    lengths = batch.result_lengths
    queries: dict[str, QueryStats] = {}
    merged: dict[tuple[str, str, int, bool], list[int]] = {}  # (key, object, position, irrelevant) -> counts
    if not detail:
        for r in db.run(conn, "batch_result_lengths", batch_id=batch_id):
            lengths[int(r.n or 0)] = lengths.get(int(r.n or 0), 0) + int(r.sessions)
    else:
        for kind, raw, object_id, position, irrelevant, sessions in db.stream(
            conn, "analytics_sessions", batch_id=batch_id
        ):
            n = int(sessions)
            if kind == "shown":
                slot = (key_of(raw), object_id, int(position), bool(irrelevant))
                counts = merged.get(slot)
                if counts is None:
                    merged[slot] = [n, 0, 0]
                else:
                    counts[0] += n
                continue
            length = int(position or 0)  # a 'query' row: the length of the results
            lengths[length] = lengths.get(length, 0) + n
            if raw is None:
                continue
            key = key_of(raw)
            q = queries.get(key)
            if q is None:
                q = queries[key] = QueryStats(key)
            q.sessions += n
            q.results_shown_sum += length * n
            if not length:
                q.no_result_sessions += n
            if irrelevant:
                q.irrelevant_sessions += n

    types = dumps(list(label_event_types))
    if labels and detail:
        clicked = db.stream(conn, "label_impression_clicks", batch_id=batch_id, label_event_types=types)
        for raw, object_id, position, irrelevant, clicks, label_clicks in clicked:
            counts = merged[(key_of(raw), object_id, int(position), bool(irrelevant))]  # shown there
            counts[1] += int(clicks)
            counts[2] += int(label_clicks)
        for q in queries.values():
            totals.keyword_sessions += q.sessions
            totals.results_shown_sum += q.results_shown_sum
            totals.no_result_sessions += q.no_result_sessions
            totals.irrelevant_sessions += q.irrelevant_sessions
        totals.impressions = sum(counts[0] for counts in merged.values())
        impressions = [Impression(k, o, p, irr, *counts) for (k, o, p, irr), counts in merged.items()]
        return BatchAggregate(batch_id, impressions, queries, {}, totals, batch)
    clicked_positions, first_clicks = batch.clicked_positions, batch.first_clicks
    keyword_first: dict[int | None, int] = {}  # the keyword sessions' first clicks, by position
    query_first: dict[str, dict[int | None, int]] = {}
    for r in db.run(conn, "analytics_impression_clicks", batch_id=batch_id, label_event_types=types, detail=detail):
        position, clicks, first = (None if r.position is None else int(r.position)), int(r.clicks), int(r.first_clicks)
        if first:
            first_clicks[position] = first_clicks.get(position, 0) + first
        if position is not None and clicks:
            clicked_positions[position] = clicked_positions.get(position, 0) + clicks
        if r.query is None:
            continue
        key = key_of(r.query)
        if first:
            keyword_first[position] = keyword_first.get(position, 0) + first
            per = query_first.setdefault(key, {})
            per[position] = per.get(position, 0) + first
        if position is not None:
            counts = merged[(key, r.object_id, position, bool(r.irrelevant))]  # shown there
            counts[1] += clicks
            counts[2] += int(r.label_clicks)
    for key, per in query_first.items():
        q = queries[key]
        q.sessions_with_click = sum(per.values())
        q.rr_sum = reciprocal_rank_sum(per)

    objects: dict[str, ObjectStats] = {}
    for (key, object_id, position, _), (shown, clicks, _) in merged.items():
        q = queries[key]
        q.click_position_sum += position * clicks
        q.clicks_on_results += clicks
        if position <= QUERY_POSITIONS:
            q.positions[position - 1][0] += shown
            q.positions[position - 1][1] += clicks
        qo = q.objects.get(object_id)
        if qo is None:
            qo = q.objects[object_id] = ObjectStats(object_id)
        qo.add(position, shown, clicks)
        o = objects.get(object_id)
        if o is None:
            o = objects[object_id] = ObjectStats(object_id)
        o.add(position, shown, clicks)
        totals.impressions += shown

    for q in queries.values():
        totals.keyword_sessions += q.sessions
        totals.sessions_with_click += q.sessions_with_click
        totals.click_position_sum += q.click_position_sum
        totals.clicks_on_results += q.clicks_on_results
        totals.results_shown_sum += q.results_shown_sum
        totals.no_result_sessions += q.no_result_sessions
        totals.irrelevant_sessions += q.irrelevant_sessions
    totals.rr_sum = reciprocal_rank_sum(keyword_first)
    impressions = [Impression(k, o, p, irr, *counts) for (k, o, p, irr), counts in merged.items()]
    return BatchAggregate(batch_id, impressions, queries, objects, totals, batch)


def label_event_types(config_value: str) -> tuple[str, ...]:
    """``[clickstream] label_event_types`` (comma-separated) as a tuple of event types (``click`` if empty)."""
    types = tuple(dict.fromkeys(t.strip() for t in config_value.split(",") if t.strip()))
    return types or ("click",)
