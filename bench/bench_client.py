"""12. The light client (clients/python, ``clickstream_client``): its import time, its writers' throughput and the
gzip request bodies, against a real ``airflow api-server`` on loopback.

(a) Import: ``import clickstream_client`` in a fresh virtual environment holding only the package and its
    dependencies (``uv pip install clients/python``), best of several runs, each a new interpreter; next to it
    ``import clickstream.client`` in the project's venv (the plugin's module: pydantic and the models).
    Target: < 150 ms.
(b) Writers: N sessions with 3 events each added as fast as one producer can (``add_session`` +
    ``add_events``), then ``close()``, by the threaded :class:`~clickstream_client.BulkWriter` and by the
    :class:`~clickstream_client.AsyncBulkWriter` in one event loop, both in this process, gzip on, 1,000 items a
    request; alternated, medians of ``--repeat``. Target: async >= 1.0x threaded sessions/s.
(c) gzip: the threaded writer with ``compress=True`` against ``compress=False``: request bytes on the wire
    (counted by the transport) and sessions/s. Targets: >= 5x smaller, >= 0.9x the throughput.

Ratios are paired: the median over repetitions of the ratio within one repetition (the variants run back to
back, so both see about the same load of a shared machine). The client's CPU time per session (this
process: producer, writer and httpx) is reported too: it does not depend on the load.

Every run checks the totals (every session registered, every event stored). The server is
:class:`bench_rest.ApiServer` (2 workers), its store a database of its own on the bench's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bench_ingest import fresh_db
from bench.bench_rest import ApiServer
from bench.bench_rest_ingest import make_pairs
from bench.harness import Context, Table, log, median, ratio_cell

ROOT = Path(__file__).resolve().parents[1]
ITEMS_PER_REQUEST = 1000


class CountingTransport(httpx.HTTPTransport):
    """Counts the request bytes sent (bodies as sent: compressed when gzip is on)."""

    sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += len(request.content)
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += len(request.content)
        return await super().handle_async_request(request)


def _check(writer: Any, n: int) -> None:
    total = writer.registered + writer.already_registered
    if total != n or writer.stored != 3 * n or writer.undelivered or writer.rejected:
        raise RuntimeError(
            f"writer delivered {total}/{n} sessions, {writer.stored}/{3 * n} events; "
            f"undelivered {len(writer.undelivered)}, rejected {len(writer.rejected)}"
        )


def threaded(server: ApiServer, pairs: list, *, compress: bool) -> dict[str, float]:
    from clickstream_client import ClickstreamClient

    transport = CountingTransport()
    with ClickstreamClient(server.base_url, token=server.token(), transport=transport, timeout=120) as client:
        started, cpu0 = time.perf_counter(), time.process_time()
        writer = client.writer(max_items=ITEMS_PER_REQUEST, max_age_s=0.5, compress=compress)
        for session, events in pairs:
            writer.add_session(session)
            writer.add_events(session["session_id"], events)
        writer.close()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    _check(writer, len(pairs))
    return {"wall": wall, "cpu": cpu, "sessions": len(pairs), "bytes": transport.sent, "requests": writer.requests}


def in_loop(server: ApiServer, pairs: list) -> dict[str, float]:
    from clickstream_client import AsyncClickstreamClient

    async def main() -> dict[str, float]:
        transport = AsyncCountingTransport()
        async with AsyncClickstreamClient(
            server.base_url, token=server.token(), transport=transport, timeout=120
        ) as client:
            started, cpu0 = time.perf_counter(), time.process_time()
            writer = client.writer(max_items=ITEMS_PER_REQUEST, max_age_s=0.5)
            for session, events in pairs:
                await writer.add_session(session)
                await writer.add_events(session["session_id"], events)
            await writer.close()
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
        _check(writer, len(pairs))
        return {"wall": wall, "cpu": cpu, "sessions": len(pairs), "bytes": transport.sent, "requests": writer.requests}

    return asyncio.run(main())


def import_times(ctx: Context, runs: int) -> tuple[float, float, list[str]]:
    """Best ``import clickstream_client`` time in a fresh venv, best ``import clickstream.client`` here, and
    the fresh venv's distributions."""
    uv = Path(sys.executable).parent / "uv"
    venv = ctx.workdir / "client-venv"
    subprocess.run([str(uv), "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(uv), "pip", "install", "--python", str(python), str(ROOT / "clients" / "python")],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [str(uv), "pip", "list", "--python", str(python), "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    code = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"

    def best(interpreter: Path | str, module: str) -> float:
        return min(
            float(
                subprocess.run(
                    [str(interpreter), "-c", code.format(module)], check=True, capture_output=True, text=True
                ).stdout
            )
            for _ in range(runs)
        )

    return (
        best(python, "clickstream_client"),
        best(sys.executable, "clickstream.client"),
        [f"{p['name']} {p['version']}" for p in json.loads(listed)],
    )


def run(ctx: Context) -> list[Table]:
    n = max(2000, min(ctx.sessions // 20, 10_000)) // 250 * 250
    light, plugin, installed = import_times(ctx, runs=max(5, 3 * ctx.repeat))
    t_import = Table("Light client: import time", ["import", "environment", "best of runs (ms)", "target"])
    t_import.add(
        "clickstream_client",
        "fresh venv: " + ", ".join(installed),
        round(light * 1000, 1),
        "< 150 ms: " + ("met" if light < 0.150 else "MISSED"),
    )
    t_import.add("clickstream.client", "the project's venv (pydantic, models)", round(plugin * 1000, 1), "")

    url, _ = fresh_db(ctx, "client_bench")
    start_ms = int(time.time() * 1000) - 3 * 3600 * 1000  # inside live ingestion's 24 h window
    results: dict[str, list[dict[str, float]]] = {"threaded": [], "async": [], "plain": []}
    with ApiServer(ctx, "api-client", url=url) as server:
        for rep in range(ctx.repeat):
            kinds = ["threaded", "async", "plain"]
            for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                pairs = make_pairs(n, seed=900 + rep, prefix=f"cl{kind[0]}{rep}", start_ms=start_ms)
                if kind == "async":
                    out = in_loop(server, pairs)
                else:
                    out = threaded(server, pairs, compress=kind == "threaded")
                results[kind].append(out)
                log(
                    f"client {kind} #{rep + 1}: {out['sessions'] / out['wall']:,.0f} sessions/s, "
                    f"{out['bytes'] / 1e6:.1f} MB sent"
                )

    def rate(kind: str) -> float:
        return median([r["sessions"] / r["wall"] for r in results[kind]])

    def paired(kind: str, base: str) -> float:
        """Median over repetitions of ``kind``'s sessions/s over ``base``'s in the same repetition (adjacent in
        time, so both saw about the same load of the shared machine)."""
        return median(
            [
                (a["sessions"] / a["wall"]) / (b["sessions"] / b["wall"])
                for a, b in zip(results[kind], results[base], strict=True)
            ]
        )

    def cpu_us(kind: str) -> float:
        return median([r["cpu"] / r["sessions"] * 1e6 for r in results[kind]])

    def sent(kind: str) -> float:
        return median([r["bytes"] for r in results[kind]])

    t_writers = Table(
        f"Light client writers: {n:,} sessions + {3 * n:,} events, {ITEMS_PER_REQUEST} items a request, one producer",
        [
            "writer",
            "bodies",
            "sessions/s",
            "client CPU µs/session",
            "request MB",
            "requests",
            "vs threaded gzip (paired)",
        ],
    )
    for kind, label, bodies in (
        ("threaded", "BulkWriter (thread)", "gzip"),
        ("async", "AsyncBulkWriter (one event loop)", "gzip"),
        ("plain", "BulkWriter (thread)", "uncompressed"),
    ):
        ratio = paired(kind, "threaded")
        cell = ratio_cell(ratio, ">=1.0") if kind == "async" else f"{ratio:.2f}x" if kind == "plain" else ""
        t_writers.add(
            label,
            bodies,
            round(rate(kind)),
            round(cpu_us(kind)),
            round(sent(kind) / 1e6, 2),
            int(median([r["requests"] for r in results[kind]])),
            cell,
        )
    smaller = sent("plain") / sent("threaded")
    t_writers.notes += [
        f"gzip bodies are {ratio_cell(smaller, '>=5')} smaller on the wire than uncompressed ones",
        f"gzip throughput vs uncompressed (paired): {ratio_cell(paired('threaded', 'plain'), '>=0.9')}; "
        f"medians of independent runs: {rate('threaded') / rate('plain'):.2f}x",
        f"medians of {ctx.repeat} runs, alternating; the server: 2 workers on the same 2 cores as this process",
    ]
    return [t_import, t_writers]
