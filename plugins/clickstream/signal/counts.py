"""The input of the click model: impressions and clicks per (query key, object, position), and the rules
that turn a session into them.

A row of :class:`ClickCounts` says: ``impressions`` times, a session whose query normalizes to ``query``
showed ``object_id`` at ``position`` (1-based), and ``clicks`` of those sessions clicked it. The store
produces these rows with one aggregation over a released batch; :class:`CountsBuilder` merges rows that
share a key after normalization (the SQL groups by the stored query text, which several spellings share).

Which sessions and results count (:func:`session_signal`, the reference the store's query follows):

* a session marked irrelevant, a payload-search session, a session without a query, and one whose query
  normalizes to ``""`` do not count;
* a result's position is its 1-based index in ``search_results`` (the ``rank`` field is not used); an
  object listed twice counts once, at its first position;
* an object is clicked when the session has at least one ``click`` event on it (two clicks on one result
  are one click: ``clicks <= impressions``); events on objects that were not shown, and other event types
  (``download``, ``like``, ...), do not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clickstream.signal.normalize import normalize_query

__all__ = ["ClickCounts", "CountsBuilder", "SessionSignal", "session_signal"]


@dataclass(frozen=True)
class SessionSignal:
    """What one session contributes: its query, the objects it showed in order, the ones clicked.

    :param query: the stored query text (unchanged).
    :param key: ``normalize_query(query)``.
    :param results: object ids in the order shown, each once (its first position); position = index + 1.
    :param clicked: object ids among ``results`` with a ``click`` event.
    """

    query: str
    key: str
    results: tuple[str, ...]
    clicked: frozenset[str]


def session_signal(session: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> SessionSignal | None:
    """The signal of one session (the ``SessionIn`` / dataset shape), or ``None`` when it does not count.

    :param session: ``search_query``, ``search_results`` (``[{"object_id": ...}, ...]``), ``is_irrelevant``,
        ``is_payload_search``; missing flags count as false.
    :param events: the session's events (``object_id``, ``event_type``), late ones included.
    """
    if session.get("is_irrelevant") or session.get("is_payload_search"):
        return None
    query = session.get("search_query")
    if not query:
        return None
    key = normalize_query(query)
    if not key:
        return None
    shown = tuple(dict.fromkeys(r["object_id"] for r in session.get("search_results") or ()))
    clicked = frozenset(e["object_id"] for e in events if e.get("event_type") == "click") & frozenset(shown)
    return SessionSignal(query, key, shown, clicked)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class ClickCounts:
    """Aggregated counts, one row per (query key, object, position), rows sorted by pair then position.

    Pairs (a query key and an object) are numbered ``0..n_pairs-1``: ``pair_query[i]``, ``pair_object[i]``.
    Rows are parallel int64 arrays: ``row_pair`` (the pair's number), ``row_position`` (>= 1),
    ``row_impressions`` (>= 1) and ``row_clicks`` (``0 <= clicks <= impressions``). Build one with
    :class:`CountsBuilder` or :meth:`from_rows`; the arrays are read-only.
    """

    pair_query: tuple[str, ...]
    pair_object: tuple[str, ...]
    row_pair: np.ndarray
    row_position: np.ndarray
    row_impressions: np.ndarray
    row_clicks: np.ndarray

    @property
    def n_pairs(self) -> int:
        return len(self.pair_query)

    @property
    def n_rows(self) -> int:
        return int(self.row_pair.shape[0])

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]], *, normalize: bool = True) -> ClickCounts:
        """Counts from ``(query, object_id, position, impressions, clicks)`` rows, merged by key.

        :param normalize: apply :func:`normalize_query` to ``query`` (rows with the same normalized query,
            object and position are summed); ``False`` when the queries are keys already.
        """
        builder = CountsBuilder(normalize=normalize)
        for row in rows:
            builder.add(*row)
        return builder.build()


class CountsBuilder:
    """Accumulates counts and merges rows with the same (normalized query, object, position).

    ``add`` takes one aggregated row (what a SQL ``GROUP BY search_query, object_id, position`` returns);
    ``add_session`` takes one session's signal. Rows whose query normalizes to ``""`` are dropped and
    counted in :attr:`empty_queries`.
    """

    def __init__(self, *, normalize: bool = True) -> None:
        self.normalize = normalize
        self.empty_queries = 0
        self.sessions = 0
        self._cells: dict[tuple[str, str, int], list[int]] = {}

    def add(self, query: str, object_id: str, position: int, impressions: int, clicks: int = 0) -> None:
        """Add one aggregated row; a bad value raises ``ValueError`` naming the field."""
        if not isinstance(query, str):
            raise ValueError(f"query: expected a string, got {query!r}")
        if not isinstance(object_id, str) or not object_id:
            raise ValueError(f"object_id: expected a non-empty string, got {object_id!r} (query {query!r})")
        for name, value, low in (("position", position, 1), ("impressions", impressions, 0), ("clicks", clicks, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(
                    f"{name}: expected an integer >= {low}, got {value!r} (query {query!r}, {object_id!r})"
                )
        if clicks > impressions:
            raise ValueError(f"clicks: {clicks} > impressions {impressions} (query {query!r}, {object_id!r})")
        key = normalize_query(query) if self.normalize else query
        if not key:
            self.empty_queries += 1
            return
        if impressions == 0:
            return
        cell = self._cells.get((key, object_id, int(position)))
        if cell is None:
            self._cells[(key, object_id, int(position))] = [int(impressions), int(clicks)]
        else:
            cell[0] += int(impressions)
            cell[1] += int(clicks)

    def add_session(self, signal: SessionSignal | None) -> None:
        """Add one session's impressions and clicks (``None``, an excluded session, is ignored)."""
        if signal is None:
            return
        self.sessions += 1
        cells = self._cells
        for position, obj in enumerate(signal.results, start=1):
            k = (signal.key, obj, position)
            click = 1 if obj in signal.clicked else 0
            cell = cells.get(k)
            if cell is None:
                cells[k] = [1, click]
            else:
                cell[0] += 1
                cell[1] += click

    def build(self) -> ClickCounts:
        """The merged counts (rows sorted by query key, object, position)."""
        keys = sorted(self._cells)
        pair_query: list[str] = []
        pair_object: list[str] = []
        row_pair = np.empty(len(keys), dtype=np.int64)
        row_position = np.empty(len(keys), dtype=np.int64)
        row_impressions = np.empty(len(keys), dtype=np.int64)
        row_clicks = np.empty(len(keys), dtype=np.int64)
        last: tuple[str, str] | None = None
        for i, (q, obj, pos) in enumerate(keys):
            if (q, obj) != last:
                pair_query.append(q)
                pair_object.append(obj)
                last = (q, obj)
            n, m = self._cells[(q, obj, pos)]
            row_pair[i] = len(pair_query) - 1
            row_position[i] = pos
            row_impressions[i] = n
            row_clicks[i] = m
        return ClickCounts(
            tuple(pair_query),
            tuple(pair_object),
            _readonly(row_pair),
            _readonly(row_position),
            _readonly(row_impressions),
            _readonly(row_clicks),
        )
