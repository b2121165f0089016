"""The history import's load into the session store: valid rows in, all or nothing.

No Airflow here, and no file reading or row checks (see :mod:`clickstream.history`): this module receives the
valid rows of each chunk and owns the SQL side. The queries are in ``include/sql/import.<dialect>.sql``.

Both loads end in ONE write transaction that commits only if the caller's ``accept`` callback, given the
number of conflicts, says so (:meth:`HistoryLoad.finish`); otherwise it rolls back and nothing at all was
loaded. Both store the first row of each new ``session_id`` in file order into the collecting batch, locked
exactly as live registration locks it, and skip stored and repeated sessions and events; a session row whose
content differs from the stored session is a conflict. They differ in how rows reach the tables, and
:func:`open_load` picks one by the dialect's queries (``Database.has``):

* :class:`DirectLoad`, PostgreSQL (``import.postgresql.sql``): the load transaction opens with the first
  chunk. Each chunk, while the caller reads the next one, asks which of its sessions and events are stored or
  erased (three indexed reads), decides each row in Python (:func:`plan_chunk`), and COPYs the new rows
  straight into ``cs_session`` and ``cs_event``: every row is written once, as by ``COPY FROM``. Memory is
  bounded by the chunk. The transaction, and so the lock on the collecting batch, lasts from the first chunk
  to the commit: about the whole import (see ``docs/import-and-erasure.md`` for what waits on it).
* :class:`StagedLoad`, SQLite (``import.sqlite.sql``): each chunk is staged into temp tables in its own short
  transaction, and the load transaction runs once, in :meth:`HistoryLoad.finish`, over all the staged rows,
  in SQL: SQLite has one writer, and a write transaction held for the whole import would stop every live
  write for as long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import exc

from clickstream.store.batches import open_collecting_batch
from clickstream.store.db import translate_errors
from clickstream.store.engine import WRITE_OPTION
from clickstream.store.errors import StoreUnavailable
from clickstream.store.rows import EVENT_COLUMNS, SESSION_COLUMNS

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from clickstream.store.session_store import SessionStore

log = logging.getLogger(__name__)

#: How often a chunk is read and copied again when a live write of one of its keys commits in between.
CHUNK_ATTEMPTS = 5

#: Columns of a session row given to :meth:`HistoryLoad.add_rows` (staged as such on SQLite): where it is in the
#: import, the stored columns (:data:`clickstream.store.rows.SESSION_COLUMNS`), and its embedded events.
SESSION_ROW_COLUMNS = ("seq", "file_no", "line", *SESSION_COLUMNS, "events")
#: Columns of an event row given to :meth:`HistoryLoad.add_rows`.
EVENT_ROW_COLUMNS = ("seq", "pos", "session_id", *EVENT_COLUMNS)
#: Where the stored columns are in a session row, and where ``session_id`` and the content hash are.
STORED = slice(3, 3 + len(SESSION_COLUMNS))
SESSION_ID, CONTENT_HASH = 3 + SESSION_COLUMNS.index("session_id"), 3 + SESSION_COLUMNS.index("content_hash")


@dataclass(frozen=True)
class ConflictRow:
    """A session row of the import whose content differs from the stored session of the same id."""

    file_no: int
    line: int
    session_id: str


@dataclass
class ImportOutcome:
    """What :meth:`HistoryLoad.finish` did. Counts of loaded and duplicate rows are 0 when not committed.

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
    #: events not stored because their session was in a purged batch and is not registered (again)
    purged_events: int = 0


def open_load(store: SessionStore, *, max_conflict_rows: int = 100) -> HistoryLoad:
    """The load of ``store``'s dialect: :class:`DirectLoad` where the dialect has the COPY queries (PostgreSQL),
    else :class:`StagedLoad`. Use it as a context manager."""
    kind = DirectLoad if store.db.has("import_copy_new_sessions") else StagedLoad
    return kind(store, max_conflict_rows=max_conflict_rows)


