"""Common pieces of the clickstream benchmarks: a throwaway PostgreSQL, synthetic data seeded fast,
repetitions with medians, peak memory of a child process, and the tables the scripts print.

Nothing here is a test: the scripts print numbers, they assert nothing. See ``bench/README.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pgcluster import TEST_SETTINGS, ThrowawayPostgres

ROOT = Path(__file__).resolve().parents[1]

#: PostgreSQL settings on top of the test cluster's (fsync off etc.): a little more cache, as a real
#: store would have. Both a measured operation and its baseline run on the same server.
BENCH_PG_SETTINGS = {
    "shared_buffers": "'512MB'",
    "work_mem": "'32MB'",
    "maintenance_work_mem": "'256MB'",
    "autovacuum": "off",  # the harness runs VACUUM ANALYZE itself after seeding, so runs are repeatable
    "max_connections": "200",
}

DEFAULT_SESSIONS = 200_000


# ----------------------------------------------------------------------------------------- logging


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ timing


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------ tables


@dataclass
class Table:
    """A printed result table: a title, column names, rows, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [[_fmt(c) for c in r] for r in self.rows]
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(self.columns)]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(self.columns, widths, strict=True)) + " |"
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        body = [
            "| " + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in cells
        ]
        out = [f"### {self.title}", "", line, sep, *body]
        if self.notes:
            out += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(out) + "\n"


def _numeric(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or s[0] in "-.") and not s.startswith("--")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def ratio_cell(value: float, target: str) -> str:
    """``0.83x (target >= 0.5x: met)``-style cell. ``target`` is like ``">=0.5"`` or ``"<=1.3"``."""
    op, bound = target[:2], float(target[2:])
    ok = value >= bound if op == ">=" else value <= bound
    return f"{value:.2f}x ({op}{bound:g}: {'met' if ok else 'MISSED'})"


#: The ratios of the last recorded run (``python -m bench.run --record``), by measurement: the regression guard.
RECORDED = Path(__file__).with_name("recorded.json")

#: A ratio below this share of its recorded value is flagged REGRESSED (the ingest regression of issue 25 was a
#: fall from 0.70x to 0.36x of the baseline; the run-to-run spread of a ratio on this shared machine is about 15 %).
REGRESSION_SHARE = 0.8


def recorded_cell(ctx: Context, key: str, value: float) -> str:
    """The guard's cell: ``value`` (a ratio to the same run's baseline) against the last recorded ratio of
    ``key``; ``REGRESSED`` when it is below :data:`REGRESSION_SHARE` of it. The value is kept in
    ``ctx.ratios``, which ``--record`` writes to :data:`RECORDED`."""
    ctx.ratios[key] = round(value, 3)
    recorded = json.loads(RECORDED.read_text()).get(key) if RECORDED.exists() else None
    if recorded is None:
        return "none recorded"
    share = value / recorded["ratio"]
    verdict = "REGRESSED" if share < REGRESSION_SHARE else "ok"
    return f"{share:.2f} of {recorded['ratio']:.2f}x ({recorded['date']}): {verdict}"


def record_ratios(ratios: dict[str, float]) -> None:
    """Write this run's ratios into :data:`RECORDED` (other keys kept)."""
    data = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    day = time.strftime("%Y-%m-%d", time.gmtime())
    data.update({k: {"ratio": v, "date": day} for k, v in ratios.items()})
    RECORDED.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")


def mib(n_bytes: float) -> float:
    return n_bytes / 2**20


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    return f"{os.cpu_count()} cores ({cpu}), {mem} RAM, Python {sys.version.split()[0]}"


# ------------------------------------------------------------------------------ child processes


