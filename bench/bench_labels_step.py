"""10b. The labels step through the store (issue 22): its time against the extraction's in the same run, and its
peak memory when the batch grows 5x.

Targets: the labels step (``BatchLabelsOperator.execute``: the aggregation pass and the PBM fit in the store,
the keep-write, the ``propensities``, ``judgments`` and ``pairs`` tables written) on the ``big`` batch
(``--sessions``, 200,000 by default) takes at most 0.5x the extraction's time (``ExtractBatchOperator.execute``,
the whole batch, one task) on the same batch; its peak memory on ``big`` is at most 1.2x its peak on ``mid``
(a fifth of the sessions). Each run is a fresh interpreter (``harness.run_child``): wall time of the work,
peak resident memory above the interpreter's after imports.
"""

from __future__ import annotations

import shutil
from typing import Any

from bench.harness import Context, Table, log, median, mib, ratio_cell, run_child

_PRELOAD = ["clickstream.operators.extract", "clickstream.operators.labels", "clickstream.dataset", "clickstream.hooks"]


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
    }


def _run(ctx: Context, kind: str, batch_id: str) -> tuple[dict[str, Any], dict[str, float]]:
    out_dir = str(ctx.workdir / f"labels-step-{kind}")
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        return run_child(
            f"bench.bench_labels_step:child_{kind}",
            env=ctx.airflow_env(),
            preload=_PRELOAD,
            batch_id=batch_id,
            out_dir=out_dir,
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # never keep generated data


def run(ctx: Context) -> list[Table]:
    big, mid = ctx.batch("big"), ctx.batch("mid")
    extract, labels, peaks = [], [], {"mid": [], "big": []}  # type: ignore[var-annotated]
    out: dict[str, Any] = {}
    for rep in range(ctx.repeat):
        _, mem = _run(ctx, "extract", big.batch_id)
        extract.append(mem["wall"])
        out, mem = _run(ctx, "labels", big.batch_id)
        labels.append(mem["wall"])
        peaks["big"].append(mem["peak_rss"] - mem["start_rss"])
        _, mem = _run(ctx, "labels", mid.batch_id)
        peaks["mid"].append(mem["peak_rss"] - mem["start_rss"])
        log(
            f"  rep {rep + 1}: extract {extract[-1]:.1f} s, labels {labels[-1]:.1f} s (fit {out['fit_seconds']} s); "
            f"labels peak above start: mid {mib(peaks['mid'][-1]):.0f} MiB, big {mib(peaks['big'][-1]):.0f} MiB"
        )
    time_ratio = median(labels) / median(extract)
    mem_ratio = median(peaks["big"]) / max(median(peaks["mid"]), 1)
    table = Table(
        f"The labels step through the store vs the extraction, batch of {big.sessions:,} sessions (PostgreSQL)",
        ["measure", "value", "vs baseline"],
    )
    table.add(f"baseline: extraction of the batch (ExtractBatchOperator), {big.sessions:,} sessions", median(extract), "1.00x")
    table.add("labels step (BatchLabelsOperator: fit + keep + 3 tables)", median(labels), ratio_cell(time_ratio, "<=0.5"))
    table.add(f"labels peak memory above start, {mid.sessions:,} sessions (MiB)", mib(median(peaks["mid"])), "1.00x")
    table.add(
        f"labels peak memory above start, {big.sessions:,} sessions (MiB)",
        mib(median(peaks["big"])),
        ratio_cell(mem_ratio, "<=1.2"),
    )
    table.notes.append(
        f"big batch: {out.get('fitted_sessions', 0):,} sessions fitted, {out.get('judgments', 0):,} judgments, "
        f"{out.get('pairs', 0):,} pairs; EM {out.get('iterations')} iterations (converged {out.get('converged')}), "
        f"identified positions {out.get('identified')}"
    )
    return [table]
