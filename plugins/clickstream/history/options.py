"""The history import's options: the file formats and their names, the defaults, and their checks."""

from __future__ import annotations

from typing import Literal

from clickstream.store.errors import InvalidInput

Format = Literal["jsonl", "parquet"]
#: File name endings picked from a folder, per format (``.gz`` JSON Lines are decompressed on the fly).
FILE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"),
    "parquet": (".parquet", ".pq"),
}

DEFAULT_INVALID_THRESHOLD = 0.01
DEFAULT_MAX_ERRORS = 100
DEFAULT_CHUNK_ROWS = 5000


def check_options(fmt: str, invalid_threshold: float, max_errors: int, chunk_rows: int) -> None:
    """Raise :class:`InvalidInput` naming the first bad option."""
    if fmt not in FILE_SUFFIXES:
        raise InvalidInput.field("format", f"must be one of {', '.join(FILE_SUFFIXES)}, got {fmt!r}")
    if not isinstance(invalid_threshold, (int, float)) or not 0 <= invalid_threshold <= 1:
        raise InvalidInput.field("invalid_threshold", f"must be a share between 0 and 1, got {invalid_threshold!r}")
    if not isinstance(max_errors, int) or max_errors < 0:
        raise InvalidInput.field("max_errors", f"must be an integer >= 0, got {max_errors!r}")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InvalidInput.field("chunk_rows", f"must be an integer >= 1, got {chunk_rows!r}")
