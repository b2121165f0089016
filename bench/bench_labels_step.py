"""10b. The labels step through the store (issue 22): its time against the extraction's in the same run, and its
peak memory when the batch grows 5x.

Targets: the labels step (``BatchLabelsOperator.execute``: the aggregation pass and the PBM fit in the store,
the keep-write, the ``propensities``, ``judgments`` and ``pairs`` tables written) on the ``big`` batch
(``--sessions``, 200,000 by default) takes at most 0.5x the extraction's time (``ExtractBatchOperator.execute``,
the whole batch, one task) on the same batch; its peak memory on ``big`` is at most 1.2x its peak on ``mid``
(a fifth of the sessions). The batches are seeded (COPY) in a database of their own from the ground-truth
generator (500 queries x 20 candidates, rankings that vary, clicks from a known PBM, so every position is
identified and the pairs are made), padded with ``view`` events to about 5 a session like the harness's data.
Each run is a fresh interpreter (``harness.run_child``): wall time of the work,
peak resident memory above the interpreter's after imports.

``BENCH_LABELS_BEFORE=<checkout>/plugins`` also runs the labels step with that checkout's code (its
``plugins`` on ``PYTHONPATH``, e.g. a worktree of main) on the same batches in the same run, as "before" rows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

from bench.harness import (
    EVENTS_PER_SESSION,
    Context,
    SeededBatch,
    Table,
    log,
    median,
    mib,
    ratio_cell,
    run_child,
    seed_batch,
    vacuum_analyze,
)

#: The ground truth the batches' clicks follow (so rankings vary and every position 1..20 is identified).
TRUTH = {"seed": 0, "n_queries": 500, "n_candidates": 20, "max_position": 20}

_PRELOAD = ["clickstream.operators.extract", "clickstream.operators.labels", "clickstream.dataset", "clickstream.hooks"]


def truth_sessions(n: int, seed: int, id_prefix: str) -> Iterator[tuple[dict, list[dict]]]:
    """``n`` ground-truth sessions (``pbm_truth(**TRUTH)``) with ``view`` events added on shown results, top
    first, until about :data:`~bench.harness.EVENTS_PER_SESSION` events a session (as the harness's data)."""
    import time

    from clickstream.synthetic import generate, pbm_truth

    truth = pbm_truth(**TRUTH)  # type: ignore[arg-type]
    start = int(time.time() * 1000) - 2 * 3600 * 1000
    for s in generate(n, seed=seed, start_ms=start, id_prefix=id_prefix, truth=truth):
        events = s.events + s.late_events
        shown = s.session["search_results"]
        for k in range(min(max(0, round(EVENTS_PER_SESSION - len(events))), len(shown))):
            t0 = s.session["created_at"] + 500 + 700 * k
            events.append(
                {
                    "event_id": f"view-{k:03d}",
                    "object_id": shown[k]["object_id"],
                    "event_type": "view",
                    "created_at": t0,
                }
            )
        yield s.session, events


def child_extract(batch_id: str, out_dir: str) -> dict[str, Any]:
    from clickstream.operators.extract import ExtractBatchOperator

    res = ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=out_dir).execute({})
    return {"sessions": res["sessions"]}


def child_labels(batch_id: str, out_dir: str) -> dict[str, Any]:
    from clickstream.operators.labels import BatchLabelsOperator

    res = BatchLabelsOperator(task_id="labels", batch_id=batch_id, base_path=out_dir).execute({})
    report = res["report"]
    return {
        "fitted_sessions": report["fitted_sessions"],
        "iterations": report["iterations"],
        "converged": report["converged"],
        "judgments": res["tables"]["judgments"]["rows"],
        "pairs": res["tables"]["pairs"]["rows"],
        "identified": report["identified_positions"],
        "fit_seconds": report["fit"]["seconds"],
        "fit_step_seconds": res["fit_step_seconds"],
        "pairs_seconds": res["pairs_seconds"],
    }


