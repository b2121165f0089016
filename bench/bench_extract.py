"""2. Full extraction of a released batch to Parquet, against (a) ``COPY (joining query) TO STDOUT`` and
(b) ``PostgresHook.get_df(joining query)`` + ``DataFrame.to_parquet``.

Each variant runs in its own fresh interpreter (``harness.run_child``): wall time of the work itself
(imports excluded), and the child's peak RSS from the kernel. Throughput ratios compare wall times on the
same batch (same sessions, same events). Memory is also measured on a batch a fifth the size, to show
whether it stays flat as the batch grows.

With ``BENCH_EXTRACT_BEFORE=<a checkout>/plugins`` in the environment, the operator of that checkout's code
runs too, interleaved with the others (a change's before and after in one run; the bench's own modules kept).

Targets: >= 0.5x COPY's throughput; >= 1x get_df's throughput with <= 1/5 of its peak memory
(at 1M sessions); peak memory flat as the batch grows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bench.harness import Context, Table, log, median, mib, ratio_cell, run_child

#: The query a user would write: every session of the batch with its events, one row per event (sessions
#: without events once), the same columns the dataset holds, JSON as text (Parquet needs one schema).
JOINING_QUERY = """
SELECT s.session_number, s.session_id, s.search_query, s.search_results::text AS search_results,
       s.search_meta::text AS search_meta, s.payload_filter::text AS payload_filter, s.sort_by::text AS sort_by,
       s.user_id, s.created_at, s.is_irrelevant,
       e.event_id, e.object_id, e.event_type, e.created_at AS event_created_at, e.meta::text AS event_meta
FROM cs_session s LEFT JOIN cs_event e ON e.session_id = s.session_id
WHERE s.batch_id = '{batch_id}'
ORDER BY s.session_number, e.created_at, e.event_seq
"""


# ---------------------------------------------------------------------------- child functions


def child_operator(batch_id: str, out_dir: str, page_size: int = 1000) -> dict[str, Any]:
    """The product: ExtractBatchOperator.execute, as an Airflow worker runs it (no DAG run needed)."""
    from clickstream.operators.extract import ExtractBatchOperator

    # progress logs are filtered at WARNING (AIRFLOW__LOGGING__LOGGING_LEVEL in the harness's environment)
    op = ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=out_dir, page_size=page_size)
    res = op.execute({})
    return {"sessions": res["sessions"], "events": res["events"], "bytes": _du(out_dir)}


def child_copy(url: str, batch_id: str) -> dict[str, Any]:
    """PostgreSQL's own export of the joining query, read and discarded: the practical limit."""
    import psycopg

    rows = nbytes = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY ({JOINING_QUERY.format(batch_id=batch_id)}) TO STDOUT") as copy:
            for data in copy:
                nbytes += len(data)
                rows += bytes(data).count(b"\n")
    return {"rows": rows, "bytes": nbytes}


