"""The history import: clickstream history from JSON Lines or Parquet files. No Airflow here.

Row shapes (the REST bodies; see ``docs/import-and-erasure.md``):

* a **session row** is a ``POST /session`` registration body (:class:`clickstream.models.SessionIn`),
  optionally with ``events``: a list of :class:`clickstream.models.EventIn` bodies of that session;
* an **event row** is one :class:`clickstream.models.EventIn` body plus its ``session_id``.

A row with an ``event_id`` key is an event row, any other row a session row, so one file may hold both.
Rows are validated with the same models as live ingestion, milliseconds check included, but without the
live time window (history is old by definition). A valid row in the usual shape takes the fast path of
:mod:`clickstream.import_fast` (decoded and checked in C, no pydantic object); every other row goes
through the models (:func:`validate_row`), which give the reason of a refusal.

Threshold, and how memory stays bounded: the files are read **once**, in chunks of ``chunk_rows`` rows;
each chunk is validated and its valid rows go to the load (:class:`clickstream.store.import_load.ImportLoad`)
on a worker thread while the next chunk is read: PostgreSQL COPYs them into the store's tables inside the
load transaction, SQLite stages them in temporary tables. Once every file is read, the load commits only if
``invalid / rows <= invalid_threshold`` (conflicts, a session whose content differs from the stored one,
included); otherwise it rolls back and nothing is loaded. So neither the file nor its valid rows are ever
held in memory, and the decision covers the whole import exactly.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, cast

import msgspec
from pydantic import BaseModel, Field

from clickstream import models
from clickstream.import_fast import FastEvent, convert_row, decode_line
from clickstream.progress import Progress
from clickstream.store.checks import validate
from clickstream.store.errors import InvalidInput
from clickstream.store.import_load import ImportLoad, StagedEvent, StagedSession

if TYPE_CHECKING:
    from clickstream.store.session_store import SessionStore

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

Format = Literal["jsonl", "parquet"]
#: File name endings picked from a folder, per format (``.gz`` JSON Lines are decompressed on the fly).
FILE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"),
    "parquet": (".parquet", ".pq"),
}
#: A source: a display name (path or URI) and a callable opening it as a binary file object.
Source = tuple[str, Callable[[], AbstractContextManager[IO[bytes]]]]

DEFAULT_INVALID_THRESHOLD = 0.01
DEFAULT_MAX_ERRORS = 100
DEFAULT_CHUNK_ROWS = 5000

#: Fields holding JSON objects/lists: in Parquet they may be nested columns or strings holding JSON.
_JSON_FIELDS = ("search_results", "search_meta", "payload_filter", "sort_by", "events", "meta")
_JSON_DECODE = msgspec.json.Decoder().decode


class _HistoryEvent(models.EventIn):
    """An event of a history file: as live, but ``created_at`` is required (a time of receipt, which live
    ingestion uses when it is omitted, means nothing for history)."""

    created_at: models.Millis


class _SessionRow(models.SessionIn):
    """A session row: the registration body, plus the session's events if the file carries them there.
    ``created_at`` is required, as for events."""

    created_at: models.Millis
    events: list[_HistoryEvent] = Field(default_factory=list)


class _EventRow(_HistoryEvent):
    """An event row: the event body plus the session it belongs to."""

    session_id: models.SessionId


class RowError(BaseModel):
    """An invalid row: where it is and why it was refused."""

    file: str
    line: int = Field(description="line (JSON Lines) or row number (Parquet), 1-based")
    reason: str


class ImportReport(BaseModel):
    """What an import did. When ``loaded`` is false nothing was written and the load counts are 0."""

    files: list[str]
    rows: int = Field(description="rows read (blank lines excluded)")
    session_rows: int = 0
    event_rows: int = 0
    loaded_sessions: int = Field(0, description="sessions registered by this import")
    loaded_events: int = Field(0, description="events stored by this import (embedded ones included)")
    duplicates: int = Field(0, description="duplicate_sessions + duplicate_events")
    duplicate_sessions: int = Field(0, description="session rows already registered with the same content")
    duplicate_events: int = Field(0, description="events whose (session_id, event_id) was already stored")
    invalid: int = Field(0, description="invalid rows: unreadable, failing validation, or in conflict")
    invalid_share: float = 0.0
    invalid_threshold: float
    errors: list[RowError] = Field(default_factory=list, description="the first max_errors invalid rows")
    errors_truncated: bool = False
    loaded: bool
    batch_id: str | None = Field(None, description="collecting batch the new sessions went to")


def validate_row(row: dict[str, Any]) -> _SessionRow | _EventRow:
    """The live models' decision on a parsed row: an event row (it has an ``event_id`` key) or a session
    row, validated; :class:`InvalidInput` naming the field otherwise. This is the reference the fast path
    (:mod:`clickstream.import_fast`) agrees with, and the path of every row the fast path does not take."""
    return validate(_EventRow, row) if "event_id" in row else validate(_SessionRow, row)


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


def local_sources(*paths: str) -> list[Source]:
    """Sources for local files (tests, scripts); the Airflow hook builds them from ``ObjectStoragePath``."""

    def opener(path: str) -> Callable[[], IO[bytes]]:
        return lambda: open(path, "rb")

    return [(str(p), opener(p)) for p in paths]


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

    def refuse(name: str, line: int, reason: str) -> None:
        counts["invalid"] += 1
        if len(errors) < max_errors:
            errors.append(RowError(file=name, line=line, reason=reason))

    with ImportLoad(store, max_conflict_rows=max_errors) as load, _ChunkWorker() as worker:
        embed = load.embeds_events
        file_bytes = 0
        for file_no, (name, opener) in enumerate(sources):
            bytes_before += file_bytes  # the previous file's size
            out.info("import: reading %s (%s)", name, fmt)
            with opener() as raw, _decompressed(raw, name, fmt) as fileobj:
                file_bytes = _size(raw)
                for chunk in _read_chunks(fileobj, fmt, chunk_rows):
                    session_rows: list[tuple[Any, ...]] = []
                    event_rows: list[tuple[Any, ...]] = []
                    sessions: list[StagedSession] = []
                    events: list[StagedEvent] = []
                    embedded = 0  # events embedded in session_rows (as JSON arrays)
                    for line, row in chunk:
                        counts["rows"] += 1
                        seq = counts["rows"]
                        fast = (
                            decode_line(row, embed_events=embed)
                            if isinstance(row, bytes)
                            else convert_row(row, finite=isinstance(row, _FiniteRow), embed_events=embed)
                            if isinstance(row, dict)
                            else None
                        )
                        if fast is not None:  # valid: loaded as columns, no model built
                            if isinstance(fast, FastEvent):
                                counts["event_rows"] += 1
                                event_rows.append((seq, 0, fast.session_id, *fast.columns))
                            else:
                                counts["session_rows"] += 1
                                session_rows.append((seq, file_no, line, *fast.columns))
                                if embed:
                                    embedded += fast.events
                                else:
                                    session_id = fast.columns[0]
                                    event_rows.extend(
                                        (seq, pos, session_id, *columns)
                                        for pos, columns in enumerate(fast.event_columns)
                                    )
                            continue
                        # the models decide, and give the reason of a refusal
                        if isinstance(row, _ParquetLine):  # judged the dict way, as every Parquet row was
                            row = row.dict_row()
                        elif isinstance(row, bytes):
                            row = _parse_line(row)
                        if isinstance(row, str):
                            refuse(name, line, row)
                            continue
                        is_event = "event_id" in row
                        try:
                            body = validate_row(row)
                        except InvalidInput as err:
                            if not is_event:  # invalid session rows count as session rows (not events)
                                counts["session_rows"] += 1
                            refuse(name, line, err.detail)
                            continue
                        if isinstance(body, _EventRow):
                            counts["event_rows"] += 1
                            events.append(StagedEvent(seq, 0, body.session_id, _validated(models.EventIn, body)))
                        else:
                            counts["session_rows"] += 1
                            session = _validated(models.SessionIn, body)
                            sessions.append(StagedSession(seq, file_no, line, session))
                            events.extend(
                                StagedEvent(seq, pos, session.session_id, _validated(models.EventIn, e))
                                for pos, e in enumerate(body.events)
                            )
                    worker.submit(_load_chunk, load, session_rows, event_rows, embedded, sessions, events)
                    progress.update(bytes_before + _position(raw))
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


# ------------------------------------------------------------------------------------------ loading


def _load_chunk(
    load: ImportLoad,
    session_rows: list[tuple[Any, ...]],
    event_rows: list[tuple[Any, ...]],
    embedded: int,
    sessions: list[StagedSession],
    events: list[StagedEvent],
) -> None:
    if sessions or events:  # rows the models validated: merged into file order
        more_sessions, more_events = load.model_rows(sessions, events)
        session_rows = sorted(session_rows + more_sessions, key=_by_seq)
        event_rows = sorted(event_rows + more_events, key=_by_seq_pos)
    load.add_rows(session_rows, event_rows, embedded_events=embedded)


_by_seq = itemgetter(0)
_by_seq_pos = itemgetter(0, 1)


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

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the worker once the previous chunk is loaded (its error is raised here)."""
        self.drain()
        self._pending = self._pool.submit(fn, *args)

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


