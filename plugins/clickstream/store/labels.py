"""Training-signal labels of a released batch: fit the position-based click model, keep its curve, read it.

Fitting (:meth:`LabelOperations.fit_batch_labels`) runs the aggregation pass shared with the search
analytics (:func:`clickstream.store.aggregation.aggregate_batch`) in one read snapshot whose first read is the
erasure generation. Memory is bounded by the distinct (normalized query, object, position) triples, never by
the sessions. The impressions of keyword sessions NOT marked irrelevant, with the events of ``[clickstream]
label_event_types`` as clicks, become :class:`~clickstream.signal.counts.ClickCounts`, and
:func:`~clickstream.signal.pbm.fit_pbm` fits ``θ`` for positions 1..``[clickstream] label_max_position`` and
``γ`` per (query, object) pair. Payload-search sessions (no query), sessions marked irrelevant and sessions
whose query normalizes to ``""`` are left out and counted in the report; a position the batch cannot
identify has no ``θ``, and the report says which and why.

Then, in a short write of its own and with the discipline of the kept metrics and analytics (no user erased
since the snapshot: the tombstone count is unchanged, the keep-write waits for erasures in flight; no kept
fit saw more events or irrelevant flags), the store keeps the batch's examination curve and report
(``cs_batch_labels``) and the judgments of its top ``[clickstream] analytics_top_n`` queries by impressions
(``cs_batch_judgment``); the dataset's ``judgments`` table (:mod:`clickstream.dataset.labels`) has every
pair. An erasure deletes the kept labels of the batches that held the user's sessions
(:mod:`clickstream.store.erasure`); retention deletes them with the batch (ON DELETE CASCADE).

The per-session pass the training pairs need (:meth:`LabelOperations.iter_label_sessions`): keyword,
non-irrelevant sessions of the batch, a keyset page at a time, each with its results in order and the
objects it has a label event on.

Reads: :meth:`LabelOperations.batch_propensities` (the kept curve) and :meth:`LabelOperations.batch_judgments`
(keyset pages of the kept judgments). A batch without kept labels answers :class:`Conflict` (409: unknown
batches are :class:`NotFound`, 404).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import RowMapping, exc

from clickstream import models
from clickstream.signal.counts import ClickCounts
from clickstream.signal.normalize import normalize_query
from clickstream.signal.pbm import PBMFit, fit_pbm
from clickstream.store.aggregation import BatchAggregate, aggregate_batch, label_event_types
from clickstream.store.base import StoreBase
from clickstream.store.batches import require_batch
from clickstream.store.checks import int_between, optional_text
from clickstream.store.db import dumps, loads
from clickstream.store.errors import Conflict, InvalidInput

log = logging.getLogger(__name__)

#: Largest ``limit`` of a judgments page.
MAX_JUDGMENTS_PAGE = 1000
#: Largest ``page_size`` of :meth:`LabelOperations.iter_label_sessions`.
MAX_LABEL_SESSIONS_PAGE = 100_000
#: Judgment rows a keep-write inserts per statement.
JUDGMENT_CHUNK = 5000
#: Judgments of one query that ``query_analytics`` answers at most (``labels``).
QUERY_LABELS = 100
#: Bigger than any session number (the default upper bound of a page range).
_NO_BOUND = 2**63 - 1


@dataclass(frozen=True)
class LabelSession:
    """One session of the per-session pass: its stored query, results in order, objects with a label event."""

    session_number: int
    session_id: str
    query: str
    results: tuple[str, ...]
    clicked: frozenset[str]


@dataclass(frozen=True)
class LabelSessionsPage:
    """A keyset page of :meth:`LabelOperations.iter_label_sessions`."""

    sessions: list[LabelSession]

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def first_number(self) -> int:
        return self.sessions[0].session_number

    @property
    def last_number(self) -> int:
        return self.sessions[-1].session_number


@dataclass(frozen=True)
class LabelsFit:
    """A fit of a batch's labels: the model, the counts it was fitted on, the report (``kept`` included), and
    the settings the training pairs use (``max_ips_weight``, ``label_event_types``)."""

    batch_id: str
    fit: PBMFit
    counts: ClickCounts
    report: models.LabelsReport
    max_ips_weight: float
    label_event_types: tuple[str, ...]
    generation: int

    @property
    def theta(self) -> list[float | None]:
        """``θ`` per position 1..``max_position`` (``None``: unidentified), as the pairs take it."""
        return [self.fit.theta_at(k) for k in range(1, self.fit.max_position + 1)]


def click_counts(aggregate: BatchAggregate) -> ClickCounts:
    """The counts the click model is fitted on: the aggregate's impressions of keyword sessions NOT marked
    irrelevant whose query key is not empty, ``label_clicks`` as clicks. The aggregate's rows are unique per
    (key, object, position, irrelevant), so these are unique per (key, object, position): sorted and numbered
    here directly (what :class:`~clickstream.signal.counts.CountsBuilder` does, without its per-row checks)."""
    rows = sorted(
        (imp.query, imp.object_id, imp.position, imp.shown, imp.label_clicks)
        for imp in aggregate.impressions
        if not imp.irrelevant and imp.query and imp.shown > 0
    )
    pair_query: list[str] = []
    pair_object: list[str] = []
    row_pair = np.empty(len(rows), dtype=np.int64)
    last: tuple[str, str] | None = None
    for i, (q, o, *_) in enumerate(rows):
        if (q, o) != last:
            pair_query.append(q)
            pair_object.append(o)
            last = (q, o)
        row_pair[i] = len(pair_query) - 1
    columns = [np.fromiter((r[j] for r in rows), dtype=np.int64, count=len(rows)) for j in (2, 3, 4)]
    for a in (row_pair, *columns):
        a.flags.writeable = False
    return ClickCounts(tuple(pair_query), tuple(pair_object), row_pair, *columns)


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def judgment_row(batch_id: str, row: dict[str, Any]) -> dict[str, Any]:
    """A ``cs_batch_judgment`` row from a :meth:`PBMFit.judgment_rows` row (no NaN: JSON has none)."""
    return {
        "batch_id": batch_id,
        "query_key": row["query"],
        "object_id": row["object_id"],
        "impressions": row["impressions"],
        "clicks": row["clicks"],
        "mean_position": row["mean_position"],
        "raw_ctr": row["raw_ctr"],
        "gamma": _num(row["gamma"]),
        "effective_sample_size": row["effective_sample_size"],
    }


def encode_after(query_key: str, object_id: str) -> str:
    """The opaque ``after`` cursor of a judgments page (the last row's key)."""
    text = json.dumps([query_key, object_id], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_after(after: str) -> tuple[str, str]:
    """``(query_key, object_id)`` of an ``after`` cursor; :class:`InvalidInput` naming ``after``."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
        ok = isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw)
    except (ValueError, TypeError, binascii.Error):
        ok = False
    if not ok:
        raise InvalidInput.field("after", "not a cursor of this answer: pass the previous page's next_after")
    return raw[0], raw[1]


def labels_report(row: RowMapping, kept: bool = True) -> models.LabelsReport:
    """The report of a ``kept_batch_labels`` row."""
    fit = loads(row["fit"])
    return models.LabelsReport(
        batch_id=row["batch_id"],
        kept=kept,
        max_position=row["max_position"],
        label_event_types=loads(row["label_event_types"]),
        sessions=row["sessions"],
        fitted_sessions=row["fitted_sessions"],
        payload_search_sessions=row["payload_search_sessions"],
        irrelevant_sessions=row["irrelevant_sessions"],
        empty_query_sessions=row["empty_query_sessions"],
        impressions=row["impressions"],
        clicks=row["clicks"],
        identified_positions=fit["identified_positions"],
        unidentified_positions=fit["unidentified_positions"],
        identifiability=fit["identifiability"],
        converged=fit["converged"],
        iterations=fit["iterations"],
        distinct_queries=row["distinct_queries"],
        kept_queries=row["kept_queries"],
        judgments=row["judgments"],
        kept_judgments=row["kept_judgments"],
        fit=fit,
        computed_at=row["computed_at"],
    )


class LabelOperations(StoreBase):
    # ------------------------------------------------------------------------------------ fitting

    def fit_batch_labels(self, batch_id: str) -> LabelsFit:
        """Fit the click model on released batch ``batch_id`` and keep its curve and judgments (see the module
        docstring): one aggregation pass in one read snapshot, kept in a short write of its own when safe
        (``report.kept`` false otherwise: a user erased since the snapshot, the batch purged, a newer fit
        kept). Running it again replaces what is kept. Logs the fit's iterations and convergence.

        :raises NotFound: unknown ``batch_id``.
        :raises Conflict: the batch is still collecting.
        """
        db = self.db
        types = label_event_types(self.config.label_event_types)
        with db.transaction(write=False) as conn:
            if db.has("snapshot_read"):  # PostgreSQL: one snapshot for every query below (SQLite has one)
                db.run(conn, "snapshot_read")
            generation = int(db.run(conn, "erasure_generation").scalar_one())
            if require_batch(db, conn, batch_id)["status"] != "released":
                raise Conflict(f"batch_id {batch_id!r} is collecting: labels are fitted for released batches")
            aggregate = aggregate_batch(db, conn, batch_id, label_event_types=types, labels=True)
        counts = click_counts(aggregate)
        fit = fit_pbm(counts, max_position=self.config.label_max_position, log=log)
        report = self._report(aggregate, counts, fit, types)
        labels = LabelsFit(batch_id, fit, counts, report, float(self.config.max_ips_weight), types, generation)
        kept = self._keep_labels(labels, aggregate)
        return LabelsFit(
            batch_id,
            fit,
            counts,
            report.model_copy(update={"kept": kept}),
            labels.max_ips_weight,
            types,
            generation,
        )

    def _report(
        self, aggregate: BatchAggregate, counts: ClickCounts, fit: PBMFit, types: tuple[str, ...]
    ) -> models.LabelsReport:
        totals = aggregate.totals
        empty = aggregate.queries.get("")
        empty_sessions = empty.sessions - empty.irrelevant_sessions if empty is not None else 0
        summary = {**fit.summary(), "identifiability": fit.identifiability.describe()}
        distinct, kept_queries, kept_pairs = self._kept_queries(fit)
        return models.LabelsReport(
            batch_id=aggregate.batch_id,
            kept=False,
            max_position=fit.max_position,
            label_event_types=list(types),
            sessions=totals.sessions,
            fitted_sessions=totals.keyword_sessions - totals.irrelevant_sessions - empty_sessions,
            payload_search_sessions=totals.payload_search_sessions,
            irrelevant_sessions=totals.irrelevant_sessions,
            empty_query_sessions=empty_sessions,
            impressions=int(counts.row_impressions.sum()),
            clicks=int(counts.row_clicks.sum()),
            identified_positions=list(fit.identifiability.identified),
            unidentified_positions={str(k): v for k, v in sorted(fit.identifiability.unidentified.items())},
            identifiability=summary["identifiability"],
            converged=fit.converged,
            iterations=fit.iterations,
            distinct_queries=distinct,
            kept_queries=len(kept_queries),
            judgments=summary["pairs"],
            kept_judgments=kept_pairs,
            fit=summary,
        )

    def _kept_queries(self, fit: PBMFit) -> tuple[int, set[str], int]:
        """Distinct queries of the fit, the top ``analytics_top_n`` by impressions (ties by key), and how many
        judgments they hold."""
        impressions: dict[str, int] = {}
        pairs: dict[str, int] = {}
        for q, n in zip(fit.pair_query, fit.pair_impressions.tolist(), strict=True):
            if n > 0:
                impressions[q] = impressions.get(q, 0) + n
                pairs[q] = pairs.get(q, 0) + 1
        top = sorted(impressions, key=lambda q: (-impressions[q], q))[: self.config.analytics_top_n]
        return len(impressions), set(top), sum(pairs[q] for q in top)

    def _keep_labels(self, labels: LabelsFit, aggregate: BatchAggregate) -> bool:
        """The keep-write: waits for erasures in flight (PostgreSQL: ``lock_erasures``; SQLite's write lock
        serialises it already), checks ``labels_keep_allowed``, then replaces the batch's kept labels."""
        db, batch_id, report, fit = self.db, labels.batch_id, labels.report, labels.fit
        _, kept_queries, _ = self._kept_queries(fit)
        rows = [judgment_row(batch_id, r) for r in fit.judgment_rows() if r["query"] in kept_queries]
        try:
            with db.transaction(write=True) as conn:
                if db.has("lock_erasures"):
                    db.run(conn, "lock_erasures")
                allowed = db.run(
                    conn,
                    "labels_keep_allowed",
                    batch_id=batch_id,
                    generation=labels.generation,
                    events=aggregate.totals.events,
                    irrelevant_all=aggregate.totals.irrelevant_all,
                ).first()
                if allowed is None:
                    log.info("batch %s: fitted labels not kept (erasure, purge or a newer fit)", batch_id)
                    return False
                db.run(conn, "delete_batch_labels", batch_id=batch_id)
                db.run(
                    conn,
                    "insert_batch_labels",
                    batch_id=batch_id,
                    max_position=report.max_position,
                    label_event_types=dumps(report.label_event_types),
                    sessions=report.sessions,
                    fitted_sessions=report.fitted_sessions,
                    payload_search_sessions=report.payload_search_sessions,
                    irrelevant_sessions=report.irrelevant_sessions,
                    empty_query_sessions=report.empty_query_sessions,
                    impressions=report.impressions,
                    clicks=report.clicks,
                    propensities=dumps(fit.propensity_rows()),
                    fit=dumps(report.fit),
                    distinct_queries=report.distinct_queries,
                    kept_queries=report.kept_queries,
                    judgments=report.judgments,
                    kept_judgments=len(rows),
                    events=aggregate.totals.events,
                    irrelevant_all=aggregate.totals.irrelevant_all,
                    generation=labels.generation,
                    computed_at=self.clock(),
                )
                for start in range(0, len(rows), JUDGMENT_CHUNK):
                    db.run(conn, "insert_batch_judgments", rows=dumps(rows[start : start + JUDGMENT_CHUNK]))
        except exc.IntegrityError:  # the batch row was deleted after the check (a concurrent purge)
            return False
        return True

    # ------------------------------------------------------------------------------------ the per-session pass

    def iter_label_sessions(
        self, batch_id: str, *, page_size: int = 1000, after_number: int = 0, until_number: int | None = None
    ) -> Iterator[LabelSessionsPage]:
        """The keyword sessions of a batch that the labels count (not a payload search, with a query that does
        not normalize to ``""``, not marked irrelevant) and that have an event of ``[clickstream]
        label_event_types`` (the others make no training pair), a keyset page of ``page_size`` at a time by
        session number (each page its own short read; memory is bounded by a page): each with its results in
        order (object ids) and the objects it has such an event on.

        :raises NotFound: unknown ``batch_id`` (checked at the call). :raises InvalidInput: a bad ``page_size``.
        """
        int_between("page_size", page_size, 1, MAX_LABEL_SESSIONS_PAGE)
        with self.db.transaction(write=False) as conn:
            require_batch(self.db, conn, batch_id)
        types = dumps(list(label_event_types(self.config.label_event_types)))
        until = _NO_BOUND if until_number is None else until_number

        def pages() -> Iterator[LabelSessionsPage]:
            after = after_number
            while True:
                with self.db.transaction(write=False) as conn:
                    rows = self.db.run(
                        conn,
                        "label_sessions_page",
                        batch_id=batch_id,
                        after_number=after,
                        until_number=until,
                        limit=page_size,
                        label_event_types=types,
                    ).all()
                if not rows:
                    return
                page = [
                    LabelSession(
                        int(r.session_number),
                        r.session_id,
                        r.search_query,
                        tuple(x for x in loads(r.result_ids) or () if isinstance(x, str)),
                        frozenset(loads(r.clicked_ids) or ()),
                    )
                    for r in rows
                    if normalize_query(r.search_query)  # a query normalizing to "" is not fitted either
                ]
                if page:
                    yield LabelSessionsPage(page)
                if len(rows) < page_size:
                    return
                after = int(rows[-1].session_number)

        return pages()

    # ------------------------------------------------------------------------------------ reading

    def _kept_labels(self, conn: Any, batch_id: str) -> RowMapping:
        batch = require_batch(self.db, conn, batch_id)
        row = self.db.run(conn, "kept_batch_labels", batch_id=batch_id).mappings().first()
        if row is None:
            if batch["status"] != "released":
                raise Conflict(f"batch_id {batch_id!r} is collecting: labels are fitted for released batches")
            raise Conflict(
                f"batch_id {batch_id!r}: no labels kept yet (the release DAG's labels task fits them; an erasure "
                "of one of its users drops them until the next fit)"
            )
        return row

    def batch_propensities(self, batch_id: str) -> models.BatchPropensities:
        """The kept examination curve of a released batch (positions 1..its ``max_position``: impressions,
        clicks, raw CTR, ``θ`` and its standard error, why a position is unidentified) and its fit's report.

        :raises NotFound: unknown ``batch_id``. :raises Conflict: no labels kept for it (yet).
        """
        batch_id = optional_text("batch_id", batch_id, 128) or ""
        with self.db.transaction(write=False) as conn:
            row = self._kept_labels(conn, batch_id)
        return models.BatchPropensities(
            batch_id=batch_id,
            report=labels_report(row),
            propensities=[models.Propensity(**p) for p in loads(row["propensities"])],
        )

    def batch_judgments(
        self, batch_id: str, query: str | None = None, limit: int = 100, after: str | None = None
    ) -> models.JudgmentsPage:
        """A keyset page of the kept judgments of a released batch (raw CTR vs debiased ``γ`` per (normalized
        query, object)), ordered by (query, object_id); of one ``query`` only (normalized here) when given.
        The store keeps the judgments of the batch's top ``[clickstream] analytics_top_n`` queries by
        impressions (``kept_queries`` of ``distinct_queries``); the dataset's ``judgments`` table has all.

        :raises NotFound: unknown ``batch_id``. :raises Conflict: no labels kept for it (yet).
        :raises InvalidInput: a bad ``limit``, ``after`` or ``query`` (empty once normalized), named.
        """
        batch_id = optional_text("batch_id", batch_id, 128) or ""
        int_between("limit", limit, 1, MAX_JUDGMENTS_PAGE)
        key = None
        if query is not None:
            key = normalize_query(optional_text("query", query, 1024) or "")
            if not key:
                raise InvalidInput.field("query", "must hold a word: it is empty once normalized")
        after_query = after_object = None
        if after is not None:
            after_query, after_object = decode_after(optional_text("after", after, 4096) or "")
        with self.db.transaction(write=False) as conn:
            kept = self._kept_labels(conn, batch_id)
            rows = (
                self.db.run(
                    conn,
                    "batch_judgments_page",
                    batch_id=batch_id,
                    query_key=key,
                    after_query=after_query,
                    after_object=after_object,
                    limit=limit + 1,
                )
                .mappings()
                .all()
            )
        page = rows[:limit]
        return models.JudgmentsPage(
            batch_id=batch_id,
            query=key,
            judgments=[models.Judgment(query=r["query_key"], **{k: r[k] for k in r if k != "query_key"}) for r in page],
            kept_queries=kept["kept_queries"],
            distinct_queries=kept["distinct_queries"],
            next_after=encode_after(page[-1]["query_key"], page[-1]["object_id"]) if len(rows) > limit else None,
        )
