"""1. Page latency of ``get_batch_sessions`` (limit 100, events_limit 100) at the first, middle and last page
of the largest batch, through the hook. Target: last/first median ratio at most 1.3.

The three positions are interleaved (first, middle, last, first, ...) so that drift on a shared machine
hits them alike.
"""

from __future__ import annotations

import time

from bench.harness import Context, Table, log, median, one_row, percentile, ratio_cell

LIMIT = 100
EVENTS_LIMIT = 100


def run(ctx: Context) -> list[Table]:
    import psycopg

    from clickstream.hooks import ClickstreamHook

    big = ctx.batch("big")
    with psycopg.connect(ctx.url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        numbers = {}
        for name, position in (("first", 0), ("middle", big.sessions // 2), ("last", max(0, big.sessions - LIMIT))):
            if position == 0:
                numbers[name] = 0
            else:  # the number just before the page's first session (set-up only: OFFSET is fine here)
                numbers[name] = one_row(
                    conn.execute(
                        "SELECT session_number FROM cs_session WHERE batch_id = %s ORDER BY session_number "
                        "OFFSET %s LIMIT 1",
                        (big.batch_id, position - 1),
                    )
                )[0]
    hook = ClickstreamHook()
    calls = max(20, ctx.repeat * 10)
    samples: dict[str, list[float]] = {k: [] for k in numbers}
    for after in numbers.values():  # warm-up: caches, prepared plans
        hook.get_batch_sessions(big.batch_id, after_number=after, limit=LIMIT, events_limit=EVENTS_LIMIT)
    for _ in range(calls):
        for name, after in numbers.items():
            t0 = time.perf_counter()
            page = hook.get_batch_sessions(big.batch_id, after_number=after, limit=LIMIT, events_limit=EVENTS_LIMIT)
            samples[name].append(time.perf_counter() - t0)
            assert len(page.sessions) == LIMIT, (name, len(page.sessions))
    hook.close()
    log(f"pages: {calls} calls per position done")

    t = Table(
        f"1. Page latency: get_batch_sessions(limit={LIMIT}, events_limit={EVENTS_LIMIT}) on a "
        f"{big.sessions:,}-session batch ({big.events:,} events), {calls} calls each",
        ["page", "after_number", "median ms", "p90 ms", "ratio to first"],
    )
    first = median(samples["first"])
    for name, after in numbers.items():
        m = median(samples[name])
        cell = "1.00x" if name == "first" else ratio_cell(m / first, "<=1.3")
        t.add(name, after, m * 1000, percentile(samples[name], 90) * 1000, cell)
    t.notes.append(
        "through ClickstreamHook in-process (SQLAlchemy + psycopg 3, pooled connection); medians of interleaved calls"
    )
    return [t]


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "pages"]))
