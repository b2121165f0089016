"""3. Ingestion.

(a) Live: session registration with its events through the hook (``register_session`` then
    ``push_events``, as a search client's calls arrive), with 1 and 8 concurrent writer processes, against
    plain INSERTs of the same rows into the same tables by the same number of writers (one transaction per
    session: INSERT the session with a fixed batch_id, INSERT its events; no batch assignment, no
    validation, no content hash computed: precomputed). Target: >= 0.5x.
(b) Bulk: import of history files (JSON Lines, and the same rows as Parquet; sessions with their events)
    with ``import_history`` against ``COPY ... FROM STDIN`` of the same rows from files already in COPY
    format. Target: >= 0.5x. Peak memory of the JSON Lines import at 1x and 5x the rows: flat.

Every variant writes into its own fresh database on the same server. Writers are separate processes
started before the clock and released together (a file barrier); the time is from release to the last
writer's end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.harness import (
    Context,
    Table,
    libpq_url,
    log,
    median,
    one_row,
    ratio_cell,
    recorded_cell,
    run_child,
    synthetic_sessions,
)
from clickstream.store.rows import EVENT_COLUMNS, SESSION_COLUMNS

#: The columns of the baselines' rows: the store's (:data:`clickstream.store.rows.SESSION_COLUMNS`, with the
#: batch and the time of registration; :data:`~clickstream.store.rows.EVENT_COLUMNS` with the session and the
#: time of receipt).
BASELINE_SESSION_COLS = ("session_id", "batch_id", *SESSION_COLUMNS[1:], "registered_at")
BASELINE_EVENT_COLS = ("session_id", *EVENT_COLUMNS, "received_at")
_INSERT_SESSION = (
    f"INSERT INTO cs_session ({', '.join(BASELINE_SESSION_COLS)}) "
    f"VALUES ({', '.join(['%s'] * len(BASELINE_SESSION_COLS))})"
)
_INSERT_EVENT = (
    f"INSERT INTO cs_event ({', '.join(BASELINE_EVENT_COLS)}) VALUES ({', '.join(['%s'] * len(BASELINE_EVENT_COLS))})"
)


def _my_share(n: int, seed: int, writer: int, writers: int, start_ms: int) -> list[tuple[dict, list[dict]]]:
    return [
        p
        for i, p in enumerate(synthetic_sessions(n, seed=seed, start_ms=start_ms, id_prefix=f"w{seed}"))
        if i % writers == writer
    ]


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) a PostgreSQL backend has used: its /proc entry (the server runs on this
    machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _barrier(barrier: str, writer: int) -> None:
    Path(barrier, f"ready-{writer}").touch()
    go = Path(barrier, "go")
    while not go.exists():
        time.sleep(0.005)


# ---------------------------------------------------------------------------- child functions


def baseline_session_row(s: dict[str, Any], batch_id: str, content_hash: str, now: int) -> tuple[Any, ...]:
    """A session's row as the store writes it (``BASELINE_SESSION_COLS``), for baselines that write it themselves."""
    dumps = json.dumps
    return (
        s["session_id"],
        batch_id,
        s["search_query"],
        dumps(s["search_results"]),
        dumps(s["search_meta"]),
        dumps(s["payload_filter"]),
        dumps(s["sort_by"]) if s["sort_by"] else None,
        s["user_id"],
        s["created_at"],
        s["is_irrelevant"],
        s["is_payload_search"],
        content_hash,
        now,
    )


def baseline_event_row(session_id: str, e: dict[str, Any], now: int) -> tuple[Any, ...]:
    """An event's row as the store writes it (``BASELINE_EVENT_COLS``), for baselines that write it themselves."""
    meta = json.dumps(e["meta"]) if e["meta"] is not None else None
    return (session_id, e["event_id"], e["object_id"], e["event_type"], e["created_at"], meta, now)


