"""9. Search analytics by query: computing and keeping them in the metrics step, and reading them over a range.
Targets: computing and keeping the analytics adds at most 0.3x to the metrics step's time on a batch of
``--sessions`` sessions (200,000 by default); reading the top 100 searches over the last 10 released batches
(of a tenth of ``--sessions`` each: 20,000 by default) takes at most 0.05x of computing the same answer from
the sessions.

One database of its own, seeded with COPY (about 5 events a session). Measured in process on
``SessionStore`` (PostgreSQL):

* the metrics step without analytics: ``batch_metrics`` of the big batch (the aggregation pass without its
  per-query detail, then the metrics' keep-write); with them: ``metrics_step``, as the metrics task runs it
  (ONE aggregation pass in one snapshot: the metrics derived from its batch-wide sums, then one keep-write
  of the metrics and the analytics); also ``compute_batch_analytics`` alone (the analytics' pass and keep);
* ``top_searches(limit=100, last=10)`` from the kept analytics, against the baseline: the aggregation pass
  (:func:`clickstream.store.aggregation.aggregate_batch`) over each of the 10 batches' sessions, merged by
  query and sorted, which is what answering without kept analytics takes.
"""

from __future__ import annotations

from bench.harness import Context, Table, log, median, ratio_cell, seed_batch, synthetic_sessions, timed, vacuum_analyze

RANGE_BATCHES = 10


def _from_sessions(store, batch_ids: list[str]) -> list[tuple[str, int]]:
    """The baseline: top 100 queries by sessions over ``batch_ids``, computed from their sessions."""
    from clickstream.store.aggregation import aggregate_batch

    sessions: dict[str, int] = {}
    for batch_id in batch_ids:
        with store.db.transaction(write=False) as conn:
            aggregate = aggregate_batch(store.db, conn, batch_id)
        for key, q in aggregate.queries.items():
            sessions[key] = sessions.get(key, 0) + q.sessions
    return sorted(sessions.items(), key=lambda kv: (-kv[1], kv[0]))[:100]


def run(ctx: Context) -> list[Table]:
    from clickstream.store import SessionStore

    name = "analytics"
    ctx.pg.drop_database(name)
    url = ctx.pg.create_database(name)
    big = seed_batch(
        url, synthetic_sessions(ctx.sessions, seed=90, id_prefix="an"), release_id="an-big", label="analytics batch"
    )
    per_batch = max(100, ctx.sessions // RANGE_BATCHES)
    small = [
        seed_batch(
            url,
            synthetic_sessions(per_batch, seed=91 + i, id_prefix=f"ar{i}"),
            release_id=f"ar-{i}",
            label=f"analytics range batch {i + 1}/{RANGE_BATCHES}",
        )
        for i in range(RANGE_BATCHES)
    ]
    vacuum_analyze(url)

    store = SessionStore.from_url(url)
    try:
        for b in small:
            store.compute_batch_analytics(b.batch_id)
        metrics, step_times, analytics, kept, computed = [], [], [], [], []
        summary = None
        for rep in range(ctx.repeat):
            metrics.append(timed(lambda: store.batch_metrics(big.batch_id))[0])
            seconds, step = timed(lambda: store.metrics_step(big.batch_id))
            step_times.append(seconds)
            assert step.analytics is not None and step.analytics.kept, "the metrics step kept no analytics"
            assert step.metrics == store.batch_metrics(big.batch_id), "the metrics step's metrics differ"
            seconds, summary = timed(lambda: store.compute_batch_analytics(big.batch_id))
            analytics.append(seconds)
            seconds, page = timed(lambda: store.top_searches(limit=100, last=RANGE_BATCHES))
            kept.append(seconds)
            seconds, baseline = timed(lambda: _from_sessions(store, [b.batch_id for b in small]))
            computed.append(seconds)
            assert [(r.query, r.sessions) for r in page.searches] == baseline, "kept answer differs from sessions"
            log(
                f"  rep {rep + 1}: metrics {metrics[-1]:.2f} s, metrics step {step_times[-1]:.2f} s, analytics alone "
                f"{analytics[-1]:.2f} s; top 100 kept "
                f"{kept[-1] * 1000:.1f} ms, from sessions {computed[-1]:.2f} s"
            )
    finally:
        store.dispose()

    assert summary is not None
    step = Table(
        f"Search analytics in the metrics step: one released batch of {ctx.sessions:,} sessions (PostgreSQL)",
        ["operation", "median s", "vs baseline"],
    )
    base = median(metrics)
    step.add("baseline: the metrics step without analytics (batch_metrics)", base, "1.00x")
    step.add(
        "metrics_step (metrics + analytics: one pass, one keep-write)",
        median(step_times),
        f"{median(step_times) / base:.2f}x",
    )
    step.add(
        "the analytics' addition (metrics_step - batch_metrics)",
        median(step_times) - base,
        ratio_cell((median(step_times) - base) / base, "<=0.3"),
    )
    step.add(
        "for comparison: compute_batch_analytics alone (its own pass + keep-write)",
        median(analytics),
        f"{median(analytics) / base:.2f}x",
    )
    step.notes.append(
        f"{summary.keyword_sessions:,} keyword sessions, {summary.distinct_queries:,} distinct queries "
        f"({summary.kept_queries:,} kept), {summary.distinct_objects:,} distinct objects "
        f"({summary.kept_objects:,} kept), top_n {summary.top_n}"
    )
    read = Table(
        f"Top 100 searches over the last {RANGE_BATCHES} released batches of {per_batch:,} sessions (PostgreSQL)",
        ["operation", "median ms", "vs baseline"],
    )
    base = median(computed)
    read.add("baseline: the aggregation pass over the 10 batches' sessions, merged", base * 1000, "1.00x")
    read.add(
        "top_searches(limit=100, last=10) from the kept analytics",
        median(kept) * 1000,
        ratio_cell(median(kept) / base, "<=0.05"),
    )
    read.notes.append("both answers are checked equal (query and sessions of each of the 100 rows)")
    return [step, read]


if __name__ == "__main__":
    import argparse
    import os
    import tempfile
    from pathlib import Path

    from bench import harness

    parser = argparse.ArgumentParser(prog="python -m bench.bench_analytics")
    parser.add_argument("--sessions", type=int, default=harness.DEFAULT_SESSIONS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clickstream-bench-") as tmp, harness.postgres() as pg:
        ctx = Context(pg=pg, sessions=args.sessions, repeat=args.repeat, workdir=Path(tmp))
        os.environ.update(ctx.airflow_env())
        for t in run(ctx):
            print(t.render())
