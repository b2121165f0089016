"""5. REST: ``GET /clickstream/batch/sessions`` through a real ``airflow api-server`` on loopback, against
the same calls made directly on the hook.

The server runs with SimpleAuthManager and a bearer token from ``POST /auth/token`` (as a service would),
an SQLite metadata DB in the bench's temp folder, and the store connection from the environment. Clients
live in a separate process (asyncio + httpx, one connection per client); the direct calls in another
(threads, one pooled connection each). Every variant makes the same requests: pages of ``limit`` sessions
at spread ``after_number`` positions of the largest batch. Request counts are bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import Context, Table, log, median, percentile, run_child

LIMIT = 100
EVENTS_LIMIT = 100
WORKERS = 2
REQUESTS = {1: 150, 16: 480}


# ---------------------------------------------------------------------------- child functions


def child_http(base_url: str, token: str, batch_id: str, afters: list[int], clients: int) -> dict[str, Any]:
    import asyncio

    import httpx

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as http:
            async def one(after: int) -> None:
                t0 = time.perf_counter()
                r = await http.get("/clickstream/batch/sessions", params={
                    "batch_id": batch_id, "after_number": after, "limit": LIMIT, "events_limit": EVENTS_LIMIT})
                r.raise_for_status()
                r.json()
                latencies.append(time.perf_counter() - t0)

            async def client(k: int) -> None:
                for after in afters[k::clients]:
                    await one(after)

            for after in afters[:clients]:  # warm-up: connections, server caches
                await one(after)
            latencies.clear()
            t0 = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(clients)))
            wall = time.perf_counter() - t0
        return {"wall": wall, "latencies": latencies}

    return asyncio.run(main())


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
        for after in afters[k::clients]:
            one(after)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    hook.close()
    return {"wall": wall, "latencies": latencies}


# ---------------------------------------------------------------------------------- the server


class _ApiServer:
    """``airflow api-server`` on 127.0.0.1:<free port>, its own AIRFLOW_HOME, stopped (process group) on exit."""

    def __init__(self, ctx: Context):
        from pgcluster import free_port

        self.home = ctx.workdir / "api-home"
        self.home.mkdir(exist_ok=True)
        passwords = self.home / "passwords.json"
        self.password = "bench-secret"
        passwords.write_text(json.dumps({"bench": self.password}))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, **ctx.airflow_env(),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": "clickstream-bench-secret-" + "x" * 48,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.log_path = ctx.workdir / "api-server.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> _ApiServer:
        airflow = str(Path(sys.executable).parent / "airflow")
        t0 = time.monotonic()
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, timeout=600,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"rest: metadata DB migrated in {time.monotonic() - t0:.0f} s")
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(WORKERS)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_up()
        log(f"rest: api-server up on {self.base_url} with {WORKERS} workers")
        return self

    def _wait_up(self) -> None:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"api-server exited: {self.log_path.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.base_url}/clickstream/openapi.json", timeout=2)
                if r.status_code == 200 and r.headers["content-type"].startswith("application/json"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"api-server not up: {self.log_path.read_text()[-3000:]}")

    def token(self) -> str:
        import httpx

        r = httpx.post(f"{self.base_url}/auth/token", json={"username": "bench", "password": self.password},
                       timeout=30)
        r.raise_for_status()
        return r.json()["access_token"]

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


# ---------------------------------------------------------------------------------- benchmark


def run(ctx: Context) -> list[Table]:
    import random

    big = ctx.batch("big")
    rng = random.Random(5)
    n_max = max(REQUESTS.values()) + 16
    afters = [big.min_number - 1 + rng.randrange(max(1, big.sessions - LIMIT)) for _ in range(n_max)]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with _ApiServer(ctx) as server:
        token = server.token()
        for rep in range(ctx.repeat):
            for clients, n in REQUESTS.items():
                for kind in ("direct", "http"):
                    if kind == "http":
                        out, _ = run_child("bench_rest:child_http", env=ctx.airflow_env(), preload=["httpx"],
                                           base_url=server.base_url, token=token, batch_id=big.batch_id,
                                           afters=afters[:n + clients], clients=clients)
                    else:
                        out, _ = run_child("bench_rest:child_direct", env=ctx.airflow_env(),
                                           preload=["clickstream.hooks", "clickstream.store"],
                                           batch_id=big.batch_id, afters=afters[:n + clients], clients=clients)
                    results.setdefault((kind, clients), []).append(out)
                    log(f"rest {kind} x{clients} #{rep + 1}: {n / out['wall']:.0f} req/s")
    t = Table(f"5. GET /clickstream/batch/sessions (limit={LIMIT}, events_limit={EVENTS_LIMIT}) on the "
              f"{big.sessions:,}-session batch: api-server ({WORKERS} workers) vs direct hook calls",
              ["clients", "variant", "requests", "req/s", "p50 ms", "p99 ms", "REST vs direct"])
    for clients, n in REQUESTS.items():
        rates = {}
        for kind in ("direct", "http"):
            runs = results[(kind, clients)]
            rate = median([len(r["latencies"]) / r["wall"] for r in runs])
            lat = [x for r in runs for x in r["latencies"]]
            rates[kind] = rate
            label = "direct: ClickstreamHook.get_batch_sessions (threads)" if kind == "direct" else \
                "REST: airflow api-server, bearer token (asyncio httpx)"
            t.add(clients, label, n, rate, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000,
                  f"{rates['http'] / rates['direct']:.2f}x" if kind == "http" else "-")
    t.notes += [f"medians of {ctx.repeat} runs for req/s; p50/p99 over every request of every run",
                "the machine's 2 cores are shared by the clients, the API server workers and PostgreSQL"]
    return [t]


if __name__ == "__main__":
    import run as _run

    raise SystemExit(_run.main(["--only", "rest"]))
