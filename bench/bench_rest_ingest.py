"""6. REST ingestion through a real ``airflow api-server`` on loopback.

(a) Bulk: sessions with 3 events each, sent as ``POST /clickstream/bulk`` requests of 1,000 items (250
    sessions + their 750 events), by 4 concurrent clients, against a plain psycopg INSERT loop of the
    same rows on one connection: ``bench_ingest``'s baseline (its row shapes and its INSERT statements:
    one transaction per session, a fixed ``batch_id``, a precomputed ``content_hash``, no validation).
    Target: REST >= 1.0x the INSERT loop's sessions/s. Every answer is checked: sessions
    ``registered`` and events ``stored`` must equal what the request sent.
(b) Single items: per session ``POST /session`` then ``POST /session/events`` (its 3 events), against the
    same calls on :class:`~clickstream.hooks.ClickstreamHook` in-process (``register_session`` +
    ``push_events``), by 1 and by 4 clients. Target: REST >= 0.3x the hook.

The server is :class:`bench_rest.ApiServer` (2 workers, SimpleAuthManager, bearer token) as shipped (its
GC tuning on), its store in a database of its own on the bench's PostgreSQL. Every variant writes into
that database, each repetition with new session ids, variants alternating, so the tables grow alike for
all. Request bodies are encoded before the clock starts. The REST clients are threads with one
keep-alive ``http.client`` connection each, in a separate process: they share the 2 cores with the
server, and this client costs a quarter of httpx's CPU per request. The hook and INSERT baselines run in
their own process too (the hook with one thread and one pooled connection per client). CPU time per
session is reported for the client process and the API server's processes (PostgreSQL's is not counted
for either side). Every loop is bounded by its item count and by :data:`DEADLINE_S`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.bench_ingest import (
    BASELINE_EVENT_COLS,
    BASELINE_SESSION_COLS,
    baseline_event_row,
    baseline_session_row,
    fresh_db,
    insert_session_plainly,
)
from bench.bench_rest import ApiServer
from bench.harness import Context, Table, libpq_url, log, median, percentile, ratio_cell, run_child, synthetic_sessions

EVENTS_PER_SESSION = 3
SESSIONS_PER_REQUEST = 250  # + 750 events = 1,000 items, the server's default max_bulk_items
BULK_CLIENTS = 4
SINGLE_CLIENTS = (1, 4)
#: No measured loop runs longer than this (it then stops and reports what it did).
DEADLINE_S = 180.0


# ------------------------------------------------------------------------------------------- data


def make_pairs(n: int, seed: int, prefix: str, start_ms: int) -> list[tuple[dict, list[dict]]]:
    """``n`` synthetic sessions with exactly :data:`EVENTS_PER_SESSION` events each (ids ``<prefix>-...``)."""
    pairs = []
    for session, events in synthetic_sessions(
        n, seed=seed, start_ms=start_ms, id_prefix=prefix, events_per_session=EVENTS_PER_SESSION
    ):
        events = events[:EVENTS_PER_SESSION]
        k = 0
        while len(events) < EVENTS_PER_SESSION:  # the generator gives at least 3; pad if it ever does not
            events.append(
                {
                    "event_id": f"pad-{k}",
                    "object_id": session["search_results"][0]["object_id"] if session["search_results"] else "obj-0",
                    "event_type": "view",
                    "created_at": session["created_at"] + 100 * (k + 1),
                    "meta": None,
                }
            )
            k += 1
        pairs.append((session, events))
    return pairs


def _write_pairs(ctx: Context, name: str, pairs: list[tuple[dict, list[dict]]]) -> str:
    path = ctx.workdir / f"rest-ingest-{name}.json"
    path.write_text(json.dumps(pairs))
    return str(path)


def _load_pairs(path: str) -> list[tuple[dict, list[dict]]]:
    return [(s, e) for s, e in json.loads(Path(path).read_text())]


# ---------------------------------------------------------------------------- child functions


class _Http:
    """One keep-alive HTTP/1.1 connection (stdlib ``http.client``) to the loopback API server.

    The clients share the machine's 2 cores with the server, so they are kept light: this costs about
    0.4 ms of CPU per small request, httpx about 1.5 ms (sync) to 2.5 ms (asyncio)."""

    def __init__(self, base_url: str, token: str):
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(base_url)
        assert u.hostname in ("127.0.0.1", "localhost", "::1"), base_url  # loopback only
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.get("/clickstream/openapi.json")  # connect before the clock

    def get(self, path: str) -> tuple[int, Any]:
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        return r.status, r.read()

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        self.conn.request("POST", path, body=body, headers=self.headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if r.status == 200 else data[:500])

    def close(self) -> None:
        self.conn.close()


def _run_clients(
    clients: int, work: list[Any], one: Any, base_url: str, token: str, deadline_s: float
) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, take items of ``work`` in turn and call
    ``one(http, item)`` (it returns counts to add up); bounded by ``len(work)`` and ``deadline_s``."""
    import threading

    lock = threading.Lock()
    items = iter(work)
    latencies: list[float] = []
    totals: dict[str, int] = {}
    errors: list[BaseException] = []
    conns = [_Http(base_url, token) for _ in range(clients)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop_at = t0 + deadline_s

    def client(http: _Http) -> None:
        try:
            while time.perf_counter() <= stop_at and not errors:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                r0 = time.perf_counter()
                counts = one(http, item)
                dt = time.perf_counter() - r0
                with lock:
                    latencies.append(dt)
                    for k, v in counts.items():
                        totals[k] = totals.get(k, 0) + v
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=client, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    return {"wall": wall, "client_cpu": cpu, "latencies": latencies, **totals, "complete": len(latencies) == len(work)}


def child_bulk_http(base_url: str, token: str, path: str, clients: int, deadline_s: float) -> dict[str, Any]:
    """POST /bulk of 250 sessions + their events per request, ``clients`` connections taking requests in turn."""
    pairs = _load_pairs(path)
    bodies: list[tuple[int, int, bytes]] = []
    for i in range(0, len(pairs), SESSIONS_PER_REQUEST):
        chunk = pairs[i : i + SESSIONS_PER_REQUEST]
        body = {
            "sessions": [s for s, _ in chunk],
            "events": [{**e, "session_id": s["session_id"]} for s, evs in chunk for e in evs],
        }
        bodies.append((len(body["sessions"]), len(body["events"]), json.dumps(body).encode()))
    del pairs

    def one(http: _Http, item: tuple[int, int, bytes]) -> dict[str, int]:
        n_s, n_e, content = item
        status, res = http.post("/clickstream/bulk", content)
        if status != 200:
            raise RuntimeError(f"POST /bulk answered {status}: {res!r}")
        got = (res["sessions"]["registered"], res["events"]["stored"])
        if got != (n_s, n_e) or res["rejected"]:
            raise RuntimeError(f"POST /bulk stored {got}, sent ({n_s}, {n_e}); answer {str(res)[:500]}")
        return {"sessions": n_s, "events": n_e, "requests": 1}

    return _run_clients(clients, bodies, one, base_url, token, deadline_s)


def child_insert_loop(url: str, batch_id: str, path: str, deadline_s: float) -> dict[str, Any]:
    """``bench_ingest``'s plain-INSERT baseline on the same rows: one connection, one transaction per session."""
    import psycopg

    from clickstream import models
    from clickstream.store.rows import content_hash

    pairs = _load_pairs(path)
    hashes = [content_hash(models.SessionIn.model_validate(s)) for s, _ in pairs]  # given, not timed
    sessions = events = 0
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
        conn.commit()
        t0 = time.perf_counter()
        stop_at = t0 + deadline_s
        for (s, evs), h in zip(pairs, hashes, strict=True):
            if time.perf_counter() > stop_at:
                break
            now = int(time.time() * 1000)
            events += insert_session_plainly(conn, s, evs, h, batch_id, now)
            sessions += 1
        wall = time.perf_counter() - t0
    return {"wall": wall, "sessions": sessions, "events": events, "complete": sessions == len(pairs)}


def child_copy_loop(url: str, batch_id: str, path: str, deadline_s: float) -> dict[str, Any]:
    """The database's own bulk path on the same rows: per request's worth of sessions (250 and their events), one
    transaction of ``COPY copy_session FROM STDIN`` and ``COPY copy_event FROM STDIN`` into two plain tables (the
    store's columns, no index, no constraint), on one connection; JSON dumped inside the clock."""
    import psycopg

    session_cols, event_cols = BASELINE_SESSION_COLS, BASELINE_EVENT_COLS

    pairs = _load_pairs(path)
    sessions = events = 0
    with psycopg.connect(url) as conn:
        for table, source, cols in (
            ("copy_session", "cs_session", session_cols),
            ("copy_event", "cs_event", event_cols),
        ):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} AS SELECT {', '.join(cols)} FROM {source} WITH NO DATA")
        conn.commit()
        t0 = time.perf_counter()
        stop_at = t0 + deadline_s
        for i in range(0, len(pairs), SESSIONS_PER_REQUEST):
            if time.perf_counter() > stop_at:
                break
            chunk = pairs[i : i + SESSIONS_PER_REQUEST]
            now = int(time.time() * 1000)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY copy_session ({', '.join(session_cols)}) FROM STDIN") as copy:
                    for s, _ in chunk:
                        copy.write_row(baseline_session_row(s, batch_id, "0" * 64, now))
                with cur.copy(f"COPY copy_event ({', '.join(event_cols)}) FROM STDIN") as copy:
                    for s, evs in chunk:
                        for e in evs:
                            copy.write_row(baseline_event_row(s["session_id"], e, now))
                            events += 1
            sessions += len(chunk)
        wall = time.perf_counter() - t0
        for table in ("copy_session", "copy_event"):
            conn.execute(f"DROP TABLE {table}")
        conn.commit()
    return {"wall": wall, "sessions": sessions, "events": events, "complete": sessions == len(pairs)}


