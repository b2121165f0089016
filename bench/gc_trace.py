"""Garbage-collection trace of the API servers the REST bench starts (bench only: nothing of it ships).

Each worker of a traced server records every collection (generation, wall-clock start, duration, objects
collected) in ``<folder>/gc-<pid>.jsonl``, flushed at most once a second (and at every full collection), at
most :data:`TRACE_MAX_EVENTS` collections; its line ``{"tuning": ...}`` is what
:func:`clickstream.web.gc_tuning.tune_worker_process` did in that worker (plus, when the tuning was off,
how many objects the collector tracks). The bench matches the collections with its requests' timings to
attribute slow requests to collections (``bench_rest.gc_attribution``).

How it gets into the server: :func:`server_env` puts ``bench/gc_trace_site`` first on the server's
``PYTHONPATH`` and names the folder in :data:`ENV_TRACE`. Its ``sitecustomize.py``, which Python imports at
the start of every process, loads this file and calls :func:`install`, which wraps the tuning function
that the app's lifespan calls once per worker process: the trace starts in each worker where the tuning
runs, whatever the freeze switch says. This module uses only the standard library (the server loads it by
its file, outside the bench package).
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

#: Environment variable of a traced server: the folder of its workers' traces.
ENV_TRACE = "CLICKSTREAM_BENCH_GC_TRACE"
#: A worker's trace records at most this many collections.
TRACE_MAX_EVENTS = 200_000
#: The folder with the ``sitecustomize.py`` that installs the trace in a server's processes.
SITE = Path(__file__).resolve().parent / "gc_trace_site"


# ------------------------------------------------------------------------------------ in the bench


def server_env(folder: Path) -> dict[str, str]:
    """Environment additions that make an API server trace its workers' collections into ``folder``."""
    path = [str(SITE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path), ENV_TRACE: str(folder)}


def _lines(folder: Path) -> list[tuple[int, dict[str, Any]]]:
    lines: list[tuple[int, dict[str, Any]]] = []
    if not folder.is_dir():
        return lines
    for path in sorted(folder.glob("gc-*.jsonl")):
        pid = int(path.stem.split("-", 1)[1])
        lines += [(pid, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return lines


def gc_events(folder: Path) -> list[dict[str, Any]]:
    """Every collection the workers recorded (``gen``, ``t`` wall start, ``ms``, ``collected``, ``pid``)."""
    return [{**d, "pid": pid} for pid, d in _lines(folder) if "gen" in d]


def tuning(folder: Path) -> list[dict[str, Any]]:
    """What the garbage-collector tuning did in each worker."""
    return [d["tuning"] for _, d in _lines(folder) if "tuning" in d]


# ------------------------------------------------------------------------------------ in the server


class GcTrace:
    """``gc.callbacks`` hook: one JSON line per collection (``gen``, ``t`` wall start, ``ms``, ``collected``)."""

    def __init__(self, path: Path):
        self.path = path
        self.pending: list[tuple[int, float, float, int]] = []
        self.count = 0
        self.started = 0.0
        self.wall = 0.0
        self.last_flush = time.monotonic()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.wall = time.time()
            self.started = time.perf_counter()
            return
        if self.count >= TRACE_MAX_EVENTS:
            if self.pending:
                self.flush()
            return
        self.count += 1
        gen = info.get("generation", -1)
        self.pending.append((gen, self.wall, (time.perf_counter() - self.started) * 1000, info.get("collected", 0)))
        now = time.monotonic()
        if gen == 2 or now - self.last_flush >= 1.0:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        pending, self.pending = self.pending, []
        self.last_flush = time.monotonic() if now is None else now
        if pending and self.count <= TRACE_MAX_EVENTS:
            try:
                with self.path.open("a") as f:
                    f.write(
                        "".join(f'{{"gen":{g},"t":{t:.6f},"ms":{ms:.3f},"collected":{c}}}\n' for g, t, ms, c in pending)
                    )
            except OSError:  # a debug aid must not break the server: stop tracing
                self.count = TRACE_MAX_EVENTS + 1

    def note(self, record: dict[str, Any]) -> None:
        """Write one more JSON line (e.g. ``{"tuning": ...}``)."""
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")


_traces: dict[int, GcTrace] = {}


def _start(folder: Path) -> GcTrace:
    """This process's trace, started on first use (a forked worker gets its own file)."""
    pid = os.getpid()
    trace = _traces.get(pid)
    if trace is None:
        folder.mkdir(parents=True, exist_ok=True)
        for old in _traces.values():  # inherited from the parent across a fork: stop writing its file
            if old in gc.callbacks:
                gc.callbacks.remove(old)
        trace = _traces[pid] = GcTrace(folder / f"gc-{pid}.jsonl")
        gc.callbacks.append(trace)
    return trace


def install(folder: str | Path) -> None:
    """Trace the collections of every worker process that tunes its garbage collector, into ``folder``.

    Wraps :func:`clickstream.web.gc_tuning.tune_worker_process` (the app's lifespan calls it through its
    module once per worker): the wrapper starts the process's trace, runs the tuning and writes what it did
    as the trace's ``{"tuning": ...}`` line. Never raises into the server: a failure is printed and the
    server runs untraced.
    """
    try:
        from clickstream.web import gc_tuning
    except Exception as err:
        print(f"bench trace: not installed: {err!r}", flush=True)
        return
    tune = gc_tuning.tune_worker_process
    where = Path(folder)

    def traced_tune_worker_process() -> dict[str, Any]:
        try:
            trace = _start(where)
        except Exception as err:
            print(f"bench trace: not started: {err!r}", flush=True)
            return tune()
        did = tune()
        if did.get("action") == "already":
            return did
        if did.get("action") == "disabled":
            did = {**did, "tracked": len(gc.get_objects())}
        try:
            trace.note({"tuning": did})
        except OSError as err:
            print(f"bench trace: tuning not recorded: {err!r}", flush=True)
        return did

    gc_tuning.tune_worker_process = traced_tune_worker_process