def _run(
    ctx: Context, url: str, kind: str, batch_id: str, plugins: str | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    out_dir = str(ctx.workdir / f"labels-step-{kind}")
    shutil.rmtree(out_dir, ignore_errors=True)
    env = ctx.airflow_env(url)
    if plugins:  # another checkout's code (the "before" rows)
        env["PYTHONPATH"] = os.pathsep.join([plugins, *filter(None, [os.environ.get("PYTHONPATH")])])
    try:
        return run_child(
            f"bench.bench_labels_step:child_{kind}",
            env=env,
            preload=_PRELOAD,
            batch_id=batch_id,
            out_dir=out_dir,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # never keep generated data


def _seed(url: str, n: int, name: str) -> SeededBatch:
    return seed_batch(url, truth_sessions(n, seed=len(name), id_prefix=name), release_id=name, label=f"labels {name}")


def run(ctx: Context) -> list[Table]:
    ctx.pg.drop_database("labels_step")
    url = ctx.pg.create_database("labels_step")
    big, mid = _seed(url, ctx.sessions, "big"), _seed(url, max(1000, ctx.sessions // 5), "mid")
    vacuum_analyze(url)
    extract, labels, peaks = [], [], {"mid": [], "big": []}  # type: ignore[var-annotated]
    before = os.environ.get("BENCH_LABELS_BEFORE")
    old_labels, old_peaks = [], {"mid": [], "big": []}  # type: ignore[var-annotated]
    out: dict[str, Any] = {}
    old: dict[str, Any] = {}
    for rep in range(ctx.repeat):
        if before:
            old, mem = _run(ctx, url, "labels", big.batch_id, before)
            old_labels.append(mem["wall"])
            old_peaks["big"].append(mem["peak_rss"] - mem["start_rss"])
            _, mem = _run(ctx, url, "labels", mid.batch_id, before)
            old_peaks["mid"].append(mem["peak_rss"] - mem["start_rss"])
            log(
                f"  rep {rep + 1} before ({before}): labels {old_labels[-1]:.1f} s (fit step "
                f"{old['fit_step_seconds']} s, pairs pass {old['pairs_seconds']} s); peak above start: mid "
                f"{mib(old_peaks['mid'][-1]):.0f} MiB, big {mib(old_peaks['big'][-1]):.0f} MiB"
            )
        _, mem = _run(ctx, url, "extract", big.batch_id)
        extract.append(mem["wall"])
        out, mem = _run(ctx, url, "labels", big.batch_id)
        labels.append(mem["wall"])
        peaks["big"].append(mem["peak_rss"] - mem["start_rss"])
        _, mem = _run(ctx, url, "labels", mid.batch_id)
        peaks["mid"].append(mem["peak_rss"] - mem["start_rss"])
        log(
            f"  rep {rep + 1}: extract {extract[-1]:.1f} s, labels {labels[-1]:.1f} s (store's fit step "
            f"{out['fit_step_seconds']} s of which EM {out['fit_seconds']} s, pairs pass {out['pairs_seconds']} s); "
            f"labels peak above start: mid {mib(peaks['mid'][-1]):.0f} MiB, big {mib(peaks['big'][-1]):.0f} MiB"
        )
    time_ratio = median(labels) / median(extract)
    mem_ratio = median(peaks["big"]) / max(median(peaks["mid"]), 1)
    table = Table(
        f"The labels step through the store vs the extraction, batch of {big.sessions:,} sessions (PostgreSQL)",
        ["measure", "value", "vs baseline"],
    )
    table.add(
        f"baseline: extraction of the batch (ExtractBatchOperator), {big.sessions:,} sessions", median(extract), "1.00x"
    )
    table.add(
        "labels step (BatchLabelsOperator: fit + keep + 3 tables)", median(labels), ratio_cell(time_ratio, "<=0.5")
    )
    table.add(f"labels peak memory above start, {mid.sessions:,} sessions (MiB)", mib(median(peaks["mid"])), "1.00x")
    table.add(
        f"labels peak memory above start, {big.sessions:,} sessions (MiB)",
        mib(median(peaks["big"])),
        ratio_cell(mem_ratio, "<=1.2"),
    )
    if before:
        table.add(
            "before: labels step",
            median(old_labels),
            ratio_cell(median(old_labels) / median(extract), "<=0.5"),
        )
        old_mem = median(old_peaks["big"]) / max(median(old_peaks["mid"]), 1)
        table.add(f"before: labels peak memory, {mid.sessions:,} sessions (MiB)", mib(median(old_peaks["mid"])), "")
        table.add(
            f"before: labels peak memory, {big.sessions:,} sessions (MiB)",
            mib(median(old_peaks["big"])),
            ratio_cell(old_mem, "<=1.2"),
        )
        table.notes.append(
            f"before ({before}): the store's fit step {old.get('fit_step_seconds')} s (EM {old.get('fit_seconds')} "
            f"s), the pairs pass {old.get('pairs_seconds')} s; {old.get('judgments', 0):,} judgments, "
            f"{old.get('pairs', 0):,} pairs"
        )
    table.notes.append(
        f"big batch: {out.get('fitted_sessions', 0):,} sessions fitted, {out.get('judgments', 0):,} judgments, "
        f"{out.get('pairs', 0):,} pairs; EM {out.get('iterations')} iterations (converged {out.get('converged')}), "
        f"identified positions {out.get('identified')}; of the labels step: the store's fit step (aggregation "
        f"pass + EM + keep-write) {out.get('fit_step_seconds')} s (EM {out.get('fit_seconds')} s), the pairs pass "
        f"{out.get('pairs_seconds')} s"
    )
    return [table]
