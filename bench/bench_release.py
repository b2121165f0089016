"""4. Release latency on a 1,000-session batch and on the largest batch, through the hook.
Target: big/small median ratio at most 2.

A batch can be released once, so before each measured release the harness turns the seeded (already
released) batch back into the collecting batch with one UPDATE of its ``cs_batch`` row (status, release id
and time cleared; its sessions untouched). The two sizes alternate, each release under a new release_id.
"""

from __future__ import annotations

import time

from bench.harness import Context, Table, libpq_url, log, median, ratio_cell

_REOPEN = "UPDATE cs_batch SET status = 'collecting', release_id = NULL, released_at = NULL WHERE batch_id = %s"


def run(ctx: Context) -> list[Table]:
    import psycopg

    from clickstream.hooks import ClickstreamHook

    batches = {"small": ctx.batch("small"), "big": ctx.batch("big")}
    hook = ClickstreamHook()
    hook.list_batches(limit=1)  # connect once before timing
    reps = max(5, ctx.repeat * 3)
    samples: dict[str, list[float]] = {k: [] for k in batches}
    with psycopg.connect(libpq_url(ctx.url), autocommit=True) as admin:
        for i in range(reps):
            for name, b in batches.items():
                admin.execute(_REOPEN, (b.batch_id,))
                t0 = time.perf_counter()
                res = hook.release_batch(f"bench-release-{name}-{i}")
                samples[name].append(time.perf_counter() - t0)
                assert res.batch_id == b.batch_id
        # retries of a known release_id answer from the idempotency lookup: same size independence
        retry = [timed_call(lambda: hook.release_batch(f"bench-release-big-{reps - 1}")) for _ in range(reps)]
    hook.close()
    log(f"release: {reps} releases per size done")
    t = Table("4. Release latency (ClickstreamHook.release_batch)", ["batch", "sessions", "median ms", "ratio"])
    small = median(samples["small"])
    t.add("small", batches["small"].sessions, small * 1000, "1.00x")
    t.add(
        "big", batches["big"].sessions, median(samples["big"]) * 1000, ratio_cell(median(samples["big"]) / small, "<=2")
    )
    t.add("big, retried release_id", batches["big"].sessions, median(retry) * 1000, f"{median(retry) / small:.2f}x")
    t.notes.append(f"{reps} releases per size, alternating; the batch is reopened by the harness before each")
    return [t]


def timed_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "release"]))
