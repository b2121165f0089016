"""What the session store costs PostgreSQL per session: table and index size, and WAL, by write path.

    .venv/bin/python -m bench.bench_storage                      # 200,000 sessions, about 3 min
    .venv/bin/python -m bench.bench_storage --sessions 50000

Three ways to write the same synthetic sessions (about 5 events each, ``harness.synthetic_sessions``), each
into its own fresh database of one throwaway PostgreSQL 15 whose WAL settings are a production server's
(``wal_level=replica``, ``full_page_writes=on``; ``fsync`` stays off, which changes no WAL volume):

* **COPY** (baseline): ``harness.seed_batch``, the rows the store writes, loaded with ``COPY``;
* **bulk**: ``SessionStore.ingest_bulk`` in requests of at most ``max_bulk_items`` items, what
  ``POST /clickstream/bulk`` runs;
* **live**: ``register_session`` then ``push_events`` per session, what single-item REST calls run, on a tenth
  of the sessions (it is the slow path).

For each: WAL written (``pg_current_wal_lsn`` before and after, a ``CHECKPOINT`` first, so each variant pays
its full-page images as a server does after each checkpoint), then the size of ``cs_session`` and ``cs_event``
(heap with TOAST, and indexes) with nothing vacuumed, per session and extrapolated to a million sessions
(sizes grow linearly with rows: run it at two scales to see it). Ratios are to the COPY baseline of the same run.
Prints Markdown tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterable
from typing import Any

from bench.harness import (
    BENCH_PG_SETTINGS,
    TEST_SETTINGS,
    Table,
    libpq_url,
    log,
    machine,
    one_row,
    pg_version,
    seed_batch,
    synthetic_sessions,
)
from tests.support.pgcluster import ThrowawayPostgres

#: A production server's WAL volume: replica-level WAL with full-page images after each checkpoint.
WAL_SETTINGS = {"wal_level": "replica", "full_page_writes": "on", "max_wal_senders": "10"}
TABLES = ("cs_session", "cs_event")


def _lsn(url: str) -> int:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        return int(one_row(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))[0])


def _checkpoint(url: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _sizes(url: str) -> dict[str, tuple[int, int]]:
    """Per table: (heap + TOAST bytes, index bytes)."""
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        return {
            t: one_row(conn.execute("SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass)", (t, t)))
            for t in TABLES
        }


def _counts(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        s = one_row(conn.execute("SELECT count(*) FROM cs_session"))[0]
        e = one_row(conn.execute("SELECT count(*) FROM cs_event"))[0]
    return int(s), int(e)


def _copy(url: str, pairs: Iterable[tuple[dict, list[dict]]]) -> None:
    seed_batch(url, pairs, label="COPY")


def _bulk(url: str, pairs: Iterable[tuple[dict, list[dict]]]) -> None:
    from clickstream.store import SessionStore

    store = SessionStore.from_url(url)
    store.migrate()
    sessions: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    limit = store.config.max_bulk_items

    def flush() -> None:
        result = store.ingest_bulk(sessions, events)
        if result.rejected:
            raise RuntimeError(f"bulk rejected {result.rejected[:3]}")
        sessions.clear()
        events.clear()

    for session, evs in pairs:
        if len(sessions) + len(events) + 1 + len(evs) > limit:
            flush()
        sessions.append(session)
        events.extend({**e, "session_id": session["session_id"]} for e in evs)
    flush()
    store.dispose()


def _live(url: str, pairs: Iterable[tuple[dict, list[dict]]]) -> None:
    from clickstream.store import SessionStore

    store = SessionStore.from_url(url)
    store.migrate()
    for session, evs in pairs:
        store.register_session(session)
        if evs:
            store.push_events(session["session_id"], evs)
    store.dispose()


def measure(pg: ThrowawayPostgres, name: str, write: Any, n: int) -> dict[str, Any]:
    from clickstream.store import SessionStore

    url = pg.create_database(f"storage_{name}")
    store = SessionStore.from_url(url)
    store.migrate()  # the empty schema's WAL is not the sessions'
    store.dispose()
    start_ms = int(time.time() * 1000) - 2 * 3600 * 1000
    pairs = list(itertools.islice(synthetic_sessions(n, seed=7, start_ms=start_ms, id_prefix=f"st{name}"), n))
    _checkpoint(pg.url)
    wal0, t0 = _lsn(pg.url), time.perf_counter()
    write(url, pairs)
    elapsed, wal = time.perf_counter() - t0, _lsn(pg.url) - wal0
    sessions, events = _counts(url)
    sizes = _sizes(url)
    log(f"  {name}: {sessions:,} sessions, {events:,} events in {elapsed:.1f} s, WAL {wal / 2**20:.0f} MiB")
    return {"name": name, "sessions": sessions, "events": events, "seconds": elapsed, "wal": wal, "sizes": sizes}


def run(n_sessions: int) -> list[Table]:
    settings = {**TEST_SETTINGS, **BENCH_PG_SETTINGS, **WAL_SETTINGS}
    with ThrowawayPostgres(settings=settings) as pg:
        log(f"PostgreSQL {pg_version(pg.url)}; {n_sessions:,} sessions (live: {max(2000, n_sessions // 10):,})")
        results = [
            measure(pg, "copy", _copy, n_sessions),
            measure(pg, "bulk", _bulk, n_sessions),
            measure(pg, "live", _live, min(n_sessions, max(2000, n_sessions // 10))),
        ]
    base = results[0]
    labels = {
        "copy": "COPY (baseline)",
        "bulk": "ingest_bulk (POST /bulk)",
        "live": "register + push (single items)",
    }

    def per_session(r: dict[str, Any], key: str) -> float:
        return r[key] / r["sessions"]

    wal = Table(
        f"Storage a. WAL written per session ({n_sessions:,} sessions, about 5 events each)",
        [
            "write path",
            "sessions",
            "events",
            "s",
            "sessions/s",
            "WAL MiB",
            "WAL bytes/session",
            "WAL GiB per 1M",
            "vs COPY",
        ],
    )
    for r in results:
        wal.add(
            labels[r["name"]],
            r["sessions"],
            r["events"],
            r["seconds"],
            r["sessions"] / r["seconds"],
            r["wal"] / 2**20,
            per_session(r, "wal"),
            per_session(r, "wal") * 1e6 / 2**30,
            f"{per_session(r, 'wal') / per_session(base, 'wal'):.2f}x",
        )
    wal.notes.append("wal_level=replica, full_page_writes=on, a CHECKPOINT before each variant; one database each")
    size = Table(
        "Storage b. Table and index size per session, nothing vacuumed",
        [
            "write path",
            "cs_session heap+TOAST B/session",
            "cs_session indexes B/session",
            "cs_event heap B/event",
            "cs_event indexes B/event",
            "total B/session",
            "GiB per 1M sessions",
            "vs COPY",
        ],
    )
    for r in results:
        (sh, si), (eh, ei) = r["sizes"]["cs_session"], r["sizes"]["cs_event"]
        total = (sh + si + eh + ei) / r["sessions"]
        base_total = sum(a + b for a, b in base["sizes"].values()) / base["sessions"]
        size.add(
            labels[r["name"]],
            sh / r["sessions"],
            si / r["sessions"],
            eh / max(r["events"], 1),
            ei / max(r["events"], 1),
            total,
            total * 1e6 / 2**30,
            f"{total / base_total:.2f}x",
        )
    size.notes.append(
        "per 1M = bytes per session x 1,000,000 (measured at the scale above, not at 1M); "
        f"{base['events'] / base['sessions']:.2f} events per session"
    )
    return [wal, size]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_storage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200_000, help="sessions per write path (default 200,000)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"## Storage, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n- machine: {machine()}\n")
    for table in run(args.sessions):
        print(table.render(), flush=True)
    print(f"_total {time.monotonic() - started:.0f} s_")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