def child_single_http(base_url: str, token: str, path: str, clients: int, deadline_s: float) -> dict[str, Any]:
    """Per session: POST /session, then POST /session/events with its events; ``clients`` connections."""
    work = [
        (json.dumps(s).encode(), json.dumps({"session_id": s["session_id"], "events": evs}).encode(), len(evs))
        for s, evs in _load_pairs(path)
    ]

    def one(http: _Http, item: tuple[bytes, bytes, int]) -> dict[str, int]:
        session, push, n_e = item
        status, res = http.post("/clickstream/session", session)
        if status != 200 or res["status"] != "registered":
            raise RuntimeError(f"POST /session answered {status}: {res!r}")
        status, res = http.post("/clickstream/session/events", push)
        if status != 200 or res["stored"] != n_e:
            raise RuntimeError(f"POST /session/events answered {status}: {res!r}")
        return {"sessions": 1, "events": n_e}

    return _run_clients(clients, work, one, base_url, token, deadline_s)


def child_single_hook(path: str, clients: int, deadline_s: float) -> dict[str, Any]:
    """Per session: ``hook.register_session`` then ``hook.push_events``; ``clients`` threads, one hook."""
    import threading

    from clickstream.hooks import ClickstreamHook

    pairs = _load_pairs(path)
    hook = ClickstreamHook(engine_kwargs={"pool_size": clients})
    hook.list_batches(limit=1)  # connect before the clock
    lock = threading.Lock()
    items = iter(pairs)
    latencies: list[float] = []
    totals = {"sessions": 0, "events": 0}
    errors: list[BaseException] = []
    t0 = time.perf_counter()
    stop_at = t0 + deadline_s

    def client() -> None:
        try:
            while time.perf_counter() <= stop_at:
                with lock:
                    pair = next(items, None)
                if pair is None:
                    return
                s, evs = pair
                r0 = time.perf_counter()
                assert hook.register_session(s).status == "registered"
                stored = hook.push_events(s["session_id"], evs).stored
                assert stored == len(evs), stored
                dt = time.perf_counter() - r0
                with lock:
                    latencies.append(dt)
                    totals["sessions"] += 1
                    totals["events"] += stored
        except BaseException as err:  # reported by the parent
            errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    hook.close()
    if errors:
        raise errors[0]
    return {
        "wall": wall,
        "client_cpu": cpu,
        **totals,
        "latencies": latencies,
        "complete": totals["sessions"] == len(pairs),
    }