def run_child(
    func: str, /, timeout: float = 1200, env: dict[str, str] | None = None, preload: Sequence[str] = (), **kwargs: Any
) -> tuple[Any, dict[str, float]]:
    """Run ``module:function(**kwargs)`` in a fresh interpreter and return its JSON result and memory.

    The child is a new ``python``: ``peak_rss`` is its ``VmHWM`` (the kernel's high-water mark of its
    resident memory, read from /proc at its end), ``start_rss`` its resident size right before the function
    ran (after imports), ``wall`` the function's own wall time. (``ru_maxrss`` from os.wait4 is kept for
    reference but not used: Linux carries the forking parent's resident size into it across exec.)
    ``preload`` modules are imported before the clock starts, so a variant is not charged for importing
    Airflow or pandas.
    """
    code = (  # noqa: UP031 - a program text with two values filled in
        "import json, sys, time, importlib\n"
        "mod, fn = %r.split(':')\n"
        "f = getattr(importlib.import_module(mod), fn)\n"
        "for m in %r: importlib.import_module(m)\n"
        "kw = json.loads(sys.stdin.read())\n"
        "from bench.harness import rss_now\n"
        "start = rss_now()\n"
        "t0 = time.perf_counter(); out = f(**kw); wall = time.perf_counter() - t0\n"
        "from bench.harness import peak_rss\n"
        "sys.stdout.write('\\n@@RESULT@@' + json.dumps({'out': out, 'wall': wall, 'start_rss': start, "
        "'peak_rss': peak_rss()}))\n"
    ) % (func, list(preload))
    child_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env, cwd=ROOT
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(kwargs).encode())
    proc.stdin.close()
    deadline = time.monotonic() + timeout
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if time.monotonic() > deadline:
        log(f"warning: child {func} ran past its {timeout:.0f} s budget")
    if proc.returncode != 0 or b"@@RESULT@@" not in out:
        raise RuntimeError(f"benchmark child {func} failed (exit {proc.returncode}):\n{out.decode()[-3000:]}")
    res = json.loads(out.rsplit(b"@@RESULT@@", 1)[1])
    return res["out"], {
        "peak_rss": res["peak_rss"],
        "start_rss": res["start_rss"],
        "wall": res["wall"],
        "ru_maxrss": usage.ru_maxrss * 1024,
    }


def peak_rss() -> int:
    """Peak resident set size (VmHWM) of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_now() -> int:
    """Resident set size of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------------------- data


#: Mean events per session of the benchmark data (the issue's scale: 200k sessions, about 1M events).
EVENTS_PER_SESSION = 5.0


def synthetic_sessions(
    n: int,
    seed: int = 42,
    start_ms: int | None = None,
    *,
    events_per_session: float = EVENTS_PER_SESSION,
    id_prefix: str | None = None,
) -> Iterator[tuple[dict, list[dict]]]:
    """``n`` (session, events) pairs from the package's synthetic clickstream generator.

    The generator makes about 1.3 events per session (its clicks, downloads, likes, late clicks). The
    issue's scale is about 5 per session, so each session also gets ``view`` events (a result scrolled
    into view and looked at: ranks top-down, interleaved in time with the clicks) until the mean reaches
    ``events_per_session``. Deterministic for ``seed``.

    :param start_ms: time of the first session (default: two hours before now, inside live ingestion's
        24 h window).
    """
    import random

    from clickstream import synthetic

    if start_ms is None:
        start_ms = int(time.time() * 1000) - 2 * 3600 * 1000
    rng = random.Random(seed + 1)
    prefix = id_prefix or f"s{seed}"
    for s in synthetic.generate(n, seed=seed, start_ms=start_ms, id_prefix=prefix):
        events = s.events + s.late_events
        missing = events_per_session - len(events)
        if missing > 0:
            n_views = int(missing) + (rng.random() < missing - int(missing))
            shown = s.session["search_results"]
            t0 = s.session["created_at"]
            for k in range(min(n_views, len(shown))):
                events.append(
                    {
                        "event_id": f"view-{k:03d}",
                        "object_id": shown[k]["object_id"],
                        "event_type": "view",
                        "created_at": t0 + 500 + 700 * k,
                        "meta": {"rank": k + 1},
                    }
                )
        yield s.session, events


@dataclass
class SeededBatch:
    batch_id: str
    sessions: int
    events: int
    min_number: int
    max_number: int
    release_id: str | None = None


#: Sessions handed to the store's load at a time while seeding (as the history import's default chunk).
SEED_CHUNK = 5000


