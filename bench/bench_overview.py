"""8. The batch overview (the Clickstream page): listing batches with their kept metrics, against computing
every listed batch's metrics at each request. Target: a page of batches at most 0.1x of recomputing them.

One database of its own: 10 released batches sharing ``--sessions`` sessions (about 5 events each, seeded with
COPY) and a collecting batch of a tenth of them. Measured in process on ``SessionStore``:

* ``list_batches_page(limit=20)``, the first call (it computes and keeps the metrics of at most 2 released
  batches: the read budget), ``compute_missing_metrics`` (the metrics task's backfill of the other 8) and
  later calls (kept metrics; the collecting batch is counted at each call, sessions and events only);
* the baseline: ``batch_metrics`` of every released batch of the page, which a page without kept metrics
  would have to run at each request;
* ``metrics_series(limit=100)`` (the plots); ``batch_positions`` of one batch from the curve kept with its
  metrics (``max_position=20``) against the curve computed live (``max_position=21``: beyond the kept one),
  and ``batch_metrics`` of that batch (metrics and the 20-position curve, in one snapshot).
"""

from __future__ import annotations

from functools import partial

from bench.harness import Context, Table, log, median, ratio_cell, seed_batch, synthetic_sessions, timed, vacuum_analyze

BATCHES = 10


def run(ctx: Context) -> list[Table]:
    from clickstream.store import SessionStore

    name = "overview"
    ctx.pg.drop_database(name)
    url = ctx.pg.create_database(name)
    per_batch = max(100, ctx.sessions // BATCHES)
    released = [
        seed_batch(
            url,
            synthetic_sessions(per_batch, seed=80 + i, id_prefix=f"ov{i}"),
            release_id=f"ov-{i}",
            label=f"overview batch {i + 1}/{BATCHES}",
        )
        for i in range(BATCHES)
    ]
    seed_batch(url, synthetic_sessions(per_batch, seed=99, id_prefix="ovc"), label="overview collecting batch")
    vacuum_analyze(url)

    store = SessionStore.from_url(url)
    try:
        first, _ = timed(lambda: store.list_batches_page(limit=20))
        log(f"  first page (computes and keeps at most 2 batches' metrics): {first:.2f} s")
        backfill, done = timed(lambda: store.compute_missing_metrics(limit=BATCHES))
        log(f"  backfill of the other {len(done.computed)} batches: {backfill:.2f} s")
        listed, recomputed, series, kept_curve, live_curve, metrics_one = [], [], [], [], [], []
        newest = released[-1].batch_id
        for rep in range(ctx.repeat):
            listed.append(timed(lambda: store.list_batches_page(limit=20))[0])
            recomputed.append(sum(timed(partial(store.batch_metrics, b.batch_id))[0] for b in released))
            series.append(timed(lambda: store.metrics_series(limit=100))[0])
            kept_curve.append(timed(lambda: store.batch_positions(newest))[0])
            live_curve.append(timed(lambda: store.batch_positions(newest, max_position=21))[0])
            metrics_one.append(timed(lambda: store.batch_metrics(newest))[0])
            log(f"  rep {rep + 1}: page {listed[-1] * 1000:.1f} ms, recomputing its metrics {recomputed[-1]:.2f} s")
    finally:
        store.dispose()

    table = Table(
        f"Batch overview: {BATCHES} released batches of {per_batch:,} sessions + a collecting one (PostgreSQL)",
        ["operation", "median ms", "vs baseline"],
    )
    base = median(recomputed)
    table.add("baseline: batch_metrics of the page's 10 released batches", base * 1000, "1.00x")
    table.add(
        "list_batches_page(limit=20), kept metrics", median(listed) * 1000, ratio_cell(median(listed) / base, "<=0.1")
    )
    table.add("list_batches_page(limit=20), first call (computes + keeps 2)", first * 1000, f"{first / base:.2f}x")
    table.add(f"compute_missing_metrics: the other {len(done.computed)}", backfill * 1000, f"{backfill / base:.2f}x")
    table.add("metrics_series(limit=100)", median(series) * 1000, f"{median(series) / base:.2f}x")
    live = median(live_curve)
    table.add("baseline 2: batch_positions(max_position=21) of one batch, computed live", live * 1000, "1.00x")
    table.add(
        "batch_positions(max_position=20), the kept curve",
        median(kept_curve) * 1000,
        ratio_cell(median(kept_curve) / live, "<=0.1"),
    )
    table.add(
        "batch_metrics of that batch (metrics + kept curve)",
        median(metrics_one) * 1000,
        f"{median(metrics_one) / live:.2f}x",
    )
    table.notes.append(
        "the kept page still counts the collecting batch's sessions and events at each call (a tenth of the "
        "sessions); released batches are read from cs_batch_metrics"
    )
    return [table]


if __name__ == "__main__":
    import argparse
    import os
    import tempfile
    from pathlib import Path

    from bench import harness

    parser = argparse.ArgumentParser(prog="python -m bench.bench_overview")
    parser.add_argument("--sessions", type=int, default=harness.DEFAULT_SESSIONS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clickstream-bench-") as tmp, harness.postgres() as pg:
        ctx = Context(pg=pg, sessions=args.sessions, repeat=args.repeat, workdir=Path(tmp))
        os.environ.update(ctx.airflow_env())
        for t in run(ctx):
            print(t.render())
