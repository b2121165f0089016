"""The history import: clickstream history from JSON Lines or Parquet files into the session store, all or
nothing. No Airflow here (the hook passes its object storage in) and no SQL (the load is the store's:
:mod:`clickstream.store.history_load`).

* :mod:`~clickstream.history.options`: the formats, the defaults and their checks;
* :mod:`~clickstream.history.sources`: what to read (local files, a file or folder behind a path or URI);
* :mod:`~clickstream.history.readers`: JSON Lines and Parquet, in chunks of rows;
* :mod:`~clickstream.history.checks`: :func:`~clickstream.history.checks.check_row`, the fast path
  (:mod:`~clickstream.history.fast`, msgspec) with the live models as its fallback;
* :mod:`~clickstream.history.report`: the report and its invalid rows;
* :mod:`~clickstream.history.importer`: :func:`import_history` (sources) and :func:`import_path` (a path).

From Python without Airflow: ``import_history(store, local_sources("a.jsonl"), "jsonl")``.
"""

from __future__ import annotations

from clickstream.history.importer import import_history, import_path
from clickstream.history.options import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_INVALID_THRESHOLD,
    DEFAULT_MAX_ERRORS,
    FILE_SUFFIXES,
    check_options,
)
from clickstream.history.report import ImportReport, RowError
from clickstream.history.sources import Source, local_sources, path_sources

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
    "import_path",
    "local_sources",
    "path_sources",
]