def insert_session_plainly(
    conn: Any, s: dict[str, Any], evs: list[dict[str, Any]], content_hash: str, batch_id: str, now: int
) -> int:
    """The plain-INSERT baseline for one session: its row and its events' rows (as the store writes them),
    in one transaction of a psycopg connection; returns the events inserted."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_INSERT_SESSION, baseline_session_row(s, batch_id, content_hash, now))
        if evs:
            cur.executemany(_INSERT_EVENT, [baseline_event_row(s["session_id"], e, now) for e in evs])
    return len(evs)


def child_hook_writer(n: int, seed: int, writer: int, writers: int, start_ms: int, barrier: str) -> dict[str, Any]:
    from clickstream.hooks import ClickstreamHook

    pairs = _my_share(n, seed, writer, writers, start_ms)
    hook = ClickstreamHook()
    hook.list_batches(limit=1)  # connect before the clock
    with hook.store.engine.connect() as conn:  # the pool's one connection (one thread): its server backend
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    _barrier(barrier, writer)
    t0, cpu0, server0 = time.time(), time.process_time(), _backend_cpu(pid)
    events = 0
    for session, evs in pairs:
        hook.register_session(session)
        if evs:
            events += hook.push_events(session["session_id"], evs).stored
    t1, cpu1, server1 = time.time(), time.process_time(), _backend_cpu(pid)
    hook.close()
    return {
        "start": t0,
        "end": t1,
        "sessions": len(pairs),
        "events": events,
        "cpu": cpu1 - cpu0,
        "server_cpu": server1 - server0,
    }


def child_insert_writer(
    url: str, batch_id: str, n: int, seed: int, writer: int, writers: int, start_ms: int, barrier: str
) -> dict[str, Any]:
    import psycopg

    from clickstream import models
    from clickstream.store.rows import content_hash

    pairs = _my_share(n, seed, writer, writers, start_ms)
    hashes = [content_hash(models.SessionIn.model_validate(s)) for s, _ in pairs]  # given, not timed
    with psycopg.connect(url) as conn:
        pid = one_row(conn.execute("SELECT pg_backend_pid()"))[0]
        conn.commit()
        _barrier(barrier, writer)
        t0, cpu0, server0 = time.time(), time.process_time(), _backend_cpu(pid)
        events = 0
        for (s, evs), h in zip(pairs, hashes, strict=True):
            now = int(time.time() * 1000)
            events += insert_session_plainly(conn, s, evs, h, batch_id, now)
        t1, cpu1, server1 = time.time(), time.process_time(), _backend_cpu(pid)
    return {
        "start": t0,
        "end": t1,
        "sessions": len(pairs),
        "events": events,
        "cpu": cpu1 - cpu0,
        "server_cpu": server1 - server0,
    }


def child_import(path: str, fmt: str = "jsonl") -> dict[str, Any]:
    import logging

    from clickstream.hooks import ClickstreamHook

    open_s: list[float] = []

    class _Transaction(logging.Handler):  # how long the load transaction (and its batch lock) was open
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "transaction_s"):
                open_s.append(record.transaction_s)

    logger = logging.getLogger("clickstream.store.history_load")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Transaction())
    with ClickstreamHook() as hook:
        report = hook.import_history(path, fmt)
    assert report.loaded, report
    return {
        "sessions": report.loaded_sessions,
        "events": report.loaded_events,
        "rows": report.rows,
        "transaction_s": open_s[0],
    }


def child_copy_from(url: str, sessions_file: str, events_file: str) -> dict[str, Any]:
    import psycopg

    cols_s = ", ".join(BASELINE_SESSION_COLS)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for table, cols, path in (
            ("cs_session", cols_s, sessions_file),
            ("cs_event", ", ".join(BASELINE_EVENT_COLS), events_file),
        ):
            with open(path, "rb") as f, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                while data := f.read(1 << 20):
                    copy.write(data)
        conn.commit()
        sessions = one_row(cur.execute("SELECT count(*) FROM cs_session"))[0]
        events = one_row(cur.execute("SELECT count(*) FROM cs_event"))[0]
    return {"sessions": sessions, "events": events}


# ---------------------------------------------------------------------------------- benchmark


def fresh_db(ctx: Context, name: str, *, with_batch: bool = False) -> tuple[str, str | None]:
    from clickstream.store import SessionStore
    from clickstream.store import rows as store_mod

    ctx.pg.drop_database(name)
    url = ctx.pg.create_database(name)
    store = SessionStore.from_url(url)
    store.migrate()
    batch_id = None
    if with_batch:
        with store.engine.begin() as conn:
            now = store.clock()
            batch_id = conn.execute(
                store.db.clause("insert_collecting_batch"), {"batch_id": store_mod.new_batch_id(now), "now": now}
            ).scalar()
    store.dispose()
    return url, batch_id


def _writers(ctx: Context, kind: str, writers: int, n: int, seed: int, tag: str) -> dict[str, float]:
    url, batch_id = fresh_db(ctx, f"ingest_{kind}_{writers}_{tag}", with_batch=(kind == "insert"))
    env = ctx.airflow_env(url)
    if kind == "before":  # the hook of another checkout's code (BENCH_BEFORE_PLUGINS), the bench's own modules kept
        env["PYTHONPATH"] = os.pathsep.join([os.environ["BENCH_BEFORE_PLUGINS"], str(Path(__file__).parent.parent)])
    barrier = ctx.workdir / f"barrier-{kind}-{writers}-{tag}"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir()
    start_ms = int(time.time() * 1000) - 2 * 3600 * 1000
    common: dict[str, Any] = {"n": n, "seed": seed, "writers": writers, "start_ms": start_ms, "barrier": str(barrier)}
    extra: dict[str, Any]
    if kind in ("hook", "before"):
        func, extra, preload = "bench.bench_ingest:child_hook_writer", {}, ["clickstream.hooks", "clickstream.store"]
    else:
        func, extra, preload = (
            "bench.bench_ingest:child_insert_writer",
            {"url": libpq_url(url), "batch_id": batch_id},
            ["psycopg", "clickstream.store"],
        )
    with ThreadPoolExecutor(writers) as pool:
        futures = [
            pool.submit(run_child, func, env=env, preload=preload, writer=w, **common, **extra) for w in range(writers)
        ]
        deadline = time.monotonic() + 300
        while len(list(barrier.glob("ready-*"))) < writers:
            if any(f.done() for f in futures) or time.monotonic() > deadline:
                for f in futures:
                    if f.done():
                        f.result()  # raises the child's error
                raise RuntimeError("ingestion writers did not get ready")
            time.sleep(0.02)
        (barrier / "go").touch()
        results = [f.result()[0] for f in futures]
    shutil.rmtree(barrier, ignore_errors=True)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    sessions = sum(r["sessions"] for r in results)
    events = sum(r["events"] for r in results)
    ctx.pg.drop_database(f"ingest_{kind}_{writers}_{tag}")
    return {
        "wall": wall,
        "sessions": sessions,
        "events": events,
        # CPU per session, the writers' (client) and their backends' (server): steadier than wall time on a
        # loaded machine
        "cpu_ms": 1000 * sum(r["cpu"] for r in results) / sessions,
        "server_cpu_ms": 1000 * sum(r["server_cpu"] for r in results) / sessions,
    }


def _write_parquet(jsonl: Path, folder: Path, rows_per_group: int = 10_000) -> None:
    """The JSON Lines history as Parquet, as docs/import-and-erasure.md recommends: scalar columns typed,
    the object columns (``search_results``, ``search_meta``, ``payload_filter``, ``sort_by``, ``events``) as
    strings holding JSON; written in row groups, so neither side holds the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    objects = ("search_results", "search_meta", "payload_filter", "sort_by", "events")
    schema = pa.schema(
        [
            ("session_id", pa.string()),
            ("search_query", pa.string()),
            *((name, pa.string()) for name in objects),
            ("user_id", pa.string()),
            ("created_at", pa.int64()),
            ("is_irrelevant", pa.bool_()),
            ("is_payload_search", pa.bool_()),
        ]
    )
    folder.mkdir()
    with open(jsonl) as f, pq.ParquetWriter(folder / "sessions.parquet", schema) as writer:
        group: list[dict[str, Any]] = []
        for line in f:
            row = json.loads(line)
            group.append({k: (json.dumps(v) if k in objects and v is not None else v) for k, v in row.items()})
            if len(group) == rows_per_group:
                writer.write_table(pa.Table.from_pylist(group, schema))
                group = []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema))


