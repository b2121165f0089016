"""5. REST: ``GET /clickstream/batch/sessions`` through a real ``airflow api-server`` on loopback, against
the same calls made directly on the hook, with the API's garbage-collector tuning off (before) and on
(after).

The servers are the tests' (:class:`tests.support.apiserver.ApiServer`: SimpleAuthManager, a bearer token
from ``POST /auth/token`` as a service would get it) with an SQLite metadata DB in the bench's temp folder
and the bench's store. Two servers run side by side: one with ``CLICKSTREAM_GC_FREEZE=0`` (the bench-only
switch of :mod:`clickstream.web.gc_tuning`: the collector as Python sets it) and one as shipped (startup
heap frozen, higher generation-0 threshold). Both record their workers' collections (:mod:`bench.gc_trace`,
loaded into the servers from outside), so the slowest requests can be matched with the collections that
ran during them.

Clients live in a separate process (asyncio + httpx, one connection per client); the direct calls in
another (threads, one pooled connection each). Every variant makes the same requests: pages of ``limit``
sessions at spread ``after_number`` positions of the largest batch, interleaved variant by variant in
each repetition. Request counts are bounded.

:class:`ApiServer` is shared with ``bench_rest_ingest.py``.

``BENCH_REST_BEFORE=<checkout>/plugins`` replaces the ``untuned`` server by one that runs that checkout's
plugin (its ``plugins`` first on the server's ``PYTHONPATH``, e.g. a worktree of main), GC tuned as shipped:
before/after rows of a change to the route in the same run. Every REST row also reports the server's CPU per
request (its process group, from /proc), the direct rows the client process's CPU per call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from bench import gc_trace as gc_tracing
from bench.harness import Context, Table, log, median, percentile, ratio_cell, run_child
from tests.support.apiserver import ApiServer as TestApiServer

LIMIT = 100
EVENTS_LIMIT = 100
WORKERS = 2
REQUESTS = {1: 200, 16: 320}
#: The two server variants: label, extra environment.
SERVERS = {
    "untuned": ("REST, GC as Python sets it (CLICKSTREAM_GC_FREEZE=0): before", {"CLICKSTREAM_GC_FREEZE": "0"}),
    "tuned": ("REST, GC tuned (default: startup heap frozen, gen0 threshold 20,000): after", {}),
}
#: Another checkout's ``plugins`` folder: its server replaces ``untuned`` (see the module docstring).
BEFORE = os.environ.get("BENCH_REST_BEFORE")
if BEFORE:
    SERVERS = {
        "before": (f"REST, {BEFORE} (GC tuned): before", {}),
        "tuned": ("REST, this checkout (GC tuned): after", {}),
    }


# ---------------------------------------------------------------------------- child functions


def child_http(base_url: str, token: str, batch_id: str, afters: list[int], clients: int) -> dict[str, Any]:
    """``GET /batch/sessions`` at each of ``afters`` from ``clients`` concurrent connections.

    Returns the wall time, each request's latency and its start (wall clock, to match the servers' GC
    traces), and the client's own full collections. The client's collector is tuned as the server's
    (:mod:`clickstream.web.gc_tuning`: heap frozen, gen-0 threshold 20,000), so the latencies are the
    server's: with Python's defaults, parsing the pages (160 KB each) made a full collection of the client
    every 50 or so requests, 50 to 130 ms each, which was most of the REST rows' p99 once a page took 15 ms.
    ``BENCH_REST_CLIENT_GC=default`` leaves the client's collector as Python sets it."""
    import asyncio
    import gc

    import httpx

    full_collections: list[int] = []
    if os.environ.get("BENCH_REST_CLIENT_GC") != "default":
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, *gc.get_threshold()[1:])

    def count_full(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 2:
            full_collections.append(1)

    gc.callbacks.append(count_full)

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        starts: list[float] = []
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:

            async def one(after: int) -> None:
                w0, t0 = time.time(), time.perf_counter()
                r = await http.get(
                    "/clickstream/batch/sessions",
                    params={"batch_id": batch_id, "after_number": after, "limit": LIMIT, "events_limit": EVENTS_LIMIT},
                )
                r.raise_for_status()
                r.json()
                latencies.append(time.perf_counter() - t0)
                starts.append(w0)

            async def client(k: int) -> None:
                for after in afters[clients:][k::clients]:
                    await one(after)

            for after in afters[:clients]:  # warm-up: connections, server caches
                await one(after)
            latencies.clear()
            starts.clear()
            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(clients)))
            wall = time.perf_counter() - t0
        return {"wall": wall, "latencies": latencies, "starts": starts}

    out = asyncio.run(main())
    out["client_full_collections"] = len(full_collections)
    return out