class HistoryLoad:
    """One import load into ``store``: use as a context manager, :meth:`add_rows` per chunk, then :meth:`finish`.

    Not thread-safe (one thread at a time: the caller hands chunks to one worker thread), and loads once. The
    two loads (:func:`open_load`) differ in how a chunk is taken and when the load transaction runs; the
    outcome is the same.

    :param store: the session store to load into.
    :param max_conflict_rows: how many conflicting rows (where they are) to keep, the first in file order;
        :meth:`finish` returns at most this many.
    """

    #: Whether a session row's embedded events come as one JSON array in its ``events`` column (the staged load
    #: expands it in SQL); else they are event rows like any other (the direct load copies them).
    embeds_events: ClassVar[bool]

    def __init__(self, store: SessionStore, *, max_conflict_rows: int = 100):
        self.store = store
        self.db = store.db
        self.max_conflict_rows = max_conflict_rows
        self._conn: Connection | None = None
        self._load_tx: Any = None  # the load transaction (a SQLAlchemy RootTransaction) once begun
        self._committed = False
        self._finished = False
        self.sessions_taken = 0
        self.events_taken = 0
        self._loaded = _Loaded()

    # ------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> HistoryLoad:
        try:
            self._conn = self.db.connect()
            with translate_errors(self.db.dialect):
                self._prepare()
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
                self._clean_up()
        except exc.SQLAlchemyError:  # the connection is gone: its temp tables went with it
            log.debug("could not clean up after the import load", exc_info=True)
        finally:
            self._close()

    def _prepare(self) -> None:
        """Set-up on the load's connection before the first chunk."""

    def _clean_up(self) -> None:
        """Clean-up on the load's connection (outside any transaction) when the load ends, committed or not."""

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _active(self) -> Connection:
        assert self._conn is not None, "use the import load as a context manager"
        return self._conn

    def _run(self, query: str, /, params: Any = None) -> Any:
        return self._active().execute(self.db.clause(query), params if params is not None else {})

    # --------------------------------------------------------------------------------- chunks

    def add_rows(
        self, sessions: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]], *, embedded_events: int = 0
    ) -> None:
        """Take one chunk of valid rows: load it (direct load, in the load transaction, begun by the first
        chunk) or stage it (staged load, in a short transaction of its own that touches no shared table).

        :param sessions: rows in :data:`SESSION_ROW_COLUMNS` order, by ``seq``: ``seq``, ``file_no``, ``line``,
            then the stored columns of :func:`clickstream.store.rows.session_row` (JSON as text, the content
            hash), then ``events``: when :attr:`embeds_events`, the row's embedded events as a JSON array of
            event bodies (``event_id``, ``object_id``, ``event_type``, ``created_at``, ``meta``), or None.
        :param events: rows in :data:`EVENT_ROW_COLUMNS` order (``meta`` as JSON text), by ``(seq, pos)``.
        :param embedded_events: how many events the ``events`` arrays of ``sessions`` hold (for the counts).
        """
        if self._finished:
            raise RuntimeError("this import load is finished")
        if not sessions and not events:
            return
        with translate_errors(self.db.dialect):
            self._take(sessions, events)
        self.sessions_taken += len(sessions)
        self.events_taken += len(events) + embedded_events

    def _take(self, sessions: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _begin_load(self) -> Any:
        """Begin the load transaction (a write transaction; PostgreSQL: holding off releases until it ends, and
        with the tables taken as an INSERT does)."""
        conn = self._active()
        conn.execution_options(**{WRITE_OPTION: True})
        tx = conn.begin()
        self._loaded.now = self.store.clock()  # registered_at / received_at of every loaded row
        self._loaded.began = time.monotonic()
        if self.db.has("import_hold_releases"):  # a release waits for this load: late_events stays exact
            self._run("import_hold_releases")
        if self.db.has("import_lock_tables"):
            self._run("import_lock_tables")
        return tx

    # ---------------------------------------------------------------------------------- finish

    def _load_rest(self) -> None:
        """What is left to load once every chunk is taken, in the load transaction (begun here if need be)."""

    def finish(self, accept: Callable[[int], bool], error_limit: int) -> ImportOutcome:
        """Load what is still staged (staged load: everything), then commit only if ``accept(conflicts)``.

        :param accept: called with the number of conflicting session rows once the load is done but not
            committed; returning False rolls everything back.
        :param error_limit: how many conflicting rows to return in :attr:`ImportOutcome.conflict_rows`
            (at most ``max_conflict_rows``).
        """
        if self._finished:
            raise RuntimeError("this import load is finished")
        self._finished = True
        with translate_errors(self.db.dialect):
            self._load_rest()
            tx, loaded = self._load_tx, self._loaded
            try:
                conflict_rows = loaded.conflict_rows[: max(error_limit, 0)]
                if not accept(loaded.conflicts):
                    if tx is not None:
                        tx.rollback()
                    log.info("import load rolled back: nothing loaded (%d conflicts)", loaded.conflicts)
                    return ImportOutcome(
                        committed=False, batch_id=None, conflicts=loaded.conflicts, conflict_rows=conflict_rows
                    )
                if tx is not None:
                    tx.commit()
                self._committed = True
                open_s = time.monotonic() - loaded.began if tx is not None else 0.0
                outcome = ImportOutcome(
                    committed=True,
                    batch_id=loaded.batch_id if loaded.sessions else None,
                    conflicts=loaded.conflicts,
                    conflict_rows=conflict_rows,
                    loaded_sessions=loaded.sessions,
                    duplicate_sessions=loaded.valid_sessions - loaded.sessions,
                    loaded_events=loaded.events,
                    duplicate_events=loaded.valid_events - loaded.events - loaded.purged,
                    purged_events=loaded.purged,
                )
                log.info(
                    "import load committed: %d new sessions (batch %s), %d new events, %d duplicate "
                    "sessions, %d duplicate events, %d conflicts; the load transaction was open %.1f s",
                    outcome.loaded_sessions,
                    outcome.batch_id,
                    outcome.loaded_events,
                    outcome.duplicate_sessions,
                    outcome.duplicate_events,
                    outcome.conflicts,
                    open_s,
                    extra={"transaction_s": open_s},
                )
                return outcome
            finally:
                if tx is not None and tx.is_active:
                    tx.rollback()

    def _lock_collecting_batch(self) -> str:
        """The collecting batch, locked against release until the load ends; opened if there is none."""
        for _ in range(5):
            batch_id = self._run("import_collecting_batch").scalar()
            if batch_id is not None:
                return batch_id
            self._open_batch()
        raise StoreUnavailable("could not obtain a collecting batch; the store is under heavy contention")

    def _open_batch(self) -> None:
        """Open a collecting batch, as live registration does."""
        raise NotImplementedError


class DirectLoad(HistoryLoad):
    """PostgreSQL's load: each chunk decided against the stored rows and COPYed, in the one load transaction."""

    embeds_events = False

    def __init__(self, store: SessionStore, *, max_conflict_rows: int = 100):
        super().__init__(store, max_conflict_rows=max_conflict_rows)
        self._opened_batch = False  # this load opened the collecting batch (committed on its own)

    def _take(self, sessions: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> None:
        if self._load_tx is None:
            self._load_tx = self._begin_load()
        self._copy_chunk(sessions, events)

    def _copy_chunk(self, sessions: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> None:
        """Decide each row of the chunk against the stored rows and COPY the new ones.

        The COPYs run in a savepoint. If a live write of one of the chunk's keys commits between the reads and
        the COPY (unique violation), or holds a key the COPY waits for while waiting for a key of this import
        (a deadlock, where PostgreSQL may pick the import to fail), the chunk is rolled back to the savepoint,
        read and copied again; rows copied by earlier chunks stay.
        """
        loaded = self._loaded
        session_ids = list({r[SESSION_ID] for r in sessions})
        event_session_ids = list({r[2] for r in events})
        for attempt in range(1, CHUNK_ATTEMPTS + 1):
            stored: dict[str, str] = {r[0]: r[1] for r in self._run("import_stored_sessions", {"ids": session_ids})}
            erased = set(
                self._run("import_erased_sessions", {"ids": list({*session_ids, *event_session_ids})}).scalars()
            )
            stored_events = {(r[0], r[1]) for r in self._run("import_stored_events", {"ids": event_session_ids})}
            purged = set(self._run("import_purged_sessions", {"ids": event_session_ids}).scalars())
            plan = plan_chunk(sessions, events, stored, erased, stored_events, purged)
            if plan.sessions and loaded.batch_id is None:  # outside the savepoint: kept if it rolls back
                loaded.batch_id = self._lock_collecting_batch()
            savepoint = self._active().begin_nested()
            try:
                tail = (loaded.batch_id, loaded.now)
                self._copy("import_copy_new_sessions", [(*r[STORED], *tail) for r in plan.sessions])
                self._copy("import_copy_new_events", [(*r[2:], loaded.now) for r in plan.events])
            except exc.DBAPIError as err:
                if not self.db.is_write_collision(err):
                    raise
                savepoint.rollback()
                log.info(
                    "import: a live write of a key of this chunk got in the way (%s, attempt %d of %d)",
                    type(err.orig).__name__,
                    attempt,
                    CHUNK_ATTEMPTS,
                )
                time.sleep(0.05 * attempt)
                continue
            savepoint.commit()
            loaded.add(plan, self.max_conflict_rows)
            return
        raise StoreUnavailable(
            f"the import's chunk collided with live writes of the same keys {CHUNK_ATTEMPTS} times in a row; "
            "nothing was loaded: run the import again"
        )

    def _copy(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.db.copy_rows(self._active(), query, rows)

    def _open_batch(self) -> None:
        """Opened in a short transaction of its own: opened inside the load transaction, the new batch (and the
        lock openers take turns with) would stay uncommitted for the whole import, and every live registration
        would wait for it."""
        with self.db.transaction(write=True) as conn:
            open_collecting_batch(self.db, conn, self.store.clock)  # as live registration does
        self._opened_batch = True

    def _clean_up(self) -> None:
        if self._opened_batch and not self._committed:
            self._drop_opened_batch()

    def _drop_opened_batch(self) -> None:
        """A refused or failed direct load leaves no batch behind, as the staged load (whose batch is opened in
        its load transaction) does not: the batch it opened is deleted if it is still empty."""
        batch_id = self._loaded.batch_id
        if batch_id is None:
            return
        try:
            with self.db.transaction(write=True) as conn:
                self.db.run(conn, "import_drop_opened_batch", batch_id=batch_id)
        except exc.IntegrityError:  # a live registration joined it: it stays, as it would have anyway
            log.info("import: the batch %s it opened has live sessions now; kept", batch_id)
        except Exception:  # the store is unreachable: an empty collecting batch is harmless; never mask the error
            log.warning("import: could not delete the empty batch %s it opened", batch_id, exc_info=True)


class StagedLoad(HistoryLoad):
    """SQLite's load: chunks staged into temp tables, loaded in SQL in one load transaction at the end."""

    embeds_events = True

    def _prepare(self) -> None:
        with self._active().begin():
            for query in (
                "import_drop_stage_sessions",
                "import_drop_stage_events",
                "import_create_stage_sessions",
                "import_index_stage_sessions",
                "import_create_stage_events",
            ):
                self._run(query)

    def _clean_up(self) -> None:
        with self._active().begin():
            self._run("import_drop_stage_sessions")
            self._run("import_drop_stage_events")

    def _take(self, sessions: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> None:
        with self._active().begin():
            if sessions:
                self._run("import_stage_session", [dict(zip(SESSION_ROW_COLUMNS, r, strict=True)) for r in sessions])
            if events:
                self._run("import_stage_event", [dict(zip(EVENT_ROW_COLUMNS, r, strict=True)) for r in events])

    def _load_rest(self) -> None:
        """Every staged row, in SQL, in the load transaction."""
        self._load_tx = self._begin_load()
        loaded = self._loaded
        if self.sessions_taken:
            if self._run("import_any_new_session").scalar_one():
                loaded.batch_id = self._lock_collecting_batch()
                loaded.sessions = self._run(
                    "import_insert_sessions", {"batch_id": loaded.batch_id, "now": loaded.now}
                ).rowcount
            self._run("import_mark_conflicts")
            loaded.conflicts = self._run("import_conflict_count").scalar_one()
            loaded.conflict_rows = [
                ConflictRow(**r)
                for r in self._run("import_conflict_rows", {"limit": self.max_conflict_rows}).mappings()
            ]
        valid = self._run("import_staged_counts").mappings().one()
        loaded.valid_sessions, loaded.valid_events = valid["sessions"], valid["events"]
        loaded.purged = self._run("import_purged_events").scalar_one()
        loaded.events = self._run("import_insert_events", {"now": loaded.now}).rowcount

    def _open_batch(self) -> None:
        """Opened in the load transaction, which holds SQLite's write lock already."""
        open_collecting_batch(self.db, self._active(), self.store.clock)


@dataclass
class ChunkPlan:
    """What the direct load does with one chunk (:func:`plan_chunk`).

    :param sessions: the session rows to store (the first row of each new id), in file order.
    :param events: the event rows to store, in file order.
    :param valid_sessions: session rows that are not conflicts (stored or not).
    :param valid_events: events of those rows, and event rows (stored or not).
    :param conflict_rows: the conflicting session rows, in file order.
    :param purged: events not stored because their session was in a purged batch and is not registered.
    """

    sessions: list[Sequence[Any]] = field(default_factory=list)
    events: list[Sequence[Any]] = field(default_factory=list)
    valid_sessions: int = 0
    valid_events: int = 0
    conflict_rows: list[ConflictRow] = field(default_factory=list)
    purged: int = 0


def plan_chunk(
    sessions: Sequence[Sequence[Any]],
    events: Sequence[Sequence[Any]],
    stored: dict[str, str],
    erased: set[str],
    stored_events: set[tuple[str, str]],
    purged: frozenset[str] | set[str] = frozenset(),
) -> ChunkPlan:
    """Decide each row of a chunk, as the staged load's SQL does for the whole import.

    A session row whose id is erased is a duplicate; one whose id is stored (or was stored by an earlier row)
    is a duplicate if its content hash is the stored one, else a conflict, whose events are left out; any other
    is new. An event is a duplicate if its session is erased or its ``(session_id, event_id)`` is stored (or
    was stored by an earlier event); else it is purged if its session was in a purged batch and is not
    registered (by the store or by a row of the import); else new.

    :param sessions: session rows (:data:`SESSION_ROW_COLUMNS`), by ``seq``.
    :param events: event rows (:data:`EVENT_ROW_COLUMNS`), by ``(seq, pos)``.
    :param stored: ``session_id -> content_hash`` of the stored sessions among the chunk's; updated.
    :param erased: the erased session ids among the chunk's.
    :param stored_events: the stored ``(session_id, event_id)`` of the chunk's event sessions; updated.
    :param purged: the ids among the chunk's event sessions that are tombstoned by a purge and not registered.
    """
    plan = ChunkPlan()
    conflicts: set[int] = set()  # seq of the conflicting session rows
    for row in sessions:
        session_id, digest = row[SESSION_ID], row[CONTENT_HASH]
        known = stored.get(session_id)
        if session_id in erased or known == digest:
            plan.valid_sessions += 1
        elif known is None:
            plan.valid_sessions += 1
            plan.sessions.append(row)
            stored[session_id] = digest
        else:
            conflicts.add(row[0])
            plan.conflict_rows.append(ConflictRow(file_no=row[1], line=row[2], session_id=session_id))
    for event in events:
        if conflicts and event[0] in conflicts:
            continue
        plan.valid_events += 1
        key = (event[2], event[3])
        if key[0] in erased or key in stored_events:
            continue
        if key[0] in purged and key[0] not in stored:
            plan.purged += 1
            continue
        plan.events.append(event)
        stored_events.add(key)
    return plan


@dataclass
class _Loaded:
    """What the load transaction has done so far (the direct load adds each chunk's share)."""

    now: int = 0
    began: float = 0.0  # time.monotonic() when the load transaction began
    batch_id: str | None = None
    sessions: int = 0
    events: int = 0
    valid_sessions: int = 0
    valid_events: int = 0
    conflicts: int = 0
    conflict_rows: list[ConflictRow] = field(default_factory=list)
    purged: int = 0

    def add(self, plan: ChunkPlan, max_conflict_rows: int) -> None:
        """Count a copied chunk."""
        self.purged += plan.purged
        self.sessions += len(plan.sessions)
        self.events += len(plan.events)
        self.valid_sessions += plan.valid_sessions
        self.valid_events += plan.valid_events
        self.conflicts += len(plan.conflict_rows)
        room = max_conflict_rows - len(self.conflict_rows)
        if room > 0:
            self.conflict_rows += plan.conflict_rows[:room]
