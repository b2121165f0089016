"""Sessions and their events: register, push events, ingest in bulk, mark irrelevant, read one session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from clickstream import models
from clickstream.store.base import StoreBase
from clickstream.store.batches import open_collecting_batch
from clickstream.store.checks import validate
from clickstream.store.db import dumps, loads
from clickstream.store.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from clickstream.store.fastrows import JsonText, encode, live_event, live_session, parsed
from clickstream.store.rows import session_dict

#: The session columns stored as JSON (given to ``insert_sessions`` as JSON values).
JSON_COLUMNS = ("search_results", "search_meta", "payload_filter", "sort_by")


class SessionOperations(StoreBase):
    def register_session(
        self, session: models.SessionIn | Mapping[str, Any], *, check_window: bool = True
    ) -> models.RegisterResult:
        """Register a session in the collecting batch (created if none) with the next session number.

        Re-registering the same content is a no-op success (``already_registered``); other content for a
        known ``session_id`` raises :class:`Conflict` and the stored session is kept. A ``session_id`` whose
        user was erased is not stored again: status ``erased``.
        """
        now = self.clock()
        # A plain dict takes the fast path when it can (fastrows: the models' rules in C); else the models decide.
        taken = live_session(session) if type(session) is dict else None
        if taken is not None:
            params = self.checks.live_session_params(taken, now, check_window=check_window)
        else:
            body = validate(models.SessionIn, session)
            params = self.checks.session_params(body, now, check_window=check_window)
        params["now"] = now
        session_id: str = params["session_id"]
        digest = params["content_hash"]
        # The common case alone first (a batch is collecting, the id is new): one statement, one round trip.
        first = self.db.run_one("insert_session", **params)
        if first is not None:
            return models.RegisterResult(session_id=session_id, status="registered", **first)
        with self.db.transaction(write=True) as conn:
            for _ in range(5):
                row = self.db.run(conn, "insert_session", **params).mappings().first()
                if row is not None:
                    return models.RegisterResult(session_id=session_id, status="registered", **row)
                existing = self.db.run(conn, "session_registration", session_id=session_id).mappings().first()
                if existing is not None:
                    break
                if self.db.run(conn, "session_erased", session_id=session_id).first() is not None:
                    return models.RegisterResult(
                        session_id=session_id, batch_id=None, session_number=None, status="erased"
                    )
                # No collecting batch (none yet, or released while we waited): open one and try again.
                open_collecting_batch(self.db, conn, self.clock)
            else:
                raise StoreUnavailable("could not obtain a collecting batch; the store is under heavy contention")
        if existing["content_hash"] != digest:
            raise Conflict(
                f"session_id {session_id!r} is already registered with different content; the stored session is kept"
            )
        return models.RegisterResult(
            session_id=session_id,
            batch_id=existing["batch_id"],
            session_number=existing["session_number"],
            status="already_registered",
        )

    def push_events(
        self, session_id: str, events: Sequence[models.EventIn | Mapping[str, Any]], *, check_window: bool = True
    ) -> models.PushEventsResult:
        """Store events of a session (registered or not yet); duplicate ``event_id`` s are counted, not stored,
        and so are events past ``max_events_per_session`` (``over_limit``), events of an erased session
        (``erased``) and events of a session of a purged batch that is not registered again (``purged``)."""
        now = self.clock()
        unique: dict[str, dict[str, Any]] = {}
        # Plain dicts take the fast path when they all can (fastrows: the models' rules in C); else the models
        # decide, so an invalid push is refused with the models' message naming the field.
        taken = self._fast_events(session_id, events)
        if taken is not None:
            for i, one in enumerate(taken):
                record = self.checks.live_event_record(one, now, f"events.{i}", check_window=check_window)
                unique.setdefault(record["event_id"], record)
            sent = len(taken)
        else:
            body = validate(models.PushEventsIn, {"session_id": session_id, "events": list(events)})
            session_id, sent = body.session_id, len(body.events)
            for i, event in enumerate(body.events):
                record = self.checks.event_record(event, now, f"events.{i}", check_window=check_window)
                record["session_id"] = session_id
                unique.setdefault(event.event_id, record)
        if not unique:
            return models.PushEventsResult(session_id=session_id, stored=0, duplicates=0)
        stored, over_limit, erased, purged = self._insert_events(list(unique.values()), now, session_id)
        return models.PushEventsResult(
            session_id=session_id,
            stored=stored,
            over_limit=over_limit,
            erased=erased,
            purged=purged,
            duplicates=sent - stored - over_limit - erased - purged,
        )

    @staticmethod
    def _fast_events(session_id: Any, events: Any) -> list[tuple[Any, str | None]] | None:
        """:meth:`push_events`' events through the fast path (each a plain dict without its own ``session_id``,
        given a list or tuple), or None when any one of them is not taken: then the models judge the push."""
        if type(session_id) is not str or not isinstance(events, (list, tuple)) or not events:
            return None
        taken = []
        for event in events:
            if type(event) is not dict or "session_id" in event:
                return None
            one = live_event({**event, "session_id": session_id})
            if one is None:
                return None
            taken.append(one)
        return taken

    def ingest_bulk(
        self,
        sessions: Sequence[models.SessionIn | Mapping[str, Any] | JsonText] = (),
        events: Sequence[models.BulkEventIn | Mapping[str, Any] | JsonText] = (),
        *,
        check_window: bool = True,
    ) -> models.BulkResult:
        """Register many sessions and store many events (of any sessions) in a few set-based statements.

        Every item is accounted for once in the answer: sessions ``registered``, ``already_registered`` or
        ``erased``, events ``stored``, ``duplicates``, ``over_limit``, ``erased`` or ``purged``, and any item that is
        invalid or conflicts with what is stored is listed in ``rejected`` (its path, e.g. ``sessions[3]``,
        and the reason naming the field) without stopping the others. Sessions are written before events, so events of a
        session registered in the same call attach to it. Safe to retry: sessions are idempotent by
        content, events by ``event_id``. The sessions go to the collecting batch (a release committing
        during the call may send the rest to the next one); what is reported stored is committed.

        :param sessions: registration bodies, as for :meth:`register_session`.
        :param events: event bodies, as for :meth:`push_events`, each with its ``session_id``.

        An item may come as a model, a dict, or its JSON text (``POST /bulk`` passes each item's slice of the
        request body): the fast path (:mod:`clickstream.store.fastrows`) takes the valid ones in the usual
        shapes, the models decide the others, with the same answer either way.
        :raises InvalidInput: more than ``max_bulk_items`` items in all (nothing is written).
        """
        items = len(sessions) + len(events)
        if items > self.config.max_bulk_items:
            raise InvalidInput.field(
                "items",
                f"{len(sessions)} sessions + {len(events)} events = {items} items; "
                f"at most {self.config.max_bulk_items} a request "
                "([clickstream] max_bulk_items): split it",
            )
        result = models.BulkResult()
        now = self.clock()
        self._bulk_sessions(sessions, now, result, check_window=check_window)
        records: dict[tuple[str, str], dict[str, Any]] = {}
        for i, item in enumerate(events):
            taken = live_event(item)  # the fast path; what it does not take, the models decide
            try:
                if taken is not None:
                    record = self.checks.live_event_record(taken, now, check_window=check_window)
                else:
                    item = parsed(item)
                    event = validate(models.BulkEventIn, item)
                    record = self.checks.event_record(event, now, "", check_window=check_window)
            except InvalidInput as err:
                result.rejected.append(_rejection(f"events[{i}]", taken[0] if taken else item, err.detail))
                continue
            records.setdefault((record["session_id"], record["event_id"]), record)
        counts = result.events
        if records:
            counts.stored, counts.over_limit, counts.erased, counts.purged = self._insert_events(
                list(records.values()), now
            )
        accepted = len(events) - sum(r.item.startswith("events[") for r in result.rejected)
        counts.duplicates = accepted - counts.stored - counts.over_limit - counts.erased - counts.purged
        result.rejected.sort(key=lambda r: (r.item.startswith("events"), int(r.item.split("[")[1][:-1])))
        return result

    def _bulk_sessions(
        self,
        sessions: Sequence[models.SessionIn | Mapping[str, Any] | JsonText],
        now: int,
        result: models.BulkResult,
        *,
        check_window: bool,
    ) -> None:
        """The sessions of :meth:`ingest_bulk`: validate each, insert the new ones in one statement, compare
        the content of the others with what is stored."""
        columns: dict[str, dict[str, Any]] = {}  # first occurrence of each session_id, in request order
        repeats: list[tuple[int, str, str]] = []  # (index, session_id, content_hash) of later occurrences
        for i, item in enumerate(sessions):
            taken = live_session(item)  # the fast path; what it does not take, the models decide
            try:
                if taken is not None:
                    params = self.checks.live_session_params(taken, now, check_window=check_window)
                else:
                    item = parsed(item)
                    params = self.checks.session_params(
                        validate(models.SessionIn, item), now, check_window=check_window
                    )
            except InvalidInput as err:
                result.rejected.append(_rejection(f"sessions[{i}]", taken[0] if taken else item, err.detail))
                continue
            sid = params["session_id"]
            if sid in columns:
                repeats.append((i, sid, params["content_hash"]))
            else:
                params["index"] = i
                columns[sid] = params
        if not columns:
            return
        stored_hash, erased = self._insert_sessions(list(columns.values()), now)
        # As if the items came one by one: each occurrence is compared with what is stored by then (the
        # stored session, or the first occurrence when this request registered it).
        for sid, params in columns.items():
            repeats.append((params["index"], sid, params["content_hash"]))
        for i, sid, digest in sorted(repeats):
            if sid in erased:
                result.sessions.erased += 1
            elif sid not in stored_hash:
                if i == columns[sid]["index"]:
                    result.sessions.registered += 1
                elif digest == columns[sid]["content_hash"]:
                    result.sessions.already_registered += 1
                else:
                    first = columns[sid]["index"]
                    reason = f"is registered by sessions[{first}] of this request with different content"
                    result.rejected.append(
                        _rejection(f"sessions[{i}]", {"session_id": sid}, f"session_id {sid!r} {reason}")
                    )
            elif digest == stored_hash[sid]:
                result.sessions.already_registered += 1
            else:
                reason = "is already registered with different content; the stored session is kept"
                result.rejected.append(
                    _rejection(f"sessions[{i}]", {"session_id": sid}, f"session_id {sid!r} {reason}")
                )

    def _insert_sessions(self, rows: list[dict[str, Any]], now: int) -> tuple[dict[str, str], set[str]]:
        """Insert new sessions (one statement, one batch); returns ``{session_id: content_hash}`` of those
        among ``rows`` that were already stored, and the ids that are tombstoned (erased); the others were
        inserted now."""
        payload = _sessions_payload(rows)
        ids = [r["session_id"] for r in rows]
        with self.db.transaction(write=True, single_statement=True) as conn:
            inserted = set(self.db.run(conn, "insert_sessions", sessions=payload, now=now).scalars())
        if len(inserted) == len(rows):
            return {}, set()
        with self.db.transaction(write=True) as conn:
            for _ in range(5):
                rest = [sid for sid in ids if sid not in inserted]
                existing = {
                    r.session_id: r.content_hash
                    for r in self.db.run(conn, "sessions_registration", session_ids=dumps(rest))
                }
                erased = set(self.db.run(conn, "sessions_erased", session_ids=dumps(rest)).scalars())
                done = inserted | existing.keys() | erased
                missing = [r for r in rows if r["session_id"] not in done]
                if not missing:
                    return existing, erased
                # No collecting batch (none yet, or released meanwhile): open one and insert the rest.
                open_collecting_batch(self.db, conn, self.clock)
                payload = _sessions_payload(missing)
                inserted |= set(self.db.run(conn, "insert_sessions", sessions=payload, now=now).scalars())
        raise StoreUnavailable("could not obtain a collecting batch; the store is under heavy contention")

    def mark_irrelevant(self, session_id: str) -> models.IrrelevantResult:
        """Flag a session as irrelevant (explicit negative feedback). Idempotent; unknown id: NotFound."""
        sid = validate(models.SessionIdIn, {"session_id": session_id}).session_id
        with self.db.transaction(write=True) as conn:
            changed = self.db.run(conn, "mark_irrelevant", session_id=sid).rowcount == 1
            if not changed and self.db.run(conn, "session_exists", session_id=sid).first() is None:
                raise NotFound(f"session_id {sid!r} not found")
        return models.IrrelevantResult(session_id=sid, changed=changed)

    def get_session(self, session_id: str, events_limit: int | None = None) -> models.SessionOut:
        """A session with its events, earliest first (at most ``events_limit``; when omitted, all of them up
        to ``max_events_per_session``)."""
        sid = validate(models.SessionIdIn, {"session_id": session_id}).session_id
        if events_limit is not None and not 0 <= events_limit <= self.config.max_events:
            raise InvalidInput.field(
                "events_limit", f"must be between 0 and {self.config.max_events}, got {events_limit}"
            )
        with self.db.transaction(write=False) as conn:
            row = self.db.run(conn, "get_session", session_id=sid).mappings().first()
            if row is None:
                raise NotFound(f"session_id {sid!r} not found")
            events = (
                self.db.run(
                    conn,
                    "get_session_events",
                    session_id=sid,
                    events_limit=self.config.max_events_per_session if events_limit is None else events_limit,
                )
                .mappings()
                .all()
            )
        return models.SessionOut(
            **{
                **session_dict({**row, "events": []}),
                "batch_id": row["batch_id"],
                "is_payload_search": bool(row["is_payload_search"]),
                "events": [{**e, "meta": loads(e["meta"])} for e in events],
            }
        )

    def _insert_events(
        self, records: list[dict[str, Any]], now: int, session_id: str | None = None
    ) -> tuple[int, int, int, int]:
        """Insert ``insert_events`` records (each ``(session_id, event_id)`` once) in one statement;
        returns ``(stored, over_limit, erased, purged)``. PostgreSQL: one autocommit statement (``push_events``
        when the records are all of ``session_id``'s, a push's); SQLite: a count, then the insert, in one write
        transaction."""
        params = {"events": encode(records), "now": now, "max_events": self.config.max_events_per_session}
        if session_id is not None and self.db.has("push_events"):
            params["session_id"] = session_id
            counts = self.db.run_one("push_events", **params)
            assert counts is not None  # push_events answers one row
            return counts["stored"], counts["over_limit"], counts["erased"], counts["purged"]
        if self.db.has("count_refused_events"):
            with self.db.transaction(write=True) as conn:
                refused = self.db.run(conn, "count_refused_events", **params).one()
                stored = len(self.db.run(conn, "insert_events", **params).all())
            return stored, refused.over_limit, refused.erased, refused.purged
        counts = self.db.run_one("insert_events", **params)
        assert counts is not None  # insert_events answers one row
        return counts["stored"], counts["over_limit"], counts["erased"], counts["purged"]


def _sessions_payload(rows: list[dict[str, Any]]) -> str:
    """``insert_sessions``' :sessions: the rows' columns, the JSON ones (given as text) as the JSON values."""
    return encode(
        [
            {
                **{k: v for k, v in r.items() if k != "index"},
                **{c: msgspec.Raw(r[c]) for c in JSON_COLUMNS if r[c] is not None},
            }
            for r in rows
        ]
    )


def _rejection(item: str, body: Any, reason: str) -> models.BulkRejection:
    sid = body.get("session_id") if isinstance(body, Mapping) else getattr(body, "session_id", None)
    return models.BulkRejection(item=item, session_id=sid if isinstance(sid, str) else None, error=reason)
