"""The history import's load into the session store: stage rows, then load them all or nothing.

No Airflow here, and no file reading (see :mod:`clickstream.importing`): this module receives validated
models and owns the SQL side. The queries are in ``include/sql/import*.sql``.

How a load goes:

1. :class:`ImportLoad` opens one connection and creates two private temp tables on it (PostgreSQL ``pg_temp``,
   SQLite's ``temp`` database).
2. :meth:`ImportLoad.stage` appends a chunk of rows to them, each chunk in its own short transaction that
   touches no shared table: ``COPY ... FROM STDIN`` through the psycopg 3 connection under the SQLAlchemy
   engine on PostgreSQL, ``executemany`` on SQLite. Memory is bounded by the chunk, whatever the file size.
3. :meth:`ImportLoad.finish` runs ONE write transaction: it locks the collecting batch exactly as live
   registration does (``FOR SHARE`` on PostgreSQL; SQLite's write lock), inserts the first row of every new
   ``session_id`` into it (``session_number`` from the same identity), marks staged rows whose content
   differs from the stored session as conflicts, inserts the events (duplicates skipped), and asks the
   caller's ``accept`` callback, with the number of conflicts, whether to commit. If not, it rolls back
   and nothing at all was loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json
from sqlalchemy import exc

from clickstream import models
from clickstream.store.batches import open_collecting_batch
from clickstream.store.db import dumps, translate_errors
from clickstream.store.engine import WRITE_OPTION
from clickstream.store.errors import StoreUnavailable
from clickstream.store.rows import content_hash, session_columns

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from clickstream.store.session_store import SessionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedSession:
    """A valid session row of the import.

    :param seq: position of the row in the whole import (all files, in order), unique.
    :param file_no: index of its file in the import's file list.
    :param line: its line (JSON Lines) or row number (Parquet) in that file, 1-based.
    :param session: the registration body.
    """

    seq: int
    file_no: int
    line: int
    session: models.SessionIn


@dataclass(frozen=True)
class StagedEvent:
    """A valid event of the import.

    :param seq: ``seq`` of the row that carried it (an event row, or the session row that embeds it).
    :param pos: position within that row (0 for an event row).
    :param session_id: the session it belongs to (registered or not).
    :param event: the event body.
    """

    seq: int
    pos: int
    session_id: str
    event: models.EventIn


@dataclass(frozen=True)
class ConflictRow:
    """A staged session row whose content differs from the stored session of the same id."""

    file_no: int
    line: int
    session_id: str


@dataclass
class ImportOutcome:
    """What :meth:`ImportLoad.finish` did. Counts of loaded and duplicate rows are 0 when not committed.

    :param committed: whether the load was committed (``accept`` said yes).
    :param batch_id: the collecting batch the new sessions went to (None when no session was new).
    :param conflicts: number of conflicting session rows.
    :param conflict_rows: the first of them, at most the ``error_limit`` given to ``finish``.
    """

    committed: bool
    batch_id: str | None
    conflicts: int
    conflict_rows: list[ConflictRow]
    loaded_sessions: int = 0
    duplicate_sessions: int = 0
    loaded_events: int = 0
    duplicate_events: int = 0


#: Columns of a staged session row, in the order of ``import_copy_sessions`` and :meth:`ImportLoad.stage_rows`.
STAGED_SESSION_COLUMNS = (
    "seq",
    "file_no",
    "line",
    "session_id",
    "search_query",
    "search_results",
    "search_meta",
    "payload_filter",
    "sort_by",
    "user_id",
    "created_at",
    "is_irrelevant",
    "is_payload_search",
    "content_hash",
    "events",
)
#: Columns of a staged event row, in the order of ``import_copy_events`` and :meth:`ImportLoad.stage_rows`.
STAGED_EVENT_COLUMNS = ("seq", "pos", "session_id", "event_id", "object_id", "event_type", "created_at", "meta")


def _event_columns(item: StagedEvent) -> dict[str, Any]:
    e = item.event
    return {
        "seq": item.seq,
        "pos": item.pos,
        "session_id": item.session_id,
        "event_id": e.event_id,
        "object_id": e.object_id,
        "event_type": e.event_type,
        "created_at": e.created_at,
        "meta": dumps(e.meta),
    }


def _json_text(value: Any) -> str | None:
    """JSON text of a validated value for a JSONB staging column (PostgreSQL only), serialised by
    pydantic-core. It may differ from :func:`clickstream.store.db.dumps` in spelling only (number
    format, escapes), never in value, and the jsonb input function normalises the spelling. SQLite stores
    the text as is, so SQLite keeps ``dumps``."""
    return None if value is None else to_json(value).decode()


def _session_copy_row(item: StagedSession) -> tuple[Any, ...]:
    """A staged session as a ``import_copy_sessions`` row (its column order): the values of
    :func:`session_columns`."""
    s = item.session
    return (
        item.seq,
        item.file_no,
        item.line,
        s.session_id,
        s.search_query,
        _json_text(s.search_results),
        _json_text(s.search_meta),
        _json_text(s.payload_filter),
        _json_text(s.sort_by),
        s.user_id,
        s.created_at,
        s.is_irrelevant,
        s.is_payload_search,
        content_hash(s),
    )


def _event_copy_row(item: StagedEvent) -> tuple[Any, ...]:
    """A staged event as a ``import_copy_events`` row (its column order): the values of :func:`_event_columns`."""
    e = item.event
    return (
        item.seq,
        item.pos,
        item.session_id,
        e.event_id,
        e.object_id,
        e.event_type,
        e.created_at,
        _json_text(e.meta),
    )


class ImportLoad:
    """One import load into ``store``: use as a context manager, :meth:`stage` chunks, then :meth:`finish`.

    The staging tables belong to this object's connection and are dropped on exit. An ``ImportLoad`` is not
    thread-safe and loads once.

    :param store: the session store to load into.
    """

    def __init__(self, store: SessionStore):
        self.store = store
        self._conn: Connection | None = None
        self._finished = False
        self.staged_sessions = 0
        self.staged_events = 0

    # ------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ImportLoad:
        try:
            with translate_errors(self.store.dialect):
                self._conn = self.store.engine.connect()
                with self._conn.begin():
                    for query in (
                        "import_drop_stage_sessions",
                        "import_drop_stage_events",
                        "import_create_stage_sessions",
                        "import_index_stage_sessions",
                        "import_create_stage_events",
                    ):
                        self._run(query)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._conn is not None and not self._conn.closed:
                if self._conn.in_transaction():
                    self._conn.rollback()
                self._conn.execution_options(**{WRITE_OPTION: False})
                with self._conn.begin():
                    self._run("import_drop_stage_sessions")
                    self._run("import_drop_stage_events")
        except exc.SQLAlchemyError:  # the connection is gone: its temp tables went with it
            log.debug("could not drop the import staging tables", exc_info=True)
        finally:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _active(self) -> Connection:
        assert self._conn is not None, "use ImportLoad as a context manager"
        return self._conn

    def _run(self, query: str, /, params: Any = None) -> Any:
        return self._active().execute(self.store.db.clause(query), params if params is not None else {})

    # -------------------------------------------------------------------------------- staging

    def stage(self, sessions: Sequence[StagedSession], events: Sequence[StagedEvent]) -> None:
        """Append valid rows, as validated models, to the staging tables (see :meth:`stage_rows`)."""
        if self.store.dialect == "postgresql":
            session_rows: list[Any] = [(*_session_copy_row(s), None) for s in sessions]
            event_rows: list[Any] = [_event_copy_row(e) for e in events]
        else:
            session_rows = [(s.seq, s.file_no, s.line, *session_columns(s.session).values(), None) for s in sessions]
            event_rows = [tuple(_event_columns(e).values()) for e in events]
        self.stage_rows(session_rows, event_rows)

    def stage_rows(
        self, sessions: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]], *, embedded_events: int = 0
    ) -> None:
        """Append valid rows to the staging tables (one short transaction; nothing shared is touched).

        :param sessions: rows in :data:`STAGED_SESSION_COLUMNS` order: ``seq``, ``file_no``, ``line``, then
            the stored columns of :func:`clickstream.store.rows.session_columns` (JSON as text, the content hash),
            then ``events``: the row's embedded events as a JSON array of event bodies (``event_id``,
            ``object_id``, ``event_type``, ``created_at``, ``meta``; the load expands it in SQL), or None.
        :param events: rows in :data:`STAGED_EVENT_COLUMNS` order (``meta`` as JSON text).
        :param embedded_events: how many events the ``events`` arrays of ``sessions`` hold (for the counts).
        """
        if self._finished:
            raise RuntimeError("this import load is finished")
        if not sessions and not events:
            return
        with translate_errors(self.store.dialect), self._active().begin():
            if self.store.db.has("import_copy_sessions"):
                self._copy("import_copy_sessions", sessions)
                self._copy("import_copy_events", events)
            else:
                if sessions:
                    self._run(
                        "import_stage_session", [dict(zip(STAGED_SESSION_COLUMNS, r, strict=True)) for r in sessions]
                    )
                if events:
                    self._run("import_stage_event", [dict(zip(STAGED_EVENT_COLUMNS, r, strict=True)) for r in events])
        self.staged_sessions += len(sessions)
        self.staged_events += len(events) + embedded_events

    def _copy(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        """``COPY ... FROM STDIN`` of ``rows`` (tuples in the query's column order) through the psycopg 3
        connection under this SQLAlchemy connection (same transaction)."""
        if not rows:
            return
        driver: Any = self._active().connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(self.store.db.queries[query]) as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    # -------------------------------------------------------------------------------- loading

    def finish(self, accept: Callable[[int], bool], error_limit: int) -> ImportOutcome:
        """Load the staged rows in one transaction; commit only if ``accept(conflicts)`` is true.

        :param accept: called with the number of conflicting session rows once the load is done but not
            committed; returning False rolls everything back.
        :param error_limit: how many conflicting rows to return in :attr:`ImportOutcome.conflict_rows`.
        """
        if self._finished:
            raise RuntimeError("this import load is finished")
        self._finished = True
        conn = self._active()
        now = self.store.clock()
        started = time.monotonic()
        with translate_errors(self.store.dialect):
            if self.store.db.has("import_analyze_stage"):  # planner statistics for the joins below (PostgreSQL)
                with conn.begin():
                    self._run("import_analyze_stage")
            conn.execution_options(**{WRITE_OPTION: True})
            tx = conn.begin()
            try:
                if self.store.db.has("import_load_settings"):  # PostgreSQL: no JIT (see the query)
                    self._run("import_load_settings")
                batch_id, loaded_sessions = None, 0
                if self.staged_sessions:
                    if self._run("import_any_new_session").scalar_one():
                        batch_id = self._lock_collecting_batch(now)
                        loaded_sessions = self._run(
                            "import_insert_sessions", {"batch_id": batch_id, "now": now}
                        ).rowcount
                    self._run("import_mark_conflicts")
                    conflicts = self._run("import_conflict_count").scalar_one()
                    conflict_rows = [
                        ConflictRow(**r)
                        for r in self._run("import_conflict_rows", {"limit": max(error_limit, 0)}).mappings()
                    ]
                else:
                    conflicts, conflict_rows = 0, []
                valid = self._run("import_staged_counts").mappings().one()
                loaded_events = self._run("import_insert_events", {"now": now}).rowcount
                outcome = ImportOutcome(
                    committed=False,
                    batch_id=batch_id if loaded_sessions else None,
                    conflicts=conflicts,
                    conflict_rows=conflict_rows,
                    loaded_sessions=loaded_sessions,
                    duplicate_sessions=valid["sessions"] - loaded_sessions,
                    loaded_events=loaded_events,
                    duplicate_events=valid["events"] - loaded_events,
                )
                if accept(conflicts):
                    tx.commit()
                    outcome.committed = True
                    log.info(
                        "import load committed: %d new sessions (batch %s), %d new events, %d duplicate "
                        "sessions, %d duplicate events, %d conflicts, in %.1f s",
                        loaded_sessions,
                        outcome.batch_id,
                        loaded_events,
                        outcome.duplicate_sessions,
                        outcome.duplicate_events,
                        conflicts,
                        time.monotonic() - started,
                    )
                else:
                    tx.rollback()
                    log.info("import load rolled back: nothing loaded (%d conflicts)", conflicts)
                    outcome = ImportOutcome(
                        committed=False, batch_id=None, conflicts=conflicts, conflict_rows=conflict_rows
                    )
                return outcome
            finally:
                if tx.is_active:
                    tx.rollback()

    def _lock_collecting_batch(self, now: int) -> str:
        """The collecting batch, locked against release until the load ends; opened if there is none."""
        for _ in range(5):
            batch_id = self._run("import_collecting_batch").scalar()
            if batch_id is not None:
                return batch_id
            open_collecting_batch(self.store.db, self._active(), self.store.clock)  # as live registration does
        raise StoreUnavailable("could not obtain a collecting batch; the store is under heavy contention")