def _write_history(ctx: Context, n: int, seed: int) -> tuple[Path, Path, Path, int]:
    """The same sessions as a JSON Lines history file, and as COPY text files of the rows the store writes."""
    from clickstream import models
    from clickstream.store.rows import event_row, session_row

    folder = ctx.workdir / "history"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    jsonl = folder / "sessions.jsonl"
    s_copy, e_copy = ctx.workdir / "sessions.copy", ctx.workdir / "events.copy"
    start_ms = int(time.time() * 1000) - 30 * 24 * 3600 * 1000  # history: a month ago
    now = int(time.time() * 1000)
    events = 0
    with open(jsonl, "w") as fj, open(s_copy, "w") as fs, open(e_copy, "w") as fe:
        for session, evs in synthetic_sessions(n, seed=seed, start_ms=start_ms, id_prefix=f"h{seed}"):
            fj.write(json.dumps({**session, "events": evs}, ensure_ascii=False) + "\n")
            row = session_row(models.SessionIn.model_validate(session))
            fs.write(_copy_line((row[0], "BATCH", *row[1:], now)))
            for e in evs:
                fe.write(_copy_line((row[0], *event_row(models.EventIn.model_validate(e)), now)))
                events += 1
    return folder, s_copy, e_copy, events


def _copy_line(values: tuple) -> str:
    def field(v: Any) -> str:
        if v is None:
            return "\\N"
        if isinstance(v, bool):
            return "t" if v else "f"
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    return "\t".join(field(v) for v in values) + "\n"


