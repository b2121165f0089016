"""The training-signal tables of a released batch's dataset: ``propensities``, ``judgments`` and ``pairs``.

:func:`write_batch_labels` is the labels step, usable with a :class:`~clickstream.store.SessionStore` or a
:class:`~clickstream.hooks.ClickstreamHook` (anything with ``fit_batch_labels`` and ``iter_label_sessions``),
without Airflow:

1. ``fit_batch_labels``: the store fits the position-based click model on the batch's aggregation pass and
   keeps the curve (:mod:`clickstream.store.labels`); a fit that could not be kept (a user was erased
   while it ran) is fitted again, at most ``attempts`` times, so the tables never hold the counts of
   sessions erased before the step began;
2. the three folders are cleared of their part files (the step owns exactly them: a retry rewrites them,
   and leaves ``sessions``, ``events`` and everything else alone);
3. ``propensities/part-000000000001.parquet``: one row a position 1..``label_max_position``;
   ``judgments/part-<first row, 12 digits>.parquet``: one row a (normalized query, object) pair, up to
   ``judgments_per_part`` rows a part; ``pairs/part-<first session_number>.parquet``: the skip-above pairs
   of the batch's keyword, non-irrelevant sessions, read ``page_size`` sessions at a time (one row group a
   page, ``pages_per_part`` pages a part), each weighted by ``min(1/θ, max_ips_weight)`` of its positive's
   position (:func:`clickstream.signal.pairs.skip_above_pairs`); when no position beyond 1 is identified no
   session can make a pair, and the pass is skipped. Memory: the fit's pairs, and one page.

It returns the manifest's ``labels`` entry: the fit's report, each table's rows and parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clickstream.dataset.schema import (
    JUDGMENTS_SCHEMA,
    LABEL_TABLES,
    PAIRS_SCHEMA,
    PROPENSITIES_SCHEMA,
    part_name,
    part_number,
)
from clickstream.signal.normalize import normalize_query
from clickstream.signal.pairs import PairColumns, PairStats

if TYPE_CHECKING:
    from clickstream.store.labels import LabelSessionsPage, LabelsFit

log = logging.getLogger(__name__)

#: Judgment rows a part file holds at most.
JUDGMENTS_PER_PART = 500_000


def clear_labels(root: Any) -> int:
    """Delete the part files of the three label folders (an earlier attempt's); how many were deleted.

    :param root: the dataset root ``<base_path>/<batch_id>``.
    """
    removed = 0
    for table in LABEL_TABLES:
        folder = root / table
        if folder.exists():
            for path in folder.iterdir():
                if part_number(path.name) is not None:
                    path.unlink()
                    removed += 1
    return removed


def _write(path: Any, table: pa.Table, schema: pa.Schema) -> None:
    with path.open("wb") as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        writer.write_table(table)


def propensities_table(batch_id: str, labels: LabelsFit) -> pa.Table:
    """The ``propensities`` table of a fit (null where there is no number)."""
    rows = labels.fit.propensity_rows()
    columns = {name: [r[name] for r in rows] for name in PROPENSITIES_SCHEMA.names if name != "batch_id"}
    return pa.table({"batch_id": [batch_id] * len(rows), **columns}, schema=PROPENSITIES_SCHEMA)


def judgments_table(batch_id: str, labels: LabelsFit, start: int = 0, stop: int | None = None) -> pa.Table:
    """Rows ``start..stop`` of the ``judgments`` table of a fit (pairs with impressions within
    ``label_max_position``, in the counts' order: by query key, then object)."""
    fit = labels.fit
    index = np.flatnonzero(fit.pair_impressions > 0)[start:stop]
    return pa.table(
        {
            "batch_id": pa.array([batch_id] * len(index), pa.string()),
            "query": pa.array([fit.pair_query[i] for i in index], pa.string()),
            "object_id": pa.array([fit.pair_object[i] for i in index], pa.string()),
            "impressions": pa.array(fit.pair_impressions[index], pa.int64()),
            "clicks": pa.array(fit.pair_clicks[index], pa.int64()),
            "mean_position": pa.array(fit.pair_mean_position[index], pa.float64()),
            "raw_ctr": pa.array(fit.pair_ctr[index], pa.float64()),
            "gamma": pa.array(fit.gamma[index], pa.float64(), from_pandas=True),  # NaN: no γ -> null
            "effective_sample_size": pa.array(fit.pair_ess[index], pa.float64()),
        },
        schema=JUDGMENTS_SCHEMA,
    )


def pairs_table(
    batch_id: str, page: LabelSessionsPage, theta: list[float | None], max_ips_weight: float, stats: PairStats
) -> pa.Table:
    """The skip-above pairs of one page of sessions (``query_key``: the normalized query), gathered as columns
    (:class:`~clickstream.signal.pairs.PairColumns`, no Python object per pair)."""
    columns = PairColumns(theta, max_ips_weight)
    keys: dict[str, str] = {}
    for s in page.sessions:
        key = keys.get(s.query)
        if key is None:
            key = keys[s.query] = normalize_query(s.query)
        columns.add(s.session_id, s.query, s.results, s.clicked, key)
    stats.add(columns.stats)
    cols = columns.columns
    return pa.table(
        {
            "batch_id": pa.array([batch_id] * len(cols["session_id"]), pa.string()),
            **{name: pa.array(cols[name], PAIRS_SCHEMA.field(name).type) for name in PairColumns.FIELDS},
        },
        schema=PAIRS_SCHEMA,
    )


def write_batch_labels(
    source: Any,
    root: Any,
    batch_id: str,
    *,
    page_size: int = 1000,
    pages_per_part: int = 10,
    judgments_per_part: int = JUDGMENTS_PER_PART,
    attempts: int = 3,
    logger: logging.Logger | Any | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The labels step of batch ``batch_id`` into ``root`` (see the module docstring); returns the manifest's
    ``labels`` entry ``{report, max_ips_weight, pair_stats, tables: {name: {rows, parts}}, seconds,
    fit_step_seconds, pairs_seconds}``.

    :param source: a store or a hook (``fit_batch_labels``, ``iter_label_sessions``).
    :param root: the dataset root ``<base_path>/<batch_id>`` (an ``ObjectStoragePath`` or ``UPath``).
    :param on_page: called after each page of the pairs pass with the sessions read so far and the fitted
        sessions (the pass's total), for progress lines.
    """
    logger = logger or log
    if pages_per_part < 1 or judgments_per_part < 1 or attempts < 1:
        raise ValueError("pages_per_part, judgments_per_part and attempts must be >= 1")
    started = time.monotonic()
    labels = source.fit_batch_labels(batch_id)
    for attempt in range(2, attempts + 1):
        if labels.report.kept:
            break
        logger.warning("batch %s: the fit was not kept (an erasure meanwhile?): fitting again (%d)", batch_id, attempt)
        labels = source.fit_batch_labels(batch_id)
    report = labels.report
    fitted_s = time.monotonic() - started
    logger.info(
        "Labels of batch %s: %d sessions fitted (left out: %d payload searches, %d irrelevant, %d empty queries), "
        "%d impressions, %d clicks; %s; %s after %d iterations (%.1f s)%s",
        batch_id,
        report.fitted_sessions,
        report.payload_search_sessions,
        report.irrelevant_sessions,
        report.empty_query_sessions,
        report.impressions,
        report.clicks,
        report.identifiability,
        "converged" if report.converged else "NOT converged",
        report.iterations,
        labels.fit.seconds,
        "" if report.kept else "; not kept in the store (an erasure or a newer fit)",
    )
    removed = clear_labels(root)
    if removed:
        logger.info("removed %d label part file(s) of an earlier attempt", removed)
    for table in LABEL_TABLES:
        (root / table).mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, Any]] = {}

    name = part_name(1)
    props = propensities_table(batch_id, labels)
    _write(root / "propensities" / name, props, PROPENSITIES_SCHEMA)
    tables["propensities"] = {"rows": props.num_rows, "parts": [{"name": name, "rows": props.num_rows}]}

    n_judgments = int((labels.fit.pair_impressions > 0).sum())
    parts = []
    for start in range(0, n_judgments, judgments_per_part):
        table = judgments_table(batch_id, labels, start, start + judgments_per_part)
        name = part_name(start + 1)
        _write(root / "judgments" / name, table, JUDGMENTS_SCHEMA)
        parts.append({"name": name, "rows": table.num_rows})
    tables["judgments"] = {"rows": n_judgments, "parts": parts}
    logger.info("judgments: %d rows in %d part(s)", n_judgments, len(parts))

    theta = labels.theta
    # a pair needs a positive at a position >= 2 with a θ: without one, no session can make a pair
    pairs_possible = any(t is not None for t in theta[1:])
    if not pairs_possible:
        logger.info("pairs: none can be made (no position beyond 1 is identified): the per-session pass is skipped")
    stats = PairStats()
    pair_parts: list[dict[str, Any]] = []
    writer = out = None
    current: dict[str, Any] | None = None
    sessions = pages = 0
    pairs_started = time.monotonic()
    try:
        for page in source.iter_label_sessions(batch_id, page_size=page_size) if pairs_possible else ():
            table = pairs_table(batch_id, page, theta, labels.max_ips_weight, stats)
            if writer is None or current is None:
                current = {"name": part_name(page.first_number), "rows": 0, "sessions": 0}
                out = (root / "pairs" / current["name"]).open("wb")
                writer = pq.ParquetWriter(out, PAIRS_SCHEMA, compression="zstd")
            writer.write_table(table)
            current["rows"] += table.num_rows
            current["sessions"] += len(page)
            sessions += len(page)
            pages += 1
            if pages % pages_per_part == 0:
                writer.close()
                out.close()  # type: ignore[union-attr]
                pair_parts.append(current)
                writer = out = current = None
            if on_page is not None:
                on_page(sessions, report.fitted_sessions)
        if writer is not None and current is not None:
            writer.close()
            out.close()  # type: ignore[union-attr]
            pair_parts.append(current)
            writer = out = None
    finally:
        for obj in (writer, out):  # failing half-way: close what is open; the retry deletes it
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # only when already failing
                    pass
    elapsed = max(time.monotonic() - pairs_started, 1e-9)
    tables["pairs"] = {"rows": stats.pairs, "parts": pair_parts}
    logger.info(
        "pairs: %d from %d sessions (%d positives, %d at unidentified positions left out, %d weights clipped at "
        "%s) in %d part(s), %.1f s (%.0f sessions/s)",
        stats.pairs,
        sessions,
        stats.positives,
        stats.skipped_unidentified,
        stats.clipped,
        labels.max_ips_weight,
        len(pair_parts),
        elapsed,
        sessions / elapsed,
    )
    return {
        "report": report.model_dump(),
        "max_ips_weight": labels.max_ips_weight,
        "pair_stats": {
            "sessions": stats.sessions,
            "positives": stats.positives,
            "pairs": stats.pairs,
            "skipped_unidentified": stats.skipped_unidentified,
            "clipped": stats.clipped,
        },
        "tables": tables,
        "seconds": round(time.monotonic() - started, 3),
        "fit_step_seconds": round(fitted_s, 3),  # the store's aggregation pass, the EM, the keep-write
        "pairs_seconds": round(elapsed, 3),
    }
