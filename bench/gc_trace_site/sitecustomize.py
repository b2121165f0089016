"""Installs the bench's garbage-collection trace (``bench/gc_trace.py``) in an API server the bench starts.

Python imports ``sitecustomize`` at the start of every process; this folder is first on ``PYTHONPATH``
only in the servers the REST bench traces (``bench.gc_trace.server_env``), and does nothing unless
``CLICKSTREAM_BENCH_GC_TRACE`` names the trace folder.
"""

from __future__ import annotations

import os

if os.environ.get("CLICKSTREAM_BENCH_GC_TRACE"):
    import importlib.util
    from pathlib import Path

    _file = Path(__file__).resolve().parents[1] / "gc_trace.py"
    _spec = importlib.util.spec_from_file_location("clickstream_bench_gc_trace", _file)
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
        _module.install(os.environ["CLICKSTREAM_BENCH_GC_TRACE"])