def child_direct(batch_id: str, afters: list[int], clients: int) -> dict[str, Any]:
    import threading

    from clickstream.hooks import ClickstreamHook

    hook = ClickstreamHook(engine_kwargs={"pool_size": clients})
    latencies: list[float] = []
    lock = threading.Lock()

    def one(after: int) -> None:
        t0 = time.perf_counter()
        page = hook.get_batch_sessions(batch_id, after_number=after, limit=LIMIT, events_limit=EVENTS_LIMIT)
        assert page.sessions
        dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)

    for after in afters[:clients]:
        one(after)
    latencies.clear()

    def client(k: int) -> None:
        for after in afters[clients:][k::clients]:
            one(after)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    c0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    hook.close()
    return {"wall": wall, "latencies": latencies, "cpu": cpu}


# ---------------------------------------------------------------------------------- the server


class ApiServer(TestApiServer):
    """The tests' ``airflow api-server`` (:class:`tests.support.apiserver.ApiServer`) as the bench runs it:
    ``workers`` workers, an SQLite metadata DB of its own (migrated once per bench run, then copied), the
    bench's store and Airflow settings; started and stopped by ``with``.

    :param name: folder of the server under the bench's workdir.
    :param env: extra environment of the server (e.g. ``CLICKSTREAM_GC_FREEZE``).
    :param gc_trace: record the workers' garbage collections in ``<folder>/gc-trace`` (:mod:`bench.gc_trace`).
    :param url: the store's database (default: the bench's database with the seeded batches).
    """

    def __init__(
        self,
        ctx: Context,
        name: str = "api",
        *,
        env: dict[str, str] | None = None,
        workers: int = WORKERS,
        gc_trace: bool = False,
        url: str | None = None,
        plugins: str | None = None,
    ):
        self.name = name
        workdir = ctx.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        self.metadata_db = workdir / "airflow.db"
        self.metadata_template = ctx.workdir / "api-metadata-migrated.db"
        self.trace_dir = workdir / "gc-trace" if gc_trace else None
        # the bench's Airflow settings (log level, examples off, ...); its own home and store come from the base
        extra = {
            k: v
            for k, v in ctx.airflow_env(url).items()
            if k not in ("AIRFLOW_HOME", "AIRFLOW_CONN_CLICKSTREAM_DEFAULT")
        }
        if self.trace_dir is not None:
            extra.update(gc_tracing.server_env(self.trace_dir))
        if plugins:  # another checkout's plugin, after the GC trace's sitecustomize folder
            path = extra.get("PYTHONPATH", os.environ.get("PYTHONPATH", "")).split(os.pathsep)
            first = path[:1] if self.trace_dir is not None else []
            extra["PYTHONPATH"] = os.pathsep.join(filter(None, [*first, plugins, *path[len(first) :]]))
        extra.update(env or {})
        super().__init__(
            url or ctx.url,
            workdir,
            extra_env=extra,
            workers=workers,
            metadata_url=f"sqlite:///{self.metadata_db}",
            startup_timeout_s=240,
        )

    def start(self) -> Self:
        """Migrate (or copy the migrated) metadata DB, then start the server and wait until it answers."""
        t0 = time.monotonic()
        if self.metadata_template.exists():
            shutil.copyfile(self.metadata_template, self.metadata_db)
        else:
            subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                env=self.env,
                check=True,
                timeout=600,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            shutil.copyfile(self.metadata_db, self.metadata_template)
            log(f"rest: metadata DB migrated in {time.monotonic() - t0:.0f} s")
        super().start()
        log(
            f"rest: api-server {self.name!r} up on {self.base_url} with {self.workers} workers "
            f"in {time.monotonic() - t0:.0f} s"
        )
        return self

    def token(self, username: str = "admin") -> str:
        """A bearer token of ``username`` (an administrator by default)."""
        return super().token(username)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's living processes (its process group)."""
        return process_group_cpu(self.process.pid) if self.process is not None else 0.0

    def gc_events(self) -> list[dict[str, Any]]:
        """Every collection its workers recorded (``gen``, ``t`` wall start, ``ms``, ``pid``)."""
        return gc_tracing.gc_events(self.trace_dir) if self.trace_dir is not None else []

    def tuning(self) -> list[dict[str, Any]]:
        """What :func:`clickstream.web.gc_tuning.tune_worker_process` did in each worker (from the trace)."""
        return gc_tracing.tuning(self.trace_dir) if self.trace_dir is not None else []