def run(ctx: Context) -> list[Table]:
    """3a (live ingestion), then 3b (the history import)."""
    return run_live(ctx) + run_import(ctx)


def run_live(ctx: Context) -> list[Table]:
    """3a. Live ingestion: the hook against plain INSERTs, with 1 and 8 writers; the ratio against the last
    recorded one (the regression guard). With ``BENCH_BEFORE_PLUGINS=<a checkout>/plugins`` in the environment,
    the hook of that code runs too (``hook, before``), interleaved: a change's before and after in one run."""
    n_live = max(2000, min(ctx.sessions // 20, 10_000))
    before = os.environ.get("BENCH_BEFORE_PLUGINS")
    kinds = ("insert", "hook", "before") if before else ("insert", "hook")
    labels = {
        "insert": "plain INSERTs (psycopg, fixed batch_id)",
        "hook": "ClickstreamHook",
        "before": f"ClickstreamHook, before ({before})",
    }
    tables = []

    t = Table(
        f"3a. Live ingestion: {n_live:,} sessions (about {n_live * 5:,} events), register + push per session",
        [
            "writers",
            "variant",
            "median s",
            "sessions/s",
            "events/s",
            "client CPU ms/session",
            "server CPU ms/session",
            "hook vs INSERT",
            "vs recorded ratio",
        ],
    )
    for writers in (1, 8):
        walls: dict[str, list[float]] = {k: [] for k in kinds}
        cpus: dict[str, list[float]] = {k: [] for k in kinds}
        server_cpus: dict[str, list[float]] = {k: [] for k in kinds}
        counts: dict[str, dict[str, float]] = {}
        for i in range(ctx.repeat):
            for kind in kinds:
                res = _writers(ctx, kind, writers, n_live, seed=100 + i, tag=str(i))
                walls[kind].append(res["wall"])
                cpus[kind].append(res["cpu_ms"])
                server_cpus[kind].append(res["server_cpu_ms"])
                counts[kind] = res
                log(
                    f"ingest {kind} x{writers} #{i + 1}: {res['wall']:.1f} s ({res['sessions'] / res['wall']:,.0f} "
                    f"sessions/s; CPU ms/session: client {res['cpu_ms']:.2f}, server {res['server_cpu_ms']:.2f})"
                )
        for kind in kinds:
            w = median(walls[kind])
            ratio = median(walls["insert"]) / w
            cell = ratio_cell(ratio, ">=0.8") if kind != "insert" else "-"
            key = f"ingest live, {writers} writer(s): hook vs INSERT"
            guard = recorded_cell(ctx, key, ratio) if kind == "hook" else "-"
            t.add(
                writers,
                labels[kind],
                w,
                counts[kind]["sessions"] / w,
                counts[kind]["events"] / w,
                median(cpus[kind]),
                median(server_cpus[kind]),
                cell,
                guard,
            )
    t.notes.append("one process per writer, each with its own connection; sessions dealt round-robin")
    t.notes.append(
        "CPU ms/session: the writers' process time (client) and their PostgreSQL backends' (server, from /proc), "
        "per session, median of the repetitions; steadier than wall time on a loaded machine"
    )
    t.notes.append(
        "vs recorded ratio: this run's hook/INSERT ratio as a share of the last recorded one (bench/recorded.json, "
        "written by --record); below 0.8 of it is REGRESSED"
    )
    tables.append(t)
    return tables


def run_import(ctx: Context) -> list[Table]:
    """3b. The history import (JSON Lines, Parquet) against COPY FROM of the same rows; memory at 1x and 5x."""
    tables = []
    n_hist = max(5000, ctx.sessions // 4)
    folder, s_copy, e_copy, n_events = _write_history(ctx, n_hist, seed=7)
    parquet = ctx.workdir / "history-parquet"
    shutil.rmtree(parquet, ignore_errors=True)
    _write_parquet(folder / "sessions.jsonl", parquet)
    kinds = ("copy", "jsonl", "parquet")
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    peaks: dict[str, list[float]] = {k: [] for k in kinds}
    transactions: dict[str, list[float]] = {k: [] for k in kinds}
    sizes = {
        "jsonl": sum(p.stat().st_size for p in folder.iterdir()),
        "parquet": sum(p.stat().st_size for p in parquet.iterdir()),
        "copy": s_copy.stat().st_size + e_copy.stat().st_size,
    }

    def import_child(url: str, path: Path, fmt: str) -> tuple[dict[str, Any], dict[str, float]]:
        return run_child(
            "bench.bench_ingest:child_import",
            env=ctx.airflow_env(url),
            preload=["clickstream.hooks", "clickstream.history", "airflow.sdk"],
            path=str(path),
            fmt=fmt,
        )

    for i in range(ctx.repeat):
        for kind in kinds:
            db = f"bulk_{kind}_{i}"
            url, batch_id = fresh_db(ctx, db, with_batch=(kind == "copy"))
            if kind == "copy":
                # the COPY files carry the batch id of this database's collecting batch
                fixed = ctx.workdir / "sessions.fixed.copy"
                fixed.write_text(s_copy.read_text().replace("\tBATCH\t", f"\t{batch_id}\t"))
                out, mem = run_child(
                    "bench.bench_ingest:child_copy_from",
                    env=ctx.airflow_env(url),
                    preload=["psycopg"],
                    url=libpq_url(url),
                    sessions_file=str(fixed),
                    events_file=str(e_copy),
                )
                fixed.unlink()
            else:
                out, mem = import_child(url, folder if kind == "jsonl" else parquet, kind)
            assert (out["sessions"], out["events"]) == (n_hist, n_events), out
            walls[kind].append(mem["wall"])
            peaks[kind].append(mem["peak_rss"] / 2**20)
            # COPY: one transaction for the whole load
            transactions[kind].append(out.get("transaction_s", mem["wall"]))
            log(
                f"bulk {kind} #{i + 1}: {mem['wall']:.1f} s, peak RSS {mem['peak_rss'] / 2**20:.0f} MiB, "
                f"load transaction open {transactions[kind][-1]:.1f} s"
            )
            ctx.pg.drop_database(db)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(parquet, ignore_errors=True)
    s_copy.unlink()
    e_copy.unlink()

    # memory as the file grows: the same import on 5x the rows (once)
    folder5, s5, e5, n_events5 = _write_history(ctx, 5 * n_hist, seed=8)
    s5.unlink()
    e5.unlink()
    url, _ = fresh_db(ctx, "bulk_jsonl_5x")
    out5, mem5 = import_child(url, folder5, "jsonl")
    assert (out5["sessions"], out5["events"]) == (5 * n_hist, n_events5), out5
    ctx.pg.drop_database("bulk_jsonl_5x")
    shutil.rmtree(folder5, ignore_errors=True)
    peak5 = mem5["peak_rss"] / 2**20
    log(f"bulk jsonl 5x: {mem5['wall']:.1f} s, peak RSS {peak5:.0f} MiB")

    t2 = Table(
        f"3b. Bulk import of history: {n_hist:,} sessions with {n_events:,} events",
        [
            "variant",
            "median s",
            "sessions/s",
            "events/s",
            "input MiB",
            "peak RSS MiB",
            "load transaction s",
            "import vs COPY",
        ],
    )
    wc = median(walls["copy"])
    t2.add(
        "COPY cs_session, cs_event FROM STDIN (COPY text files)",
        wc,
        n_hist / wc,
        n_events / wc,
        sizes["copy"] / 2**20,
        median(peaks["copy"]),
        median(transactions["copy"]),
        "-",
    )
    for kind, label in (("jsonl", "JSON Lines"), ("parquet", "Parquet, objects as JSON strings")):
        w = median(walls[kind])
        t2.add(
            f"ClickstreamHook.import_history ({label})",
            w,
            n_hist / w,
            n_events / w,
            sizes[kind] / 2**20,
            median(peaks[kind]),
            median(transactions[kind]),
            ratio_cell(wc / w, ">=0.5"),
        )
    t2.add(
        f"ClickstreamHook.import_history (JSON Lines, 5x: {5 * n_hist:,} sessions, once)",
        mem5["wall"],
        5 * n_hist / mem5["wall"],
        n_events5 / mem5["wall"],
        "-",
        peak5,
        out5["transaction_s"],
        f"peak {peak5 / median(peaks['jsonl']):.2f}x of 1x (flat)",
    )
    t2.notes.append(
        "into an empty store database each time; the import checks every row and loads all or nothing, in one "
        "transaction: each chunk's new rows are COPYed into the store's tables while the next chunk is read; "
        "peak RSS = the child's VmHWM (interpreter and imports included)"
    )
    t2.notes.append(
        "load transaction s: how long the load transaction (which holds the collecting batch FOR SHARE, so a "
        "release of that batch waits) was open; for COPY, the whole COPY"
    )
    tables.append(t2)
    return tables


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "ingest"]))