# ---------------------------------------------------------------------------------- benchmark


def _rate(runs: list[dict[str, Any]], key: str = "sessions") -> float:
    return median([r[key] / r["wall"] for r in runs])


def _cpu_ms(runs: list[dict[str, Any]], key: str) -> float:
    """Median CPU milliseconds per session of ``key`` (``client_cpu`` or ``server_cpu``)."""
    return median([r[key] / r["sessions"] * 1000 for r in runs if r.get(key) is not None and r["sessions"]])


def run(ctx: Context) -> list[Table]:
    n_bulk = (
        max(2000, min(ctx.sessions // 20, 10_000))
        // (SESSIONS_PER_REQUEST * BULK_CLIENTS)
        * SESSIONS_PER_REQUEST
        * BULK_CLIENTS
    )
    n_single = max(400, min(ctx.sessions // 200, 1000))
    url, batch_id = fresh_db(ctx, "rest_ingest", with_batch=True)
    env = ctx.airflow_env(url)
    start_ms = int(time.time() * 1000) - 3 * 3600 * 1000  # inside live ingestion's 24 h window
    bulk: dict[str, list[dict[str, Any]]] = {"insert": [], "rest": [], "copy": []}
    single: dict[tuple[str, int], list[dict[str, Any]]] = {}
    incomplete: list[str] = []

    def note(kind: str, out: dict[str, Any]) -> None:
        if not out.get("complete", True):
            incomplete.append(kind)

    with ApiServer(ctx, "api-ingest", url=url) as server:
        token = server.token()
        for rep in range(ctx.repeat):
            order = ("copy", "insert", "rest") if rep % 2 == 0 else ("rest", "insert", "copy")
            for kind in order:
                path = _write_pairs(
                    ctx, "bulk", make_pairs(n_bulk, seed=300 + rep, prefix=f"b{kind[0]}{rep}", start_ms=start_ms)
                )
                if kind == "rest":
                    cpu0 = server.cpu_seconds()
                    out, _ = run_child(
                        "bench.bench_rest_ingest:child_bulk_http",
                        env=env,
                        preload=["http.client"],
                        base_url=server.base_url,
                        token=token,
                        path=path,
                        clients=BULK_CLIENTS,
                        deadline_s=DEADLINE_S,
                    )
                    out["server_cpu"] = server.cpu_seconds() - cpu0
                else:
                    out, _ = run_child(
                        f"bench.bench_rest_ingest:child_{kind}_loop",
                        env=env,
                        preload=["psycopg", "clickstream.store"],
                        url=libpq_url(url),
                        batch_id=batch_id,
                        path=path,
                        deadline_s=DEADLINE_S,
                    )
                note(f"bulk {kind}", out)
                bulk[kind].append(out)
                log(f"rest-ingest bulk {kind} #{rep + 1}: {out['sessions'] / out['wall']:,.0f} sessions/s")
            for clients in SINGLE_CLIENTS:
                for kind in ("hook", "rest") if rep % 2 == 0 else ("rest", "hook"):
                    path = _write_pairs(
                        ctx,
                        "single",
                        make_pairs(n_single, seed=400 + rep, prefix=f"s{kind[0]}{clients}x{rep}", start_ms=start_ms),
                    )
                    if kind == "rest":
                        cpu0 = server.cpu_seconds()
                        out, _ = run_child(
                            "bench.bench_rest_ingest:child_single_http",
                            env=env,
                            preload=["http.client"],
                            base_url=server.base_url,
                            token=token,
                            path=path,
                            clients=clients,
                            deadline_s=DEADLINE_S,
                        )
                        out["server_cpu"] = server.cpu_seconds() - cpu0
                    else:
                        out, _ = run_child(
                            "bench.bench_rest_ingest:child_single_hook",
                            env=env,
                            preload=["clickstream.hooks", "clickstream.store"],
                            path=path,
                            clients=clients,
                            deadline_s=DEADLINE_S,
                        )
                    note(f"single {kind} x{clients}", out)
                    single.setdefault((kind, clients), []).append(out)
                    log(
                        f"rest-ingest single {kind} x{clients} #{rep + 1}: "
                        f"{out['sessions'] / out['wall']:,.0f} sessions/s"
                    )
    for p in ctx.workdir.glob("rest-ingest-*.json"):
        p.unlink()
    ctx.pg.drop_database("rest_ingest")

    t = Table(
        f"6a. REST bulk ingestion: {n_bulk:,} sessions with {EVENTS_PER_SESSION} events each, POST /bulk "
        f"of {SESSIONS_PER_REQUEST} sessions + {SESSIONS_PER_REQUEST * EVENTS_PER_SESSION} events, "
        f"{BULK_CLIENTS} clients",
        [
            "variant",
            "median s",
            "sessions/s",
            "events/s",
            "request p50 ms",
            "request p99 ms",
            "API server CPU ms/session",
            "REST vs INSERT",
            "REST vs COPY",
        ],
    )
    w_copy = median([r["wall"] for r in bulk["copy"]])
    t.add(
        "COPY FROM STDIN into two plain tables (psycopg, one connection, one transaction per 250 sessions)",
        w_copy,
        _rate(bulk["copy"]),
        _rate(bulk["copy"], "events"),
        "-",
        "-",
        "-",
        "-",
        "-",
    )
    w_ins = median([r["wall"] for r in bulk["insert"]])
    t.add(
        "plain INSERTs (psycopg, one connection, one transaction per session)",
        w_ins,
        _rate(bulk["insert"]),
        _rate(bulk["insert"], "events"),
        "-",
        "-",
        "-",
        "-",
        "-",
    )
    lat = [x for r in bulk["rest"] for x in r["latencies"]]
    t.add(
        f"REST POST /clickstream/bulk ({BULK_CLIENTS} clients, api-server {server.workers} workers)",
        median([r["wall"] for r in bulk["rest"]]),
        _rate(bulk["rest"]),
        _rate(bulk["rest"], "events"),
        percentile(lat, 50) * 1000,
        percentile(lat, 99) * 1000,
        _cpu_ms(bulk["rest"], "server_cpu"),
        ratio_cell(_rate(bulk["rest"]) / _rate(bulk["insert"]), ">=1.0"),
        ratio_cell(_rate(bulk["rest"]) / _rate(bulk["copy"]), ">=0.5"),
    )
    t.notes += [
        f"medians of {ctx.repeat} runs, alternating; every answer checked: registered and stored equal "
        "what the request sent, nothing rejected",
        "the INSERT loop is bench_ingest's baseline (fixed batch_id, precomputed content_hash, no "
        "validation); the REST rows are validated, hashed and deduplicated by the store",
        "both write into the same database (its collecting batch); request bodies are JSON-encoded "
        "before the clock starts",
    ]

    t2 = Table(
        f"6b. REST single-item writes: {n_single:,} sessions, each POST /session + POST /session/events "
        f"({EVENTS_PER_SESSION} events), vs ClickstreamHook in-process",
        [
            "clients",
            "variant",
            "median s",
            "sessions/s",
            "requests/s",
            "session p50 ms",
            "session p99 ms",
            "client CPU ms/session",
            "API server CPU ms/session",
            "REST vs hook",
        ],
    )
    for clients in SINGLE_CLIENTS:
        hook_rate = _rate(single[("hook", clients)])
        for kind in ("hook", "rest"):
            runs = single[(kind, clients)]
            lat = [x for r in runs for x in r["latencies"]]
            label = (
                "ClickstreamHook.register_session + push_events (threads)"
                if kind == "hook"
                else "REST POST /session + POST /session/events (http.client)"
            )
            t2.add(
                clients,
                label,
                median([r["wall"] for r in runs]),
                _rate(runs),
                2 * _rate(runs),
                percentile(lat, 50) * 1000,
                percentile(lat, 99) * 1000,
                _cpu_ms(runs, "client_cpu"),
                _cpu_ms(runs, "server_cpu") if kind == "rest" else "-",
                ratio_cell(_rate(runs) / hook_rate, ">=0.3") if kind == "rest" else "-",
            )
    t2.notes += [
        f"medians of {ctx.repeat} runs, alternating; requests/s counts both calls of a session",
        "CPU: the client process's own (for the hook, that is all of its work but PostgreSQL's) and the "
        "API server's processes (all workers); PostgreSQL's CPU is counted for neither",
        "the hook runs one thread and one pooled connection per client in one process; the REST "
        f"clients one connection each to the api-server ({server.workers} workers)",
    ]
    if incomplete:
        t.notes.append(
            f"stopped at the {DEADLINE_S:.0f} s deadline before the end: {', '.join(incomplete)} "
            "(rates are of what was done)"
        )
    return [t, t2]


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "rest-ingest"]))