def process_group_cpu(pgid: int) -> float:
    """User + system CPU seconds of the living processes of process group ``pgid`` (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


# ---------------------------------------------------------------------------------- GC attribution


def _flush_traces(servers: dict[str, ApiServer], token: str, batch_id: str) -> None:
    """The traces are written at most once a second, on a collection: make each worker collect once more."""
    import httpx

    time.sleep(1.2)
    for server in servers.values():
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as h:
            for k in range(4 * server.workers):
                h.get(
                    "/clickstream/batch/sessions",
                    params={"batch_id": batch_id, "after_number": k, "limit": LIMIT, "events_limit": EVENTS_LIMIT},
                )


def gc_attribution(events: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Collections during the measured requests of ``runs`` (client results with ``starts``/``latencies``).

    For every request, the GC time of collections that started inside it (any worker: with one client only
    the worker that serves it runs). The slowest 1 % are the requests at or above the p99 latency.
    """
    import bisect

    evs = sorted(events, key=lambda e: e["t"])
    ts = [e["t"] for e in evs]
    reqs: list[tuple[float, float, float, bool]] = []  # latency, gc ms, gen-2 ms, had gen-2
    in_window: list[dict[str, Any]] = []
    for r in runs:
        if not r["starts"]:
            continue
        lo = bisect.bisect_left(ts, min(r["starts"]))
        hi = bisect.bisect_right(ts, max(s + lat for s, lat in zip(r["starts"], r["latencies"], strict=True)))
        in_window += evs[lo:hi]
        for s, lat in zip(r["starts"], r["latencies"], strict=True):
            inside = evs[bisect.bisect_left(ts, s) : bisect.bisect_right(ts, s + lat)]
            g2 = [e["ms"] for e in inside if e["gen"] == 2]
            reqs.append((lat, sum(e["ms"] for e in inside), sum(g2), bool(g2)))
    if not reqs:
        return {}
    p99 = percentile([r[0] for r in reqs], 99)
    slow = [r for r in reqs if r[0] >= p99]
    g2 = [e["ms"] for e in in_window if e["gen"] == 2]
    young = [e["ms"] for e in in_window if e["gen"] != 2]
    return {
        "requests": len(reqs),
        "gen2": len(g2),
        "gen2_median_ms": median(g2),
        "gen2_max_ms": max(g2, default=float("nan")),
        "young": len(young),
        "young_ms_per_request": sum(young) / len(reqs),
        "gc_ms_per_request": (sum(g2) + sum(young)) / len(reqs),
        "slow": len(slow),
        "slow_with_gen2": sum(1 for r in slow if r[3]),
        "slow_gc_share": sum(r[1] for r in slow) / max(1e-9, sum(r[0] * 1000 for r in slow)),
        "requests_with_gen2": sum(1 for r in reqs if r[3]),
    }


# ---------------------------------------------------------------------------------- benchmark


def _tuning_note(d: dict[str, Any]) -> str:
    if d.get("action") == "frozen":
        return (
            f"{d['frozen']:,} objects frozen at startup in {d['seconds'] * 1000:.0f} ms, gen0 threshold "
            f"{d['previous_threshold'][0]} -> {d['threshold'][0]}"
        )
    if d.get("action") == "disabled":
        return f"not tuned: {d.get('tracked') or 0:,} objects tracked by the collector, thresholds {d.get('threshold')}"
    return str(d)


def _ms(x: float) -> float:
    return x * 1000


def _cpu_per_request(out: dict[str, Any]) -> float:
    return float(out.get("cpu", float("nan"))) / max(1, out.get("cpu_requests", len(out["latencies"])))