# ------------------------------------------------------------------------------------------ reading


def _position(raw: IO[bytes]) -> int:
    """How far into ``raw`` (the file as stored, before decompression) reading has got; 0 if unknown."""
    try:
        return raw.tell()
    except (OSError, ValueError, AttributeError):
        return 0


def _size(raw: IO[bytes]) -> int:
    """The size of ``raw`` in bytes (its end position); 0 if it cannot seek."""
    try:
        position = raw.tell()
        end = raw.seek(0, 2)
        raw.seek(position)
        return end
    except (OSError, ValueError, AttributeError):
        return 0


@contextlib.contextmanager
def _decompressed(raw: IO[bytes], name: str, fmt: str) -> Iterator[IO[bytes]]:
    if fmt == "jsonl" and name.endswith(".gz"):
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield cast(IO[bytes], unzipped)
    else:
        yield raw


def _validated(model: type[M], row: BaseModel) -> M:
    """``row`` (a validated subclass-shaped row) as ``model`` without validating it a second time."""
    return model.model_construct(**{name: getattr(row, name) for name in model.model_fields})


def _read_chunks(fileobj: IO[bytes], fmt: str, chunk_rows: int) -> Iterator[list[tuple[int, dict | str | bytes]]]:
    """Rows of a file in chunks: ``(line, row)``, where ``row`` is a dict, the reason it is unreadable, or
    (JSON Lines) the raw line."""
    reader = _jsonl_rows(fileobj) if fmt == "jsonl" else _parquet_rows(fileobj, chunk_rows)
    chunk: list[tuple[int, dict | str | bytes]] = []
    for item in reader:
        chunk.append(item)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_rows(fileobj: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSON Lines file, as bytes; line numbers are physical (blank lines count)."""
    for line, raw in enumerate(fileobj, start=1):
        if raw.strip():
            yield line, raw


def _parse_line(raw: bytes) -> dict | str:
    """One JSON Lines line as a dict or, if unreadable, the reason."""
    try:
        row = json.loads(raw)
    except UnicodeDecodeError as err:
        return f"not UTF-8 text: {err.reason} at byte {err.start}"
    except json.JSONDecodeError as err:
        return f"invalid JSON: {err.msg} (column {err.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    return row if isinstance(row, dict) else f"a row must be a JSON object, got {type(row).__name__}"


def _parquet_rows(fileobj: IO[bytes], chunk_rows: int) -> Iterator[tuple[int, dict | str | bytes]]:
    """Parquet rows, one record batch at a time; ``line`` is the 1-based row number.

    Null values count as absent (so one file may mix session and event rows); object fields may be nested
    columns or strings holding JSON; timestamp columns become milliseconds since epoch. In a record batch of
    plain columns (text, JSON text, integers, booleans), a row comes as the JSON text of the row (see
    :func:`_batch_lines`), which takes the JSON Lines fast path; any other row comes as a dict. A dict whose
    every object came from a JSON string decoded by msgspec (which refuses NaN and infinities) is a
    :class:`_FiniteRow`: the fast path then skips its walk for non-finite numbers.
    """
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(fileobj)
    except Exception as err:  # pyarrow raises several types for a non-Parquet file
        raise InvalidInput.field("path", f"not a readable Parquet file: {err}") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        lines = _batch_lines(batch)
        if lines is None:  # the whole batch the dict way: converted once
            for record in batch.to_pylist():
                number += 1
                yield number, _as_row(record)
            continue
        for i, line in enumerate(lines):
            number += 1
            yield number, (_ParquetLine(line, batch, i) if line is not None else _dict_row(batch, i))


def _dict_row(batch: Any, index: int) -> dict | str:
    """Row ``index`` of a Parquet record batch the dict way (see :func:`_as_row`)."""
    return _as_row(batch.slice(index, 1).to_pylist()[0])


def _as_row(record: dict[str, Any]) -> dict | str:
    """A Parquet record as a row dict (a :class:`_FiniteRow` when it can be), or the reason it is unreadable."""
    unchecked = [False]
    row = _parquet_row(record, unchecked)
    return row if isinstance(row, str) or unchecked[0] else _FiniteRow(row)


class _ParquetLine(bytes):
    """A Parquet row as JSON text (:func:`_batch_lines`), for the fast path. A row the fast path does not
    take is judged the dict way (:meth:`dict_row`) like any Parquet row, so its outcome and the reason of a
    refusal do not depend on which way its batch went (the dict way also reads embedded events' null values
    as absent and their JSON-string ``meta``)."""

    _batch: Any
    _row: int

    def __new__(cls, text: bytes, batch: Any, row: int) -> _ParquetLine:
        line = super().__new__(cls, text)
        line._batch, line._row = batch, row
        return line

    def dict_row(self) -> dict | str:
        return _dict_row(self._batch, self._row)


_JSON_RAW = msgspec.json.Decoder(msgspec.Raw).decode  # checks one JSON text, builds no Python object
_JSON_TEXT = msgspec.json.Encoder().encode


def _batch_lines(batch: Any) -> list[bytes | None] | None:
    """Each row of a Parquet record batch as the JSON object text a JSON Lines file would hold for it, or
    None for the rows (or, when a column is not plain, the batch) that go the dict way.

    Plain columns: text (a JSON-string column's text is put in as it is, once msgspec has found it to be
    exactly one JSON value: anything else, such as invalid JSON, NaN or trailing text, sends the row the
    dict way, which gives the reason), integers, booleans, all-null. Nulls are left out, as absent. A row the
    fast path takes from this text has the values the dict way would give it; any other is judged the dict
    way (:class:`_ParquetLine`).
    """
    import pyarrow as pa

    if len(set(batch.schema.names)) != len(batch.schema.names):  # a repeated column name: the dict way
        return None
    columns: list[list[bytes | None]] = []
    slow: set[int] = set()
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        kind = column.type
        key = _JSON_TEXT(name) + b":"
        values = column.to_pylist()
        if pa.types.is_null(kind):
            continue
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            parts: list[bytes | None] = []
            as_json = name in _JSON_FIELDS
            for i, value in enumerate(values):
                if value is None:
                    parts.append(None)
                    continue
                try:
                    if as_json:
                        text = value.encode()
                        _JSON_RAW(text)
                    else:
                        text = _JSON_TEXT(value)
                except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
                    slow.add(i)
                    parts.append(None)
                    continue
                parts.append(key + text)
            columns.append(parts)
        elif pa.types.is_integer(kind):
            columns.append([None if v is None else key + str(v).encode() for v in values])
        elif pa.types.is_boolean(kind):
            columns.append([None if v is None else key + (b"true" if v else b"false") for v in values])
        else:
            return None
    # bytes parts are never empty, so filter(None, ...) leaves out exactly the nulls
    lines: list[bytes | None] = [b"{" + b",".join(filter(None, parts)) + b"}" for parts in zip(*columns, strict=True)]
    if not columns:
        lines = [b"{}"] * batch.num_rows
    for i in slow:
        lines[i] = None
    return lines


class _FiniteRow(dict):
    """A Parquet row known to hold no NaN or infinite number (see :func:`_parquet_rows`)."""


def _decode_json_column(value: str, unchecked: list[bool]) -> Any:
    """A JSON string column's value: msgspec first (C; it refuses NaN, infinities, lone surrogates), else
    ``json.loads`` (which takes them, for the models to refuse with their message; its error is the row's
    reason). Both give the same value for what msgspec takes."""
    try:
        return _JSON_DECODE(value)
    except (msgspec.DecodeError, RecursionError):
        unchecked[0] = True
        return json.loads(value)


def _parquet_row(record: dict[str, Any], unchecked: list[bool], decoded: bool = False) -> dict | str:
    """One Parquet record as a row dict, or the reason it is unreadable; sets ``unchecked[0]`` when a value
    may hold a non-finite number (from a nested column or a float column, or JSON that only ``json.loads``
    took). ``decoded``: ``record`` is an event of a JSON string column (its values came from that JSON)."""
    row = {}
    for key, value in record.items():
        if value is None:
            continue
        from_json = decoded
        if key in _JSON_FIELDS and isinstance(value, str):
            try:
                value = _decode_json_column(value, unchecked)
            except json.JSONDecodeError as err:
                return f"{key}: invalid JSON in string column: {err.msg} (column {err.colno})"
            except RecursionError:
                return f"{key}: invalid JSON in string column: nested too deeply"
            from_json = True
        elif isinstance(value, datetime):
            value = _millis(value)
        elif not decoded and isinstance(value, (dict, list, float)):
            unchecked[0] = True
        if key == "events" and isinstance(value, list):
            value = [_parquet_row(e, unchecked, from_json) if isinstance(e, dict) else e for e in value]
            bad = next((e for e in value if isinstance(e, str)), None)
            if bad is not None:
                return f"events: {bad}"
        row[key] = value
    return row


def _millis(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
