"""The history import's former home, kept for the Python interface the docs have shown
(``clickstream.importing.import_history(store, local_sources("a.jsonl"), "jsonl")``). The import is
:mod:`clickstream.history`; nothing in the package imports this module (``tests/test_architecture.py``)."""

from __future__ import annotations

from clickstream.history import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_INVALID_THRESHOLD,
    DEFAULT_MAX_ERRORS,
    FILE_SUFFIXES,
    ImportReport,
    RowError,
    Source,
    check_options,
    import_history,
    local_sources,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_INVALID_THRESHOLD",
    "DEFAULT_MAX_ERRORS",
    "FILE_SUFFIXES",
    "ImportReport",
    "RowError",
    "Source",
    "check_options",
    "import_history",
    "local_sources",
]