def seed_batch(
    url: str, pairs: Iterable[tuple[dict, list[dict]]], *, release_id: str | None = None, label: str = "batch"
) -> SeededBatch:
    """Load sessions and events into a new collecting batch with the store's bulk load, then optionally release it.

    The load is the history import's (:func:`clickstream.store.history_load.open_load`: ``COPY`` on
    PostgreSQL), fed the rows the store writes (:func:`clickstream.store.rows.session_row`,
    :func:`~clickstream.store.rows.event_row`: the JSON and the content hash as
    :meth:`SessionStore.register_session` makes them, the validated defaults such as ``event_type``), without
    the import's file reading and row checks. Session numbers follow the input order; events are deduplicated
    per session and numbered in arrival order. Only the timing differs from live registration: a few COPYs
    instead of one transaction per session. The release, when asked, is the store's.
    """
    from clickstream import models
    from clickstream.store import SessionStore
    from clickstream.store.history_load import open_load
    from clickstream.store.rows import event_row, session_row

    store = SessionStore.from_url(url)
    store.migrate()
    if store.list_batches(status="collecting", limit=1):
        raise RuntimeError("seed_batch: another batch is collecting; release it first")
    n_sessions = 0
    t0 = time.perf_counter()
    with open_load(store) as load:
        sessions: list[tuple] = []
        events: list[tuple] = []
        for session, evs in pairs:
            n_sessions += 1
            body = models.SessionIn.model_validate(session)
            sessions.append((n_sessions, 0, n_sessions, *session_row(body), None))
            events += [
                (n_sessions, pos, body.session_id, *event_row(models.EventIn.model_validate(e)))
                for pos, e in enumerate(evs)
            ]
            if len(sessions) == SEED_CHUNK:
                load.add_rows(sessions, events)
                sessions, events = [], []
            if n_sessions % 100_000 == 0:
                log(f"  seed {label}: {n_sessions:,} sessions ({n_sessions / (time.perf_counter() - t0):,.0f}/s)")
        load.add_rows(sessions, events)
        outcome = load.finish(accept=lambda conflicts: conflicts == 0, error_limit=0)
    if not outcome.committed or outcome.batch_id is None:
        raise RuntimeError(f"seed_batch: nothing seeded ({outcome.conflicts} sessions conflict with stored ones)")
    batch = store.get_batch(outcome.batch_id)
    n_events = outcome.loaded_events
    elapsed = time.perf_counter() - t0
    log(f"  seeded {label}: {outcome.loaded_sessions:,} sessions, {n_events:,} events in {elapsed:.1f} s")
    if release_id is not None:
        store.release_batch(release_id)
    store.dispose()
    assert batch.min_number is not None and batch.max_number is not None
    return SeededBatch(
        batch.batch_id, outcome.loaded_sessions, n_events, batch.min_number, batch.max_number, release_id
    )


def vacuum_analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def pg_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return one_row(conn.execute("SHOW server_version"))[0]


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def one_row(cursor: Any) -> tuple[Any, ...]:
    """The next row of a psycopg ``cursor`` whose query answers one (an error if it answers none)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the query answered no row")
    return tuple(row)


@contextlib.contextmanager
def postgres() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL server with :data:`BENCH_PG_SETTINGS`, stopped on exit."""
    with ThrowawayPostgres(settings={**TEST_SETTINGS, **BENCH_PG_SETTINGS}) as pg:
        log(f"PostgreSQL {pg_version(pg.url)} at {pg.url} (started in {pg.startup_seconds:.1f} s)")
        yield pg


def import_attr(path: str) -> Any:
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


# ------------------------------------------------------------------------------------------ context


@dataclass
class Context:
    """What every benchmark gets: the server, the scale, the repetitions, and the seeded batches.

    Batches are seeded on first use and shared: ``small`` (1,000 sessions), ``mid`` (a fifth of the
    scale) and ``big`` (the scale), each released after seeding, in one database (``url``).
    """

    pg: ThrowawayPostgres
    sessions: int
    repeat: int
    workdir: Path
    batches: dict[str, SeededBatch] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)  # this run's guarded ratios (recorded_cell)

    @property
    def url(self) -> str:
        return self.pg.url

    def sizes(self) -> dict[str, int]:
        return {"small": 1000, "mid": max(1000, self.sessions // 5), "big": self.sessions}

    def batch(self, name: str) -> SeededBatch:
        if name not in self.batches:
            n = self.sizes()[name]
            seed = {"small": 1, "mid": 2, "big": 3}[name]
            log(f"seeding batch {name!r}: {n:,} sessions")
            self.batches[name] = seed_batch(
                self.url,
                synthetic_sessions(n, seed=seed, id_prefix=f"{name}{seed}"),
                release_id=f"seed-{name}",
                label=name,
            )
            vacuum_analyze(self.url)
        return self.batches[name]

    def airflow_env(self, url: str | None = None) -> dict[str, str]:
        """Environment for a process that uses the hook (and the postgres provider's hook) on ``url``."""
        libpq = libpq_url(url or self.url)
        return {
            "AIRFLOW_HOME": str(self.workdir / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": libpq,
            "AIRFLOW_CONN_BENCH_PG": libpq,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
