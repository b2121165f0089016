"""The history import, end to end: sources read in chunks, each row checked, the valid rows loaded, the report.

Threshold, and how memory stays bounded: the files are read **once**, in chunks of ``chunk_rows`` rows; each
chunk is checked (:func:`clickstream.history.checks.check_row`) and its valid rows go to the store's load
(:func:`clickstream.store.history_load.open_load`) on a worker thread while the next chunk is read:
PostgreSQL COPYs them into the store's tables inside the load transaction, SQLite stages them in temporary
tables. Once every file is read, the load commits only if ``invalid / rows <= invalid_threshold``
(conflicts, a session whose content differs from the stored one, included); otherwise it rolls back and
nothing is loaded. So neither the file nor its valid rows are ever held in memory, and the decision covers
the whole import exactly.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from clickstream.history.checks import Refused, check_row
from clickstream.history.fast import FastEvent
from clickstream.history.options import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_INVALID_THRESHOLD,
    DEFAULT_MAX_ERRORS,
    check_options,
)
from clickstream.history.readers import decompressed, position, read_chunks, size
from clickstream.history.report import ImportReport, RowError
from clickstream.history.sources import Source, path_sources
from clickstream.progress import Progress
from clickstream.store.errors import InvalidInput
from clickstream.store.history_load import open_load

if TYPE_CHECKING:
    from clickstream.store.session_store import SessionStore

log = logging.getLogger(__name__)


def import_path(
    store: SessionStore,
    path: str,
    fmt: str = "jsonl",
    invalid_threshold: float = DEFAULT_INVALID_THRESHOLD,
    max_errors: int = DEFAULT_MAX_ERRORS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    *,
    logger: logging.Logger | Any | None = None,
    open_uri: Callable[[str], Any] | None = None,
) -> ImportReport:
    """:func:`import_history` of the files at ``path`` (:func:`clickstream.history.sources.path_sources`: a
    file, or a folder's files of the format in name order), with progress by bytes against their total size.
    The options are checked before the path is looked at."""
    check_options(fmt, invalid_threshold, max_errors, chunk_rows)
    sources, total_bytes = path_sources(path, fmt, open_uri)
    return import_history(
        store,
        sources,
        fmt,
        invalid_threshold=invalid_threshold,
        max_errors=max_errors,
        chunk_rows=chunk_rows,
        logger=logger,
        total_bytes=total_bytes,
    )


def import_history(
    store: SessionStore,
    sources: Sequence[Source],
    fmt: str = "jsonl",
    *,
    invalid_threshold: float = DEFAULT_INVALID_THRESHOLD,
    max_errors: int = DEFAULT_MAX_ERRORS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    logger: logging.Logger | Any | None = None,
    total_bytes: int | None = None,
) -> ImportReport:
    """Import session and event rows from ``sources`` into ``store``, all or nothing.

    Re-running the same files changes nothing: sessions already registered with the same content and
    events already stored count as duplicates. A session row whose ``session_id`` is stored (or appears
    earlier in the import) with other content is an invalid row (conflict); the stored session is kept.
    New sessions go to the collecting batch, like live registrations.

    :param store: the session store.
    :param sources: ``(name, opener)`` pairs; ``opener()`` returns a binary file object (context manager).
    :param fmt: ``"jsonl"`` (JSON Lines, ``.gz`` decompressed by name) or ``"parquet"``.
    :param invalid_threshold: largest share of invalid rows (0..1) that still loads the valid rows;
        0 means every row must be valid.
    :param max_errors: at most this many invalid rows are listed in the report (all are counted).
    :param chunk_rows: rows read, validated and loaded at a time (bounds memory).
    :param logger: where progress goes (e.g. an Airflow task's ``self.log``); this module's logger if None.
    :param total_bytes: the files' total size, for progress lines by bytes read (done / total, percentage,
        rate, time left); without it the lines count bytes and rows only.
    :raises InvalidInput: a bad option, or no source at all.
    """
    check_options(fmt, invalid_threshold, max_errors, chunk_rows)
    if not sources:
        raise InvalidInput.field("path", "no file to import")
    out = logger or log
    names = [name for name, _ in sources]
    errors: list[RowError] = []
    counts = {"rows": 0, "invalid": 0, "session_rows": 0, "event_rows": 0}
    started = last_log = time.monotonic()
    progress = Progress(out, "import: bytes read", total_bytes, "bytes")
    bytes_before = 0  # bytes of the files read before the current one

    with open_load(store, max_conflict_rows=max_errors) as load, _ChunkWorker() as worker:
        embed = load.embeds_events
        file_bytes = 0
        for file_no, (name, opener) in enumerate(sources):
            bytes_before += file_bytes  # the previous file's size
            out.info("import: reading %s (%s)", name, fmt)
            with opener() as raw, decompressed(raw, name, fmt) as fileobj:
                file_bytes = size(raw)
                for chunk in read_chunks(fileobj, fmt, chunk_rows):
                    session_rows: list[tuple[Any, ...]] = []
                    event_rows: list[tuple[Any, ...]] = []
                    embedded = 0  # events embedded in session_rows (as JSON arrays)
                    for line, row in chunk:
                        counts["rows"] += 1
                        seq = counts["rows"]
                        checked = check_row(row, embed_events=embed, limits=store.checks)
                        if isinstance(checked, Refused):
                            counts["invalid"] += 1
                            counts["session_rows"] += checked.session_row  # invalid session rows count as such
                            if len(errors) < max_errors:
                                errors.append(RowError(file=name, line=line, reason=checked.reason))
                        elif isinstance(checked, FastEvent):
                            counts["event_rows"] += 1
                            event_rows.append((seq, 0, checked.session_id, *checked.columns))
                        else:
                            counts["session_rows"] += 1
                            session_rows.append((seq, file_no, line, *checked.columns))
                            embedded += checked.embedded
                            session_id = checked.columns[0]
                            event_rows.extend(
                                (seq, pos, session_id, *columns) for pos, columns in enumerate(checked.event_columns)
                            )
                    worker.submit(load.add_rows, session_rows, event_rows, embedded_events=embedded)
                    progress.update(bytes_before + position(raw))
                    now = time.monotonic()
                    if now - last_log >= 5 or len(chunk) < chunk_rows:
                        last_log = now
                        out.info(
                            "import: %d rows read (%d invalid) from %d/%d file(s), %.0f rows/s; at %s line %d",
                            counts["rows"],
                            counts["invalid"],
                            file_no + 1,
                            len(sources),
                            counts["rows"] / max(now - started, 1e-6),
                            name,
                            chunk[-1][0] if chunk else 0,
                        )

        worker.drain()
        progress.done(bytes_before + file_bytes)
        rows = counts["rows"]

        def share_of(invalid: int) -> float:
            return invalid / rows if rows else 0.0

        out.info(
            "import: %d rows read in %.1f s (%d valid session rows, %d events); finishing the load",
            rows,
            time.monotonic() - started,
            load.sessions_taken,
            load.events_taken,
        )
        outcome = load.finish(
            accept=lambda conflicts: share_of(counts["invalid"] + conflicts) <= invalid_threshold,
            error_limit=max_errors - len(errors),
        )

    for c in outcome.conflict_rows:
        errors.append(
            RowError(
                file=names[c.file_no],
                line=c.line,
                reason=(
                    f"session_id {c.session_id!r} is already registered (or appears earlier in the import) with "
                    "different content; the stored session is kept"
                ),
            )
        )
    invalid = counts["invalid"] + outcome.conflicts
    report = ImportReport(
        files=names,
        **{k: counts[k] for k in ("rows", "session_rows", "event_rows")},
        loaded_sessions=outcome.loaded_sessions,
        loaded_events=outcome.loaded_events,
        duplicate_sessions=outcome.duplicate_sessions,
        duplicate_events=outcome.duplicate_events,
        purged=outcome.purged_events,
        duplicates=outcome.duplicate_sessions + outcome.duplicate_events,
        invalid=invalid,
        invalid_share=round(share_of(invalid), 6),
        invalid_threshold=invalid_threshold,
        errors=sorted(errors, key=lambda e: (names.index(e.file), e.line)),
        errors_truncated=invalid > len(errors),
        loaded=outcome.committed,
        batch_id=outcome.batch_id,
    )
    elapsed = time.monotonic() - started
    if report.loaded:
        out.info(
            "import: done in %.1f s (%.0f rows/s): %d rows, %d new sessions, %d new events, %d duplicates, "
            "%d invalid (%.2f%% <= threshold %.2f%%)",
            elapsed,
            rows / max(elapsed, 1e-6),
            rows,
            report.loaded_sessions,
            report.loaded_events,
            report.duplicates,
            invalid,
            100 * report.invalid_share,
            100 * invalid_threshold,
        )
    else:
        out.warning(
            "import: NOTHING LOADED: %d of %d rows invalid (%.2f%% > threshold %.2f%%)",
            invalid,
            rows,
            100 * report.invalid_share,
            100 * invalid_threshold,
        )
    return report


class _ChunkWorker:
    """Hands chunk n to the load on one worker thread while the caller reads and checks chunk n+1.

    The database's share (``COPY``) then overlaps the reading; the worker waits on the socket without the
    GIL. At most one chunk is pending (memory: two chunks), and only the worker uses the load's
    connection until :meth:`drain` (or the exit) has waited for it.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="import-load")
        self._pending: Future[None] | None = None

    def __enter__(self) -> _ChunkWorker:
        return self

    def submit(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` on the worker once the previous chunk is loaded (its error is raised here)."""
        self.drain()
        self._pending = self._pool.submit(fn, *args, **kwargs)

    def drain(self) -> None:
        """Wait for the pending chunk; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.drain()
            elif self._pending is not None:  # the caller's error is the one raised
                with contextlib.suppress(BaseException):
                    self._pending.result()
        finally:
            self._pool.shutdown(wait=True)
