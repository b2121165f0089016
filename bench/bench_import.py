"""3b alone: the history import against ``COPY FROM`` (``--only import``; ``--only ingest`` runs 3a and 3b)."""

from __future__ import annotations

from bench.bench_ingest import run_import as run

__all__ = ["run"]
