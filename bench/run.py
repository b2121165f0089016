"""Run the clickstream benchmarks and print their tables (Markdown).

From the repository root (``bench`` and ``tests.support`` are imported as packages from there)::

    .venv/bin/python -m bench.run                          # every benchmark, 200k sessions
    .venv/bin/python -m bench.run --sessions 20000 --only pages,release --repeat 3

Each benchmark is measured against its baseline in the same run, on one throwaway PostgreSQL server.
Progress goes to stderr, the tables to stdout (and to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.exit(
        "bench/run.py is a module of the bench package: run it from the repository root as "
        "`.venv/bin/python -m bench.run [options]` (the former `python bench/run.py` form)"
    )

from bench import harness

BENCHMARKS = {
    "pages": "bench_pages",
    "extract": "bench_extract",
    "ingest": "bench_ingest",
    "live": "bench_live",
    "import": "bench_import",
    "release": "bench_release",
    "rest": "bench_rest",
    "rest-ingest": "bench_rest_ingest",
    "retention": "bench_retention",
    "overview": "bench_overview",
    "labels": "bench_labels",
    "labels-step": "bench_labels_step",
    "analytics": "bench_analytics",
    "client": "bench_client",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sessions",
        type=int,
        default=harness.DEFAULT_SESSIONS,
        help=f"sessions in the largest batch (default {harness.DEFAULT_SESSIONS:,}; "
        f"about {harness.EVENTS_PER_SESSION:g} events each)",
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all, in that order)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of each timed measurement; medians are reported (default 3)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument(
        "--record",
        action="store_true",
        help=f"write this run's guarded ratios to {harness.RECORDED.name} (the next runs compare with them)",
    )
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in only if b not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.sessions < 1000:
        parser.error("--sessions must be >= 1000")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    started = time.monotonic()
    out: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        out.append(text)

    with tempfile.TemporaryDirectory(prefix="clickstream-bench-") as tmp, harness.postgres() as pg:
        ctx = harness.Context(pg=pg, sessions=args.sessions, repeat=args.repeat, workdir=Path(tmp))
        os.environ.update(ctx.airflow_env())  # before anything imports airflow
        load = os.getloadavg()
        emit(
            f"## clickstream benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            f"- machine: {harness.machine()}\n"
            f"- PostgreSQL {harness.pg_version(pg.url)} (throwaway cluster, fsync off, shared_buffers 512MB)\n"
            f"- scale: {args.sessions:,} sessions in the largest batch, about {harness.EVENTS_PER_SESSION:g} "
            f"events per session; repeat {args.repeat}\n"
            f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        )
        for name in only:
            harness.log(f"== {name}")
            t0 = time.monotonic()
            module = importlib.import_module(f"bench.{BENCHMARKS[name]}")
            for table in module.run(ctx):
                emit(table.render())
            harness.log(f"== {name} done in {time.monotonic() - t0:.0f} s")
        if args.record and ctx.ratios:
            harness.record_ratios(ctx.ratios)
            harness.log(f"recorded {len(ctx.ratios)} ratios in {harness.RECORDED}")
    emit(
        f"_total {time.monotonic() - started:.0f} s; load average at end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}_\n"
    )
    if args.out:
        args.out.write_text("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
