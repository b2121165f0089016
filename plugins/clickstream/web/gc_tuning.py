"""Garbage-collector tuning of an API-server worker that serves the clickstream app.

Why. An Airflow API-server worker holds a large heap: Airflow, FastAPI, SQLAlchemy, pydantic schemas
and the providers, about 630,000 objects the cyclic garbage collector tracks. A page of
``GET /batch/sessions`` builds tens of thousands of short-lived containers (the page's JSON values,
then its pydantic models). About every 30th page this allocation triggers a full (generation-2)
collection, which walks the *whole* heap: about 90 ms on a quiet machine, several hundred under load,
against a page of 7 to 15 ms. These pauses were the API's tail latency: in ``bench/README.md`` (5, 5b)
every one of the slowest 1 % of requests contained one, and p99 was 10 to 14 times p50.

What :func:`tune_worker_process` does, once per process, after the app's lifespan has opened the store:

1. ``gc.collect()``: free what startup left behind, so it is not kept forever by step 2;
2. ``gc.freeze()``: move every surviving object to the permanent generation, which collections skip
   (https://docs.python.org/3/library/gc.html#gc.freeze). Later full collections walk only what was
   allocated since, so they cost about as much as a young collection;
3. the generation-0 threshold is raised from 700 to :data:`GEN0_THRESHOLD` allocations, so a page's
   temporaries mostly die before a collection looks at them, and fewer of them reach generation 2.

What it costs. Objects alive at the freeze are never collected by the cycle collector: if one of them
later becomes part of an unreachable reference cycle, that cycle is not freed (plain reference counting
still frees everything else). That is a bounded, one-time amount: the objects of startup. The
thresholds are process-wide, so Airflow's own routes in the same worker get them too; a young
collection of up to 20,000 objects takes about a millisecond.

Switches (environment variables of the API server):

- ``CLICKSTREAM_GC_FREEZE=0``: do nothing (leave the collector as Python set it). **A bench-only
  switch**: ``bench/bench_rest.py`` runs one API server with it and one without, to show before/after
  in one run. Production has no reason to set it. Unset, the tuning is on, except in a process that
  has imported pytest (the app's tests enter its lifespan in the test process itself, whose heap must
  stay collectable); ``CLICKSTREAM_GC_FREEZE=1`` forces it on there too.
- ``CLICKSTREAM_GC_GEN0`` (integer >= 100): the generation-0 threshold instead of :data:`GEN0_THRESHOLD`
  (also bench/tuning only).

(The bench records every collection of its servers' workers with ``bench/trace.py``, loaded into the
API server from outside: nothing of it ships here.)

The function never raises: whatever fails is logged, and the app starts as it would without it.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable: ``0`` / ``false`` / ``no`` / ``off`` disables the tuning (bench only), ``1`` forces it.
ENV_FREEZE = "CLICKSTREAM_GC_FREEZE"
#: Environment variable: generation-0 threshold (default :data:`GEN0_THRESHOLD`).
ENV_GEN0 = "CLICKSTREAM_GC_GEN0"
#: Generation-0 threshold after the freeze (Python's default is 700).
GEN0_THRESHOLD = 20_000

_lock = threading.Lock()
_tuned_pid: int | None = None


def _enabled(value: str | None) -> bool:
    return (value or "1").strip().lower() not in ("0", "false", "no", "off")


def tune_worker_process() -> dict[str, Any]:
    """Freeze the startup heap and raise the generation-0 threshold, once per process; log what was done.

    Safe to call more than once (later calls in the same process do nothing) and from any thread. Never
    raises. Returns what it did (for logs and tests): ``{"action": "frozen" | "disabled" | "already" |
    "failed", ...}``.
    """
    global _tuned_pid
    try:
        with _lock:
            if _tuned_pid == os.getpid():
                return {"action": "already"}
            _tuned_pid = os.getpid()
            raw = (os.environ.get(ENV_FREEZE) or "").strip()
            why = None
            if raw and not _enabled(raw):
                why = f"{ENV_FREEZE}={raw}"
            elif not raw and "pytest" in sys.modules:
                why = f"running under pytest (set {ENV_FREEZE}=1 to tune anyway)"
            if why is not None:
                log.info("clickstream: garbage-collector tuning disabled: %s", why)
                return {"action": "disabled", "why": why, "pid": os.getpid(), "threshold": gc.get_threshold()}
            gen0 = GEN0_THRESHOLD
            raw_gen0 = os.environ.get(ENV_GEN0)
            if raw_gen0:
                try:
                    gen0 = max(100, int(raw_gen0))
                except ValueError:
                    log.warning("clickstream: ignoring %s=%r (not an integer)", ENV_GEN0, raw_gen0)
            t0 = time.perf_counter()
            collected = gc.collect()
            gc.freeze()
            old = gc.get_threshold()
            gc.set_threshold(gen0, *old[1:])
            seconds = time.perf_counter() - t0
            did = {
                "action": "frozen",
                "pid": os.getpid(),
                "frozen": gc.get_freeze_count(),
                "collected": collected,
                "seconds": round(seconds, 3),
                "threshold": gc.get_threshold(),
                "previous_threshold": old,
            }
        log.info(
            "clickstream: garbage collector tuned for this API-server process (pid %d): %d startup objects "
            "frozen, %d freed, in %.0f ms; thresholds %s -> %s",
            os.getpid(),
            did["frozen"],
            collected,
            seconds * 1000,
            old,
            did["threshold"],
        )
        return did
    except Exception as err:  # never fail the app's startup over a tuning
        try:
            log.warning("clickstream: garbage-collector tuning skipped: %r", err)
        except Exception:  # logging itself failed; nothing else to do
            pass
        return {"action": "failed", "error": repr(err)}