def run(ctx: Context) -> list[Table]:
    import contextlib
    import random

    big = ctx.batch("big")
    rng = random.Random(5)
    n_max = max(REQUESTS.values()) + 16
    afters = [big.min_number - 1 + rng.randrange(max(1, big.sessions - LIMIT)) for _ in range(n_max)]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    kinds = ("direct", *SERVERS)
    with contextlib.ExitStack() as stack:
        servers: dict[str, ApiServer] = {}
        for name, (_, env) in SERVERS.items():
            plugins = BEFORE if name == "before" else None
            servers[name] = stack.enter_context(ApiServer(ctx, f"api-{name}", env=env, gc_trace=True, plugins=plugins))
        tokens = {name: server.token() for name, server in servers.items()}
        for rep in range(ctx.repeat):
            for clients, n in REQUESTS.items():
                order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]  # rotate: no variant always first
                for kind in order:
                    if kind in servers:
                        cpu0 = servers[kind].cpu_seconds()
                        out, _ = run_child(
                            "bench.bench_rest:child_http",
                            env=ctx.airflow_env(),
                            preload=["httpx"],
                            base_url=servers[kind].base_url,
                            token=tokens[kind],
                            batch_id=big.batch_id,
                            afters=afters[: n + clients],
                            clients=clients,
                        )
                        out["cpu"] = servers[kind].cpu_seconds() - cpu0  # warm-up requests included
                        out["cpu_requests"] = n + clients
                    else:
                        out, _ = run_child(
                            "bench.bench_rest:child_direct",
                            env=ctx.airflow_env(),
                            preload=["clickstream.hooks", "clickstream.store"],
                            batch_id=big.batch_id,
                            afters=afters[: n + clients],
                            clients=clients,
                        )
                    results.setdefault((kind, clients), []).append(out)
                    lat = out["latencies"]
                    log(
                        f"rest {kind} x{clients} #{rep + 1}: {n / out['wall']:.0f} req/s, p50 "
                        f"{_ms(percentile(lat, 50)):.0f} ms, p99 {_ms(percentile(lat, 99)):.0f} ms, CPU "
                        f"{_ms(_cpu_per_request(out)):.1f} ms/request, load {os.getloadavg()[0]:.1f}"
                        + (f", client full GCs {out['client_full_collections']}" if kind in servers else "")
                    )
        _flush_traces(servers, tokens["tuned"], big.batch_id)
        gc_events = {name: server.gc_events() for name, server in servers.items()}
        tuning = {name: server.tuning() for name, server in servers.items()}

    t = Table(
        f"5. GET /clickstream/batch/sessions (limit={LIMIT}, events_limit={EVENTS_LIMIT}) on the "
        f"{big.sessions:,}-session batch: api-server ({WORKERS} workers) vs direct hook calls",
        [
            "clients",
            "variant",
            "requests",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99/p50",
            "CPU ms/request",
            "REST vs direct",
        ],
    )
    for clients, n in REQUESTS.items():
        rate_direct = median([len(r["latencies"]) / r["wall"] for r in results[("direct", clients)]])
        for kind in kinds:
            runs = results[(kind, clients)]
            rate = median([len(r["latencies"]) / r["wall"] for r in runs])
            lat = [x for r in runs for x in r["latencies"]]
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            label = "direct: ClickstreamHook.get_batch_sessions (threads)" if kind == "direct" else SERVERS[kind][0]
            tail = (
                f"{p99 / p50:.1f}"
                if kind == "direct" or clients > 1
                else ratio_cell(p99 / p50, "<=4").replace("x (", " (")
            )
            vs = "-" if kind == "direct" else ratio_cell(rate / rate_direct, ">=0.9")
            cpu = _ms(median([_cpu_per_request(r) for r in runs]))
            t.add(clients, label, n, rate, _ms(p50), _ms(percentile(lat, 90)), _ms(p99), tail, cpu, vs)
    t.notes += [
        f"medians of {ctx.repeat} runs for req/s; percentiles over every request of every run; the "
        "variants alternate within each repetition, in rotating order",
        "targets (1 client): p99/p50 <= 4, REST vs direct >= 0.9x (issue 25); the 16-client rows have no target",
        "both servers run at once, each with its own AIRFLOW_HOME; only the one being measured gets requests",
        "the machine's 2 cores are shared by the clients, the API server workers and PostgreSQL",
        "REST clients: one process, asyncio + httpx, its collector tuned as the server's (heap frozen, gen-0 "
        "threshold 20,000) so its own full collections stay out of the latencies; BENCH_REST_CLIENT_GC=default "
        "leaves it as Python sets it",
        "CPU ms/request (median of the runs): REST, the API server's process group (its workers; the warm-up "
        "requests included); direct, the calling process (time.process_time); PostgreSQL's CPU in neither",
    ]
    for name in servers:
        t.notes.append(f"{name} server, per worker: " + "; ".join(_tuning_note(d) for d in tuning[name]))
    t.notes.append(
        "switch (bench only): CLICKSTREAM_GC_FREEZE=0 in the API server's environment turns the "
        "tuning of clickstream.web.gc_tuning off"
    )

    g = Table(
        "5b. Garbage collections in the API server's workers during the 1-client requests (bench.gc_trace)",
        [
            "server",
            "requests",
            "gen-2 collections",
            "gen-2 median ms",
            "gen-2 max ms",
            "gen-0/1 collections",
            "GC ms per request",
            "slowest 1 %: requests",
            "with a gen-2",
            "GC share of their time",
        ],
    )
    for name in servers:
        a = gc_attribution(gc_events[name], results[(name, 1)])
        if not a:
            continue
        g.add(
            name,
            a["requests"],
            a["gen2"],
            a["gen2_median_ms"],
            a["gen2_max_ms"],
            a["young"],
            a["gc_ms_per_request"],
            a["slow"],
            a["slow_with_gen2"],
            f"{a['slow_gc_share'] * 100:.0f} %",
        )
    g.notes += [
        "each worker records its collections (gc.callbacks) with their wall-clock start and duration; "
        "a request is charged the collections that started between its start and its end",
        "'slowest 1 %' are the requests at or above the p99 latency of that server's 1-client runs",
    ]
    return [t, g]


if __name__ == "__main__":
    from bench import run as _run

    raise SystemExit(_run.main(["--only", "rest"]))