def child_get_df(batch_id: str, out_dir: str) -> dict[str, Any]:
    """What a user would write instead: the provider's PostgresHook, one DataFrame, one Parquet file."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    df = PostgresHook(postgres_conn_id="bench_pg").get_df(JOINING_QUERY.format(batch_id=batch_id))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "batch.parquet")
    df.to_parquet(path)
    return {"rows": len(df), "bytes": os.path.getsize(path)}


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ---------------------------------------------------------------------------------- benchmark

_PRELOAD = {
    "operator": ["clickstream.operators.extract", "clickstream.dataset", "clickstream.hooks", "pyarrow.parquet"],
    "copy": ["psycopg"],
    "get_df": ["airflow.providers.postgres.hooks.postgres", "pandas", "pyarrow.parquet", "sqlalchemy"],
}


def _variant(ctx: Context, name: str, batch_id: str, tag: str) -> tuple[dict[str, Any], dict[str, float]]:
    out_dir = str(ctx.workdir / f"extract-{name}-{tag}")
    shutil.rmtree(out_dir, ignore_errors=True)
    env = ctx.airflow_env()
    if name == "before":  # another checkout's operator, the bench's own modules kept
        env["PYTHONPATH"] = os.pathsep.join([os.environ["BENCH_EXTRACT_BEFORE"], str(Path(__file__).parent.parent)])
        name = "operator"
    try:
        if name == "operator":
            return run_child(
                "bench.bench_extract:child_operator",
                env=env,
                preload=_PRELOAD[name],
                batch_id=batch_id,
                out_dir=out_dir,
            )
        if name == "copy":
            return run_child(
                "bench.bench_extract:child_copy",
                env=env,
                preload=_PRELOAD[name],
                url=env["AIRFLOW_CONN_BENCH_PG"],
                batch_id=batch_id,
            )
        return run_child(
            "bench.bench_extract:child_get_df", env=env, preload=_PRELOAD[name], batch_id=batch_id, out_dir=out_dir
        )
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # never keep generated data


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run(ctx: Context) -> list[Table]:
    big, mid = ctx.batch("big"), ctx.batch("mid")
    small_peaks: dict[str, float] = {}
    small_walls: dict[str, float] = {}
    for v in ("get_df", "operator"):  # the smaller batch first: it tells whether get_df fits in memory
        _, mem = _variant(ctx, v, mid.batch_id, "mid")
        small_peaks[v], small_walls[v] = mem["peak_rss"], mem["wall"]
        log(f"extract {v} on mid batch: {mem['wall']:.1f} s, peak {mib(mem['peak_rss']):.0f} MiB")
    per_session = (small_peaks["get_df"] - 250 * 2**20) / mid.sessions
    get_df_needs = 250 * 2**20 + per_session * big.sessions
    variants: tuple[str, ...] = ("copy", "get_df", "operator")
    skipped_get_df = get_df_needs > 0.6 * _mem_available()
    if skipped_get_df:
        variants = ("copy", "operator")
        log(f"extract: get_df would need about {get_df_needs / 2**30:.1f} GiB here; not run on the big batch")
    if os.environ.get("BENCH_EXTRACT_BEFORE"):
        variants = (*variants, "before")
    walls: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, list[float]] = {v: [] for v in variants}
    starts: dict[str, list[float]] = {v: [] for v in variants}
    outs: dict[str, dict[str, Any]] = {}
    for i in range(ctx.repeat):
        for v in variants:
            out, mem = _variant(ctx, v, big.batch_id, "big")
            walls[v].append(mem["wall"])
            peaks[v].append(mem["peak_rss"])
            starts[v].append(mem["start_rss"])
            outs[v] = out
            log(f"extract {v} #{i + 1}: {mem['wall']:.1f} s, peak {mib(mem['peak_rss']):.0f} MiB")

    op = outs["operator"]
    assert op["sessions"] == big.sessions and op["events"] == big.events, (op, big)
    t = Table(
        f"2. Extraction of a released {big.sessions:,}-session batch ({big.events:,} events) to Parquet",
        [
            "variant",
            "median s",
            "sessions/s",
            "events/s",
            "peak RSS MiB",
            "RSS before MiB",
            f"peak RSS MiB, {mid.sessions:,}-session batch",
            "operator throughput vs this",
            "operator peak vs this",
        ],
    )
    op_wall, op_peak = median(walls["operator"]), median(peaks["operator"])
    labels = {
        "copy": "(a) COPY (joining query) TO STDOUT, discarded",
        "get_df": "(b) PostgresHook.get_df + to_parquet",
        "operator": "ExtractBatchOperator (Parquet, two tables)",
    }
    op_rate = big.sessions / op_wall
    labels["before"] = f"ExtractBatchOperator of BENCH_EXTRACT_BEFORE ({os.environ.get('BENCH_EXTRACT_BEFORE')})"
    for v in ("copy", "get_df", "operator", "before"):
        if v not in walls and not (v == "get_df" and skipped_get_df):
            continue
        if v == "get_df" and skipped_get_df:
            rate = mid.sessions / small_walls["get_df"]  # its best case: the smaller batch's rate
            t.add(
                labels[v] + f" (not run: needs ~{get_df_needs / 2**30:.0f} GiB; rate and peak of the "
                f"{mid.sessions:,}-session run)",
                "-",
                rate,
                "-",
                f">= {get_df_needs / 2**20:,.0f} (est.)",
                "-",
                mib(small_peaks[v]),
                ratio_cell(op_rate / rate, ">=1"),
                ratio_cell(op_peak / get_df_needs, "<=0.2"),
            )
            continue
        w, p = median(walls[v]), median(peaks[v])
        if v == "copy":
            vs_tp, vs_mem = ratio_cell(w / op_wall, ">=0.8"), "-"
        elif v == "get_df":
            vs_tp, vs_mem = ratio_cell(w / op_wall, ">=1"), ratio_cell(op_peak / p, "<=0.2")
        elif v == "before":
            vs_tp, vs_mem = f"{w / op_wall:.2f}x", f"{op_peak / p:.2f}x"
        else:
            vs_tp, vs_mem = "1.00x", "1.00x"
        t.add(
            labels[v],
            w,
            big.sessions / w,
            big.events / w,
            mib(p),
            mib(median(starts[v])),
            mib(small_peaks[v]) if v in small_peaks else "-",
            vs_tp,
            vs_mem,
        )
    growth = op_peak / small_peaks["operator"]
    get_df_big = get_df_needs if skipped_get_df else median(peaks["get_df"])
    t.notes += [
        f"rows: COPY {outs['copy']['rows']:,} joined rows ({outs['copy']['bytes'] / 2**20:.0f} MiB of text); "
        + (
            f"get_df {outs['get_df']['rows']:,} rows, {outs['get_df']['bytes'] / 2**20:.0f} MiB Parquet; "
            if not skipped_get_df
            else ""
        )
        + f"operator {op['sessions']:,} session rows + {op['events']:,} event rows, "
        f"{op['bytes'] / 2**20:.0f} MiB Parquet",
        f"operator peak memory, {mid.sessions:,} -> {big.sessions:,} sessions: "
        f"{mib(small_peaks['operator']):.0f} -> {mib(op_peak):.0f} MiB ({growth:.2f}x for "
        f"{big.sessions / mid.sessions:.0f}x the data); get_df: {mib(small_peaks['get_df']):.0f} -> "
        f"{mib(get_df_big):,.0f} MiB{' (estimated)' if skipped_get_df else ''}",
        f"each variant in a fresh interpreter, modules preloaded before the clock starts; medians of "
        f"{ctx.repeat}; peak RSS = the child's VmHWM (includes the interpreter and its imports: "
        f"'RSS before')",
    ]
    return [t]


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "extract"]))
