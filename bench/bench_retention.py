"""7. Retention: registration latency while a large released batch is purged, against without a purge.
Target: p50 during the purge at most 2x the p50 without it.

One database of its own: a released batch of ``--sessions`` sessions (about 5 events each, seeded with COPY)
is purged by ``ClickstreamHook.purge_batch`` (chunks of 1,000 sessions, each its own transaction) in one
child process, while another child registers sessions one by one through the hook into the collecting
batch and records each call's latency. The baseline is the same registration loop with no purge running.
Both loops are bounded in count and time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.harness import Context, Table, log, median, percentile, ratio_cell, run_child, seed_batch, synthetic_sessions

CHUNK = 1000
MAX_REGISTRATIONS = 20_000
BASELINE_S = 10.0


def child_register(prefix: str, seconds: float, stop_file: str | None) -> dict[str, Any]:
    """Register sessions one by one for ``seconds`` (or until ``stop_file`` exists); latencies in seconds."""
    import os

    from clickstream.hooks import ClickstreamHook
    from clickstream.store import now_ms

    hook = ClickstreamHook()
    hook.list_batches(limit=1)  # connect before timing
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline and i < MAX_REGISTRATIONS:
        if stop_file and os.path.exists(stop_file):
            break
        body = {
            "session_id": f"{prefix}-{i}",
            "search_query": "q",
            "created_at": now_ms(),
            "search_results": [{"object_id": f"o{k}", "rank": float(k)} for k in range(10)],
        }
        t0 = time.perf_counter()
        hook.register_session(body)
        latencies.append(time.perf_counter() - t0)
        i += 1
    hook.close()
    return {"latencies": latencies}


def child_purge(batch_id: str, chunk: int) -> dict[str, Any]:
    from clickstream.hooks import ClickstreamHook

    hook = ClickstreamHook()
    t0 = time.perf_counter()
    result = hook.purge_batch(batch_id, chunk_sessions=chunk)  # the default duty cycle (0.5)
    wall = time.perf_counter() - t0
    hook.close()
    return {"sessions": result.sessions, "events": result.events, "chunks": result.chunks, "wall": wall}


def run(ctx: Context) -> list[Table]:
    base: list[float] = []
    during: list[float] = []
    purges: list[dict[str, Any]] = []
    for rep in range(ctx.repeat):
        name = f"retention_{rep}"
        ctx.pg.drop_database(name)
        url = ctx.pg.create_database(name)
        env = ctx.airflow_env(url)
        batch = seed_batch(
            url,
            synthetic_sessions(ctx.sessions, seed=60 + rep, id_prefix=f"ret{rep}"),
            release_id=f"old-{rep}",
            label=f"retention #{rep + 1}",
        )
        out, _ = run_child(
            "bench.bench_retention:child_register",
            env=env,
            preload=["clickstream.hooks"],
            prefix=f"base{rep}",
            seconds=BASELINE_S,
            stop_file=None,
        )
        base += out["latencies"]
        stop_file = ctx.workdir / f"purge-done-{rep}"
        stop_file.unlink(missing_ok=True)
        result: dict[str, Any] = {}

        def purge(
            batch_id: str = batch.batch_id,
            stop: Any = stop_file,
            into: dict[str, Any] = result,
            env: dict[str, str] = env,
        ) -> None:
            try:
                into.update(
                    run_child(
                        "bench.bench_retention:child_purge",
                        env=env,
                        preload=["clickstream.hooks"],
                        batch_id=batch_id,
                        chunk=CHUNK,
                    )[0]
                )
            finally:
                stop.touch()

        thread = threading.Thread(target=purge)
        thread.start()
        out, _ = run_child(
            "bench.bench_retention:child_register",
            env=env,
            preload=["clickstream.hooks"],
            prefix=f"during{rep}",
            seconds=600.0,
            stop_file=str(stop_file),
        )
        thread.join()
        during += out["latencies"]
        purges.append(result)
        log(
            f"retention #{rep + 1}: purged {result['sessions']:,} sessions, {result['events']:,} events in "
            f"{result['wall']:.1f} s; {len(out['latencies'])} registrations during it"
        )
        ctx.pg.drop_database(name)
    t = Table(
        f"7. Registration latency while a {ctx.sessions:,}-session released batch is purged "
        f"(chunks of {CHUNK:,} sessions)",
        ["variant", "registrations", "p50 ms", "p90 ms", "p99 ms", "p50 vs without"],
    )
    p50 = median(base)
    t.add("without a purge", len(base), p50 * 1000, percentile(base, 90) * 1000, percentile(base, 99) * 1000, "1.00x")
    t.add(
        "during the purge",
        len(during),
        median(during) * 1000,
        percentile(during, 90) * 1000,
        percentile(during, 99) * 1000,
        ratio_cell(median(during) / p50, "<=2"),
    )
    walls = [p["wall"] for p in purges]
    t.notes += [
        f"purge: {purges[0]['sessions']:,} sessions, {purges[0]['events']:,} events, "
        f"median {median(walls):.1f} s ({purges[0]['sessions'] / median(walls):,.0f} sessions/s) over "
        f"{len(purges)} run(s)",
        "one registering client (ClickstreamHook in its own process); the purge in another process; "
        "the machine's 2 cores are shared with PostgreSQL",
    ]
    return [t]


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "retention"]))
