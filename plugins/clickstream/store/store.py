"""The session store: every clickstream operation, once, on a SQLAlchemy 2 engine.

No Airflow and no HTTP here. The SQL lives in ``include/sql`` (named queries, per dialect where they must
differ); this module decides which queries run in which transaction and turns rows into models.
Behaviour follows ``semantics.md``; the locking that upholds its invariants is in the SQL, where a
reviewer expects it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine, exc, text

from clickstream import models
from clickstream.store import sql
from clickstream.store.engine import WRITE_OPTION, create_store_engine
from clickstream.store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: Stands for "no upper bound" in LIMIT and session_number ranges (both backends take a BIGINT).
_UNBOUNDED = 2**62


@dataclass(frozen=True)
class StoreConfig:
    """Tunables of the store; every one has the default documented in the README.

    :param max_page: largest ``limit`` of a batch page.
    :param max_events: largest ``events_limit`` of a batch page.
    :param window_back_ms: live ingestion rejects timestamps older than this (default 24 h).
    :param window_ahead_ms: live ingestion rejects timestamps further in the future (default 5 min).
    :param max_attempts: improvement marks failing this many times end as ``failed``.
    :param claim_stale_ms: a mark left in ``processing`` this long is handed out again.
    :param max_results: most ``search_results`` a session may have.
    :param max_json_bytes: largest free-form JSON object (``search_meta``, ``payload_filter``, a result's or
        an event's ``meta``), in bytes of its UTF-8 JSON text.
    :param max_events_per_session: events a session holds at most; later ones are counted ``over_limit``
        and not stored, and reads of a session return at most this many.
    :param max_bulk_items: most items (sessions + events) of one :meth:`SessionStore.ingest_bulk`.
    """

    max_page: int = 1000
    max_events: int = 1000
    window_back_ms: int = 24 * 3600 * 1000
    window_ahead_ms: int = 5 * 60 * 1000
    max_attempts: int = 3
    claim_stale_ms: int = 3600 * 1000
    max_results: int = 1000
    max_json_bytes: int = 64 * 1024
    max_events_per_session: int = 10_000
    max_bulk_items: int = 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def validate(model: type[M], data: Any, *, prefix: str = "") -> M:
    """Validate ``data`` into ``model``; a failure becomes :class:`InvalidInput` naming every bad field."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = [
            {"loc": [*(prefix.split(".") if prefix else []), *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False)
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors)
        raise InvalidInput(detail, errors) from None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def content_hash(session: models.SessionIn) -> str:
    """Stable digest of a registration body: equal bodies (whatever their key order) hash equal."""
    canonical = json.dumps(session.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def session_columns(session: models.SessionIn, now: int | None = None) -> dict[str, Any]:
    """The stored columns of a registration body (JSON as text, and its content hash). Live registration
    and the bulk import write sessions through this one mapping, so a live re-registration of an imported
    session is recognised as ``already_registered``.

    An omitted ``created_at`` is stored as ``now`` (the time of receipt) while the content hash keeps it
    omitted, so a retry of the same body, received later, is still ``already_registered``.
    """
    return {
        "session_id": session.session_id,
        "search_query": session.search_query,
        "search_results": _dumps([r.model_dump() for r in session.search_results]),
        "search_meta": _dumps(session.search_meta),
        "payload_filter": _dumps(session.payload_filter),
        "sort_by": _dumps(session.sort_by.model_dump() if session.sort_by else None),
        "user_id": session.user_id,
        "created_at": session.created_at if session.created_at is not None else now,
        "is_irrelevant": session.is_irrelevant,
        "is_payload_search": session.is_payload_search,
        "content_hash": content_hash(session),
    }


def _utf8_len(text: str, bound: int) -> int:
    """Bytes of ``text`` in UTF-8, computed only when it may exceed ``bound`` (at most 4 bytes a character)."""
    return len(text) if len(text) * 4 <= bound else len(text.encode("utf-8", "surrogatepass"))


def new_batch_id(now: int) -> str:
    """Opaque, unique, and sortable by creation: the creation time leads, a random suffix follows."""
    return f"b{now:013d}-{secrets.token_hex(4)}"


def _session_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``batch_page`` row as the API's session object (plain dict: the extraction path skips pydantic)."""
    events = _loads(row["events"]) or []
    if events and "_seq" in events[0]:  # SQLite: restore the order its aggregate does not guarantee
        events.sort(key=lambda e: (e["created_at"], e["_seq"]))
        for e in events:
            del e["_seq"]
    return {
        "session_number": row["session_number"],
        "session_id": row["session_id"],
        "search_query": row["search_query"],
        "search_results": _loads(row["search_results"]) or [],
        "search_meta": _loads(row["search_meta"]),
        "payload_filter": _loads(row["payload_filter"]),
        "sort_by": _loads(row["sort_by"]),
        "user_id": row["user_id"],
        "created_at": row["created_at"],
        "is_irrelevant": bool(row["is_irrelevant"]),
        "events": events,
    }


@dataclass(frozen=True)
class ExtractPage:
    """One page of a batch in the extraction layout of :mod:`clickstream.dataset`, as JSON lines.

    ``sessions_json`` holds one JSON object per session (``SESSIONS_SCHEMA``: free-form objects as JSON
    text, ``search_results[].meta`` too, ``n_events``), ``events_json`` one per event (``EVENTS_SCHEMA``,
    with ``event_index``, earliest first), both in session order. A reader turns them into Arrow without
    building Python objects per value. ``len(page)`` is its number of sessions.
    """

    first_number: int
    last_number: int
    sessions: int
    events: int
    sessions_json: bytes
    events_json: bytes

    def __len__(self) -> int:
        return self.sessions


class SessionStore:
    """The clickstream session store on PostgreSQL or SQLite.

    Every public method is one operation of ``semantics.md`` and runs in one transaction: it commits whole
    or changes nothing. Inputs may be the pydantic models of :mod:`clickstream.models` or plain mappings
    (validated here, so bad input raises :class:`InvalidInput` before anything is written).

    :param engine: a SQLAlchemy engine, best made by :func:`create_store_engine`.
    :param config: tunables; see :class:`StoreConfig`.
    :param clock: milliseconds since epoch; injectable for tests.
    """

    def __init__(self, engine: Engine, config: StoreConfig | None = None, clock: Callable[[], int] = now_ms):
        self.engine = engine
        self.config = config or StoreConfig()
        self.clock = clock
        self.dialect = engine.dialect.name
        self._q = sql.queries(self.dialect)
        self._texts: dict[str, Any] = {}  # compiled once per query: text() re-parses the SQL every call

    @classmethod
    def from_url(cls, url: str, config: StoreConfig | None = None, **engine_kwargs: Any) -> SessionStore:
        """A store on a new engine for ``url``; call :meth:`dispose` when done."""
        return cls(create_store_engine(url, **engine_kwargs), config)

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self, *, write: bool, single_statement: bool = False) -> Iterator[Connection]:
        with translate_errors(self.dialect), self.engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            if single_statement and self.dialect == "postgresql":
                # One statement is its own transaction: no BEGIN and COMMIT round trips (ingestion's
                # hot path spent half its time on them).
                conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                yield conn

    def _run(self, conn: Connection, query: str, /, **params: Any):
        clause = self._texts.get(query)
        if clause is None:
            clause = self._texts[query] = text(self._q[query])
        return conn.execute(clause, params)

    def _check_window(self, field: str, value: int | None, now: int) -> None:
        if value is None:  # omitted: the time of receipt, in the window by definition
            return
        if value < now - self.config.window_back_ms:
            raise InvalidInput.field(
                field,
                f"{value} is more than {self.config.window_back_ms // 1000} s in the past; "
                "live ingestion only takes recent timestamps (use the bulk import for history)",
            )
        if value > now + self.config.window_ahead_ms:
            raise InvalidInput.field(
                field, f"{value} is more than {self.config.window_ahead_ms // 1000} s in the future"
            )

    def _check_json_size(self, field: str, text: str | None) -> None:
        bound = self.config.max_json_bytes
        if text is not None and (size := _utf8_len(text, bound)) > bound:
            raise InvalidInput.field(field, f"JSON object of {size} bytes; at most {bound} bytes "
                                            "([clickstream] max_json_bytes)")

    def _session_params(self, body: models.SessionIn, now: int, *, check_window: bool) -> dict[str, Any]:
        """The stored columns of a registration, after the live checks: the ingestion window and the
        size limits (``max_results``, ``max_json_bytes``). Raises :class:`InvalidInput` naming the field."""
        cfg = self.config
        if check_window:
            self._check_window("created_at", body.created_at, now)
        if len(body.search_results) > cfg.max_results:
            raise InvalidInput.field("search_results", f"{len(body.search_results)} results; at most "
                                                       f"{cfg.max_results} a session ([clickstream] max_results)")
        columns = session_columns(body, now)
        self._check_json_size("search_meta", columns["search_meta"])
        self._check_json_size("payload_filter", columns["payload_filter"])
        if _utf8_len(columns["search_results"], cfg.max_json_bytes) > cfg.max_json_bytes:
            for i, result in enumerate(body.search_results):  # only then can one result's meta be too big
                self._check_json_size(f"search_results.{i}.meta", _dumps(result.meta))
        return columns

    def _event_record(self, event: models.EventIn, now: int, field: str, *, check_window: bool
                      ) -> dict[str, Any]:
        """An event as an ``insert_events`` record, after the window and ``max_json_bytes`` checks;
        ``field`` is the event's path in the request (errors name ``<field>.created_at``), "" for none."""
        prefix = f"{field}." if field else ""
        if check_window:
            self._check_window(f"{prefix}created_at", event.created_at, now)
        record = event.model_dump()
        if record["created_at"] is None:
            record["created_at"] = now
        if record["meta"] is not None:
            self._check_json_size(f"{prefix}meta", _dumps(record["meta"]))
        return record

    def _insert_events(self, records: list[dict[str, Any]], now: int) -> tuple[int, int]:
        """Insert ``insert_events`` records (each ``(session_id, event_id)`` once) in one statement;
        returns ``(stored, over_limit)``. PostgreSQL: one autocommit statement; SQLite: a count, then the
        insert, in one write transaction."""
        params = {"events": _dumps(records), "now": now, "max_events": self.config.max_events_per_session}
        if "count_events_over_limit" in self._q:
            with self._tx(write=True) as conn:
                over = self._run(conn, "count_events_over_limit", **params).scalar_one()
                stored = len(self._run(conn, "insert_events", **params).all())
            return stored, over
        with self._tx(write=True, single_statement=True) as conn:
            row = self._run(conn, "insert_events", **params).one()
        return row.stored, row.over_limit

    # ---------------------------------------------------------------------------------- schema

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now (empty when up to date).

        Idempotent, and safe when two processes run it at once: PostgreSQL serialises them on an advisory
        lock, SQLite on its write lock.
        """
        from clickstream.store.migrations import apply_migrations

        return apply_migrations(self)

    # ------------------------------------------------------------------------------- ingestion

    def register_session(self, session: models.SessionIn | Mapping[str, Any], *, check_window: bool = True
                         ) -> models.RegisterResult:
        """Register a session in the collecting batch (created if none) with the next session number.

        Re-registering the same content is a no-op success (``already_registered``); other content for a
        known ``session_id`` raises :class:`Conflict` and the stored session is kept.
        """
        body = validate(models.SessionIn, session)
        now = self.clock()
        params = {**self._session_params(body, now, check_window=check_window), "now": now}
        digest = params["content_hash"]
        # The common case alone first (a batch is collecting, the id is new): one statement, one round trip.
        with self._tx(write=True, single_statement=True) as conn:
            row = self._run(conn, "insert_session", **params).mappings().first()
        if row is not None:
            return models.RegisterResult(session_id=body.session_id, status="registered", **row)
        with self._tx(write=True) as conn:
            for _ in range(5):
                row = self._run(conn, "insert_session", **params).mappings().first()
                if row is not None:
                    return models.RegisterResult(session_id=body.session_id, status="registered", **row)
                existing = self._run(conn, "session_registration", session_id=body.session_id).mappings().first()
                if existing is not None:
                    break
                # No collecting batch (none yet, or released while we waited): open one and try again.
                self._open_batch(conn)
            else:
                raise StoreUnavailable("could not obtain a collecting batch; the store is under heavy contention")
        if existing["content_hash"] != digest:
            raise Conflict(
                f"session_id {body.session_id!r} is already registered with different content; "
                "the stored session is kept"
            )
        return models.RegisterResult(session_id=body.session_id, batch_id=existing["batch_id"],
                                     session_number=existing["session_number"], status="already_registered")

    def _open_batch(self, conn: Connection) -> None:
        """Insert a collecting batch (a no-op when a concurrent transaction just did).

        Openers take turns (``lock_batch_creation``); the creation time is read after that, and is later
        than every existing batch's, so batch ids, which start with it, sort by creation even for batches
        opened within one millisecond or by a registration that waited on a release.
        """
        if "lock_batch_creation" in self._q:  # PostgreSQL; SQLite holds its write lock already
            self._run(conn, "lock_batch_creation")
        latest = self._run(conn, "latest_batch_created_at").scalar()
        created = max(self.clock(), (latest or 0) + 1)
        self._run(conn, "insert_collecting_batch", batch_id=new_batch_id(created), now=created)

    def push_events(self, session_id: str, events: Sequence[models.EventIn | Mapping[str, Any]], *,
                    check_window: bool = True) -> models.PushEventsResult:
        """Store events of a session (registered or not yet); duplicate ``event_id`` s are counted, not stored."""
        body = validate(models.PushEventsIn, {"session_id": session_id, "events": list(events)})
        now = self.clock()
        unique: dict[str, dict[str, Any]] = {}
        for i, event in enumerate(body.events):
            record = self._event_record(event, now, f"events.{i}", check_window=check_window)
            record["session_id"] = body.session_id
            unique.setdefault(event.event_id, record)
        if not unique:
            return models.PushEventsResult(session_id=body.session_id, stored=0, duplicates=0)
        stored, over_limit = self._insert_events(list(unique.values()), now)
        return models.PushEventsResult(session_id=body.session_id, stored=stored, over_limit=over_limit,
                                       duplicates=len(body.events) - stored - over_limit)

    def ingest_bulk(self, sessions: Sequence[models.SessionIn | Mapping[str, Any]] = (),
                    events: Sequence[models.BulkEventIn | Mapping[str, Any]] = (), *,
                    check_window: bool = True) -> models.BulkResult:
        """Register many sessions and store many events (of any sessions) in a few set-based statements.

        Every item is accounted for once in the answer: sessions ``registered`` or ``already_registered``,
        events ``stored``, ``duplicates`` or ``over_limit``, and any item that is invalid or conflicts
        with what is stored is listed in ``rejected`` (its path, e.g. ``sessions[3]``, and the reason
        naming the field) without stopping the others. Sessions are written before events, so events of a
        session registered in the same call attach to it. Safe to retry: sessions are idempotent by
        content, events by ``event_id``. All sessions go to one batch; what is reported stored is committed.

        :param sessions: registration bodies, as for :meth:`register_session`.
        :param events: event bodies, as for :meth:`push_events`, each with its ``session_id``.
        :raises InvalidInput: more than ``max_bulk_items`` items in all (nothing is written).
        """
        items = len(sessions) + len(events)
        if items > self.config.max_bulk_items:
            raise InvalidInput.field("items", f"{len(sessions)} sessions + {len(events)} events = {items} items; "
                                              f"at most {self.config.max_bulk_items} a request "
                                              "([clickstream] max_bulk_items): split it")
        result = models.BulkResult()
        now = self.clock()
        self._bulk_sessions(sessions, now, result, check_window=check_window)
        records: dict[tuple[str, str], dict[str, Any]] = {}
        for i, item in enumerate(events):
            try:
                event = validate(models.BulkEventIn, item)
                record = self._event_record(event, now, "", check_window=check_window)
            except InvalidInput as err:
                result.rejected.append(_rejection(f"events[{i}]", item, err.detail))
                continue
            records.setdefault((event.session_id, event.event_id), record)
        if records:
            stored, over_limit = self._insert_events(list(records.values()), now)
            result.events.stored, result.events.over_limit = stored, over_limit
        accepted = len(events) - sum(r.item.startswith("events[") for r in result.rejected)
        result.events.duplicates = accepted - result.events.stored - result.events.over_limit
        result.rejected.sort(key=lambda r: (r.item.startswith("events"), int(r.item.split("[")[1][:-1])))
        return result

    def _bulk_sessions(self, sessions: Sequence[models.SessionIn | Mapping[str, Any]], now: int,
                       result: models.BulkResult, *, check_window: bool) -> None:
        """The sessions of :meth:`ingest_bulk`: validate each, insert the new ones in one statement, compare
        the content of the others with what is stored."""
        columns: dict[str, dict[str, Any]] = {}  # first occurrence of each session_id, in request order
        repeats: list[tuple[int, str, str]] = []  # (index, session_id, content_hash) of later occurrences
        for i, item in enumerate(sessions):
            try:
                params = self._session_params(validate(models.SessionIn, item), now, check_window=check_window)
            except InvalidInput as err:
                result.rejected.append(_rejection(f"sessions[{i}]", item, err.detail))
                continue
            sid = params["session_id"]
            if sid in columns:
                repeats.append((i, sid, params["content_hash"]))
            else:
                params["index"] = i
                columns[sid] = params
        if not columns:
            return
        stored_hash = self._insert_sessions(list(columns.values()), now)
        # As if the items came one by one: each occurrence is compared with what is stored by then (the
        # stored session, or the first occurrence when this request registered it).
        for sid, params in columns.items():
            repeats.append((params["index"], sid, params["content_hash"]))
        for i, sid, digest in sorted(repeats):
            if sid not in stored_hash:
                if i == columns[sid]["index"]:
                    result.sessions.registered += 1
                elif digest == columns[sid]["content_hash"]:
                    result.sessions.already_registered += 1
                else:
                    result.rejected.append(models.BulkRejection(
                        item=f"sessions[{i}]", session_id=sid,
                        error=f"session_id {sid!r} is registered by sessions[{columns[sid]['index']}] of this "
                              "request with different content"))
            elif digest == stored_hash[sid]:
                result.sessions.already_registered += 1
            else:
                result.rejected.append(models.BulkRejection(
                    item=f"sessions[{i}]", session_id=sid,
                    error=f"session_id {sid!r} is already registered with different content; the stored "
                          "session is kept"))

    def _insert_sessions(self, rows: list[dict[str, Any]], now: int) -> dict[str, str]:
        """Insert new sessions (one statement, one batch); returns ``{session_id: content_hash}`` of those
        among ``rows`` that were already stored (the others were inserted now)."""
        payload = _dumps([{k: v for k, v in r.items() if k != "index"} for r in rows])
        ids = [r["session_id"] for r in rows]
        with self._tx(write=True, single_statement=True) as conn:
            inserted = set(self._run(conn, "insert_sessions", sessions=payload, now=now).scalars())
        if len(inserted) == len(rows):
            return {}
        with self._tx(write=True) as conn:
            for _ in range(5):
                rest = [sid for sid in ids if sid not in inserted]
                existing = {r.session_id: r.content_hash for r in
                            self._run(conn, "sessions_registration", session_ids=_dumps(rest))}
                missing = [r for r in rows if r["session_id"] not in inserted and r["session_id"] not in existing]
                if not missing:
                    return existing
                # No collecting batch (none yet, or released meanwhile): open one and insert the rest.
                self._open_batch(conn)
                payload = _dumps([{k: v for k, v in r.items() if k != "index"} for r in missing])
                inserted |= set(self._run(conn, "insert_sessions", sessions=payload, now=now).scalars())
        raise StoreUnavailable("could not obtain a collecting batch; the store is under heavy contention")

    def mark_irrelevant(self, session_id: str) -> models.IrrelevantResult:
        """Flag a session as irrelevant (explicit negative feedback). Idempotent; unknown id: NotFound."""
        sid = validate(models.SessionIdIn, {"session_id": session_id}).session_id
        with self._tx(write=True) as conn:
            changed = self._run(conn, "mark_irrelevant", session_id=sid).rowcount == 1
            if not changed and self._run(conn, "session_exists", session_id=sid).first() is None:
                raise NotFound(f"session_id {sid!r} not found")
        return models.IrrelevantResult(session_id=sid, changed=changed)

    def get_session(self, session_id: str, events_limit: int | None = None) -> models.SessionOut:
        """A session with its events, earliest first (at most ``events_limit``; when omitted, all of them up
        to ``max_events_per_session``)."""
        sid = validate(models.SessionIdIn, {"session_id": session_id}).session_id
        if events_limit is not None and not 0 <= events_limit <= self.config.max_events:
            raise InvalidInput.field("events_limit",
                                     f"must be between 0 and {self.config.max_events}, got {events_limit}")
        with self._tx(write=False) as conn:
            row = self._run(conn, "get_session", session_id=sid).mappings().first()
            if row is None:
                raise NotFound(f"session_id {sid!r} not found")
            events = self._run(conn, "get_session_events", session_id=sid,
                               events_limit=self.config.max_events_per_session if events_limit is None
                               else events_limit).mappings().all()
        return models.SessionOut(
            **{**_session_dict({**row, "events": []}),
               "batch_id": row["batch_id"], "is_payload_search": bool(row["is_payload_search"]),
               "events": [{**e, "meta": _loads(e["meta"])} for e in events]})

    # ----------------------------------------------------------------------------- improvement

    def use_for_improvement(self, session_id: str) -> models.UseForImprovementResult:
        """Queue a session for model improvement if it is eligible; the answer says what happened.

        Eligible: not payload-search based, and at least one event on an object among its search results
        or marked irrelevant. Cost depends on the session's events only, never on its batch.
        """
        sid = validate(models.SessionIdIn, {"session_id": session_id}).session_id
        with self._tx(write=True) as conn:
            status = self._run(conn, "improvement_status", session_id=sid).mappings().first()
            if status is None:
                raise NotFound(f"session_id {sid!r} not found")
            if status["marked"]:
                return models.UseForImprovementResult(session_id=sid, status="already_marked")
            if status["is_payload_search"]:
                return models.UseForImprovementResult(session_id=sid, status="skipped", reason="payload_search")
            if not (status["is_irrelevant"] or status["has_event_on_result"]):
                return models.UseForImprovementResult(session_id=sid, status="skipped", reason="no_events")
            inserted = self._run(conn, "insert_mark", session_id=sid, now=self.clock()).first()
        return models.UseForImprovementResult(session_id=sid, status="marked" if inserted else "already_marked")

    def mark_sessions_for_improvement(self, session_ids: Sequence[str]) -> tuple[models.MarkCounts, list]:
        """:meth:`use_for_improvement` for each id; unknown ids are counted, not fatal.

        :returns: the counts per outcome and the per-session answers (unknown ids as ``not_found``).
        """
        counts = models.MarkCounts()
        outcomes: list[dict[str, Any]] = []
        for sid in session_ids:
            try:
                result = self.use_for_improvement(sid)
            except NotFound:
                counts.not_found += 1
                outcomes.append({"session_id": sid, "status": "not_found", "reason": None})
                continue
            outcomes.append(result.model_dump())
            key = result.status if result.status != "skipped" else f"skipped_{result.reason}"
            setattr(counts, key, getattr(counts, key) + 1)
        return counts, outcomes

    def mark_batch_for_improvement(self, batch_id: str) -> models.MarkCounts:
        """Mark every eligible session of a batch in one set-based statement; counts per outcome."""
        with self._tx(write=True) as conn:
            self._require_batch(conn, batch_id)
            classes = self._run(conn, "batch_mark_classes", batch_id=batch_id).mappings().one()
            marked = self._run(conn, "mark_batch_eligible", batch_id=batch_id, now=self.clock()).rowcount
        return models.MarkCounts(marked=marked, **classes)

    def claim_improvement_marks(self, limit: int = 10) -> list[models.ImprovementMark]:
        """Hand pending marks to a worker (``processing``, attempts + 1). Concurrent workers never get
        the same mark; a mark stuck in ``processing`` past ``claim_stale_ms`` is handed out again."""
        if not 1 <= limit <= self.config.max_page:
            raise InvalidInput.field("limit", f"must be between 1 and {self.config.max_page}, got {limit}")
        now = self.clock()
        with self._tx(write=True) as conn:
            stale = {"now": now, "stale_before": now - self.config.claim_stale_ms,
                     "max_attempts": self.config.max_attempts}
            self._run(conn, "fail_abandoned_marks", **stale)
            rows = self._run(conn, "claim_marks", limit=limit, **stale).mappings().all()
        return sorted((models.ImprovementMark(**r) for r in rows), key=lambda m: (m.created_at, m.session_id))

    def complete_improvement_mark(self, session_id: str, attempt: int | None = None) -> models.ImprovementMark:
        """A claimed mark is done.

        :param attempt: the ``attempts`` of the claim being finished. Pass it: once a claim went stale and
            the mark was handed to another worker, the first worker's finish is a :class:`Conflict`.
        """
        return self._finish_mark("complete_mark", session_id, attempt)

    def fail_improvement_mark(self, session_id: str, error: str, attempt: int | None = None
                              ) -> models.ImprovementMark:
        """A claimed mark failed: back to pending, or ``failed`` once ``max_attempts`` is reached.

        :param attempt: as for :meth:`complete_improvement_mark`.
        """
        return self._finish_mark("fail_mark", session_id, attempt, error=error[:4000],
                                 max_attempts=self.config.max_attempts)

    def _finish_mark(self, query: str, session_id: str, attempt: int | None, **params: Any
                     ) -> models.ImprovementMark:
        with self._tx(write=True) as conn:
            row = self._run(conn, query, session_id=session_id, now=self.clock(), attempt=attempt,
                            **params).mappings().first()
            if row is None:
                current = self._run(conn, "get_mark", session_id=session_id).mappings().first()
                if current is None:
                    raise NotFound(f"no improvement mark for session_id {session_id!r}")
                if current["status"] == "processing":
                    raise Conflict(f"attempt: the claim of session_id {session_id!r} with attempt {attempt} "
                                   f"went stale and was handed out again (attempt {current['attempts']})")
                raise Conflict(f"improvement mark of session_id {session_id!r} is {current['status']}, "
                               "not processing: claim it first")
        return models.ImprovementMark(**row)

    def get_improvement_mark(self, session_id: str) -> models.ImprovementMark:
        with self._tx(write=False) as conn:
            row = self._run(conn, "get_mark", session_id=session_id).mappings().first()
        if row is None:
            raise NotFound(f"no improvement mark for session_id {session_id!r}")
        return models.ImprovementMark(**row)

    # --------------------------------------------------------------------------------- batches

    def _require_batch(self, conn: Connection, batch_id: str) -> Mapping[str, Any]:
        row = self._run(conn, "get_batch", batch_id=batch_id).mappings().first()
        if row is None:
            raise NotFound(f"batch_id {batch_id!r} not found")
        return row

    def get_batch_sessions(self, batch_id: str, after_number: int = 0, limit: int = 10,
                           events_limit: int = 100) -> models.BatchSessionsPage:
        """One keyset page of a batch: sessions numbered above ``after_number``, ascending."""
        self._check_page_bounds(after_number, limit, events_limit)
        with self._tx(write=False) as conn:
            self._require_batch(conn, batch_id)
            sessions = self._page(conn, batch_id, after_number, _UNBOUNDED, limit, events_limit)
        return models.BatchSessionsPage(batch_id=batch_id,
                                        last_number=sessions[-1]["session_number"] if sessions else None,
                                        sessions=sessions)

    def _check_page_bounds(self, after_number: int, limit: int, events_limit: int) -> None:
        cfg = self.config
        if after_number < 0:
            raise InvalidInput.field("after_number", f"must be >= 0, got {after_number}")
        if not 1 <= limit <= cfg.max_page:
            raise InvalidInput.field("limit", f"must be between 1 and {cfg.max_page}, got {limit}")
        if not 0 <= events_limit <= cfg.max_events:
            raise InvalidInput.field("events_limit", f"must be between 0 and {cfg.max_events}, got {events_limit}")

    def _page(self, conn: Connection, batch_id: str, after: int, until: int, limit: int,
              events_limit: int) -> list[dict[str, Any]]:
        rows = self._run(conn, "batch_page", batch_id=batch_id, after_number=after, until_number=until,
                         limit=limit, events_limit=events_limit).mappings()
        return [_session_dict(r) for r in rows]

    def iter_batch_pages(self, batch_id: str, *, page_size: int = 1000, after_number: int = 0,
                         until_number: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every session of a batch with its events (at most ``max_events_per_session`` each), page by page,
        as plain dicts.

        Memory is bounded by ``page_size``; each page is its own short read, so a long extraction holds no
        transaction open. ``after_number`` / ``until_number`` select a shard ``(after, until]``.
        """
        return self._keyset_pages(batch_id, page_size, after_number, until_number,
                                  lambda conn, after, until: self._page(conn, batch_id, after, until, page_size,
                                                                        self.config.max_events_per_session))

    def iter_extract_pages(self, batch_id: str, *, page_size: int = 1000, after_number: int = 0,
                           until_number: int | None = None) -> Iterator[ExtractPage | list[dict[str, Any]]]:
        """Like :meth:`iter_batch_pages`, in the dataset's flat layout where the database can build it.

        On PostgreSQL each page is an :class:`ExtractPage` built by the database in one statement
        (``extract_page``); elsewhere the pages are :meth:`iter_batch_pages`' sessions.
        :class:`clickstream.dataset.ShardWriter` writes both. Memory is bounded by ``page_size``.
        """
        if "extract_page" not in self._q:
            return self.iter_batch_pages(batch_id, page_size=page_size, after_number=after_number,
                                         until_number=until_number)

        def read(conn: Connection, after: int, until: int) -> ExtractPage:
            row = self._run(conn, "extract_page", batch_id=batch_id, after_number=after, until_number=until,
                            limit=page_size, max_events=self.config.max_events_per_session).mappings().one()
            return ExtractPage(row["first_number"], row["last_number"], row["sessions"], row["events"],
                               (row["sessions_json"] or "").encode(), (row["events_json"] or "").encode())

        return self._keyset_pages(batch_id, page_size, after_number, until_number, read)

    def _keyset_pages(self, batch_id: str, page_size: int, after_number: int, until_number: int | None,
                      read: Callable[[Connection, int, int], Any]) -> Iterator[Any]:
        """The keyset loop of the page iterators: each page is its own short read; a short page is the last."""
        if page_size < 1:
            raise InvalidInput.field("page_size", f"must be >= 1, got {page_size}")
        with self._tx(write=False) as conn:
            self._require_batch(conn, batch_id)
        until = _UNBOUNDED if until_number is None else until_number
        after = after_number
        while True:
            with self._tx(write=False) as conn:
                page = read(conn, after, until)
            if not len(page):
                return
            yield page
            if len(page) < page_size:
                return
            after = page.last_number if isinstance(page, ExtractPage) else page[-1]["session_number"]

    def release_batch(self, release_id: str) -> models.ReleaseResult:
        """Release the collecting batch under ``release_id`` (an idempotency key).

        A ``release_id`` seen before answers its original result, even if another batch is collecting by
        now. No collecting batch and an unknown ``release_id``: :class:`NotFound`. Cost does not depend on
        the batch's size.
        """
        rid = validate(models.ReleaseIn, {"release_id": release_id}).release_id
        for _ in range(3):
            try:
                with self._tx(write=True) as conn:
                    row = self._run(conn, "find_release", release_id=rid).mappings().first()
                    if row is None and self._lock_collecting_for_release(conn):
                        row = self._run(conn, "release_collecting", release_id=rid, now=self.clock()
                                        ).mappings().first()
                    if row is None:
                        # A concurrent retry of this release_id may have released the batch we waited on
                        # (PostgreSQL re-checks the UPDATE after its commit and finds nothing collecting):
                        # a fresh statement sees that commit, so answer its result.
                        row = self._run(conn, "find_release", release_id=rid).mappings().first()
                    if row is None:
                        raise NotFound(f"no collecting batch to release under release_id {rid!r}")
                    return models.ReleaseResult(**row)
            except exc.IntegrityError:
                # A concurrent retry of the same release_id committed first (unique release_id): re-read it.
                continue
        raise Conflict(f"release_id {rid!r} is being released concurrently; retry")

    def _lock_collecting_for_release(self, conn: Connection) -> bool:
        """Wait until no registration holds the collecting batch, and lock it; False when none is collecting.

        Only after this does the release read its clock, so ``released_at`` is never earlier than a member's
        ``registered_at``. A batch that commits after this lock's snapshot is not released by this call.
        SQLite needs nothing: the transaction already holds the database's write lock.
        """
        if "lock_collecting_for_release" not in self._q:
            return True
        return self._run(conn, "lock_collecting_for_release").first() is not None

    def get_batch(self, batch_id: str) -> models.BatchInfo:
        """A batch's status and the range of its session numbers."""
        with self._tx(write=False) as conn:
            row = self._require_batch(conn, batch_id)
            stats = self._run(conn, "batch_number_stats", batch_id=batch_id).mappings().one()
        return models.BatchInfo(**row, **stats)

    def list_batches(self, status: str | None = None, limit: int = 100) -> list[models.BatchInfo]:
        """Batches, newest first."""
        if status not in (None, "collecting", "released"):
            raise InvalidInput.field("status", f"must be collecting or released, got {status!r}")
        if limit < 1:
            raise InvalidInput.field("limit", f"must be >= 1, got {limit}")
        with self._tx(write=False) as conn:
            rows = self._run(conn, "list_batches", status=status, limit=limit).mappings().all()
        return [models.BatchInfo(**r) for r in rows]

    def batch_metrics(self, batch_id: str) -> models.BatchMetrics:
        """Search-quality metrics of a batch (see :class:`clickstream.models.BatchMetrics`)."""
        with self._tx(write=False) as conn:
            self._require_batch(conn, batch_id)
            s = self._run(conn, "batch_session_counts", batch_id=batch_id).mappings().one()
            e = self._run(conn, "batch_event_counts", batch_id=batch_id).mappings().one()
            rr_sum = float(self._run(conn, "batch_rr_sum", batch_id=batch_id).scalar() or 0)
        n = s["sessions"]

        def ratio(x: float) -> float | None:
            return round(x / n, 6) if n else None

        return models.BatchMetrics(
            batch_id=batch_id, sessions=n, events=e["events"], clicks=e["clicks"],
            sessions_with_click=e["sessions_with_click"],
            click_through_rate=ratio(e["sessions_with_click"]), mean_reciprocal_rank=ratio(rr_sum),
            no_click_rate=ratio(n - e["sessions_with_click"]), irrelevant_rate=ratio(s["irrelevant"]),
            late_events=e["late_events"])

    # ---------------------------------------------------------------------------------- erasure

    def erase_user(self, user_id: str) -> models.EraseResult:
        """Remove every session, event and improvement mark of ``user_id`` in one transaction."""
        uid = validate(models.UserIdIn, {"user_id": user_id}).user_id
        with self._tx(write=True) as conn:
            batches = list(self._run(conn, "user_batches", user_id=uid).scalars())
            events = self._run(conn, "erase_user_events", user_id=uid).rowcount
            marks = self._run(conn, "erase_user_marks", user_id=uid).rowcount
            sessions = self._run(conn, "erase_user_sessions", user_id=uid).rowcount
        return models.EraseResult(user_id=uid, sessions=sessions, events=events, marks=marks, batches=batches)


def _rejection(item: str, body: Any, reason: str) -> models.BulkRejection:
    sid = body.get("session_id") if isinstance(body, Mapping) else getattr(body, "session_id", None)
    return models.BulkRejection(item=item, session_id=sid if isinstance(sid, str) else None, error=reason)


@contextmanager
def translate_errors(dialect: str) -> Iterator[None]:
    """Database errors as store errors, for every path that talks to the database (``_tx``, bulk load).

    A value the database cannot store (PostgreSQL: a NUL character in text or JSON, a number out of BIGINT
    range) is bad input, not a server fault: :class:`InvalidInput`. Connection failures and lock time-outs
    are outages: :class:`StoreUnavailable`. Anything else propagates unchanged.
    """
    try:
        yield
    except exc.DataError as err:
        raise InvalidInput(f"invalid value for the {dialect} store: {_first_line(err)}") from err
    except exc.OperationalError as err:
        if _is_unavailable(err):
            raise StoreUnavailable(f"session store unavailable: {_first_line(err)}") from err
        raise


def _is_unavailable(err: exc.OperationalError) -> bool:
    """Connection failures and lock time-outs are outages (503); other operational errors are bugs."""
    if err.connection_invalidated:
        return True
    message = str(err.orig).lower()
    return any(s in message for s in ("connection", "could not connect", "database is locked", "timeout",
                                      "server closed", "terminating"))


def _first_line(err: BaseException) -> str:
    return str(getattr(err, "orig", err)).strip().splitlines()[0]
