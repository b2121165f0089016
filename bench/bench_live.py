"""3a alone: live ingestion through the hook against plain INSERTs (``--only live``; ``--only ingest`` runs 3a
and 3b)."""

from __future__ import annotations

from bench.bench_ingest import run_live as run

__all__ = ["run"]
