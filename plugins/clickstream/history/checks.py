"""The history import's row checks: one function, :func:`check_row`, that judges a row as the readers give it.

Row shapes (the REST bodies; see ``docs/import-and-erasure.md``):

* a **session row** is a ``POST /session`` registration body (:class:`clickstream.models.SessionIn`),
  optionally with ``events``: a list of :class:`clickstream.models.EventIn` bodies of that session;
* an **event row** is one :class:`clickstream.models.EventIn` body plus its ``session_id``.

A row with an ``event_id`` key is an event row, any other row a session row, so one file may hold both.
Rows are validated with the same models as live ingestion, milliseconds check included, but without the
live time window (history is old by definition). A valid row in the usual shape takes the fast path of
:mod:`clickstream.history.fast` (decoded and checked in C, no pydantic object); every other row goes
through the models (:func:`validate_row`), which give the reason of a refusal. Either way a valid row comes
out as the load's columns (:class:`~clickstream.history.fast.FastSession`,
:class:`~clickstream.history.fast.FastEvent`).

Then the size limits of live ingestion apply to it, on those columns, whichever path gave them
(:func:`limit_refusal`): ``max_results``, ``max_json_bytes`` (``search_meta``, ``payload_filter``, a result's
``meta``, an event's ``meta``), with live ingestion's reasons, and ``max_events_per_session`` to the events a
session row carries. A row over one of them is refused, so one imported row cannot hold more than a live
registration or push may (reads and pages are bounded by those limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from clickstream import models
from clickstream.history.fast import FastEvent, FastSession, convert_row, decode_line
from clickstream.history.readers import FiniteRow, ParquetLine, parse_line
from clickstream.store.checks import Checks, utf8_len, validate
from clickstream.store.errors import InvalidInput
from clickstream.store.rows import event_row, session_row


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


@dataclass(frozen=True)
class Refused:
    """An invalid row: the reason, and whether it counts as a session row (a session row failing validation
    does; an unreadable row, or an event row, does not)."""

    reason: str
    session_row: bool = False


def validate_row(row: dict[str, Any]) -> _SessionRow | _EventRow:
    """The live models' decision on a parsed row: an event row (it has an ``event_id`` key) or a session
    row, validated; :class:`InvalidInput` naming the field otherwise. This is the reference the fast path
    (:mod:`clickstream.history.fast`) agrees with, and the path of every row the fast path does not take."""
    return validate(_EventRow, row) if "event_id" in row else validate(_SessionRow, row)


def check_row(
    row: bytes | dict | str, *, embed_events: bool, limits: Checks | None = None
) -> FastSession | FastEvent | Refused:
    """Judge one row as a reader gives it (:func:`clickstream.history.readers.read_chunks`): a JSON Lines line
    or a Parquet row as JSON text (bytes), a Parquet row as a dict, or the reason it is unreadable (str).

    The fast path first; a row it does not take goes through the models, which give the reason of a refusal
    (a Parquet row as JSON text is then judged the dict way, as every Parquet row was).

    :param embed_events: a session row's events go in its columns as one JSON array when the fast path takes
        it (the staged load's shape); else, and always from the models, they come as event columns.
    :param limits: the store's checks, whose size limits a valid row must keep (:func:`limit_refusal`); None
        applies none.
    """
    if isinstance(row, bytes):
        fast = decode_line(row, embed_events=embed_events)
    elif isinstance(row, dict):
        fast = convert_row(row, finite=isinstance(row, FiniteRow), embed_events=embed_events)
    else:
        fast = None
    if fast is not None:  # valid: loaded as columns, no model built
        return _within(limits, fast)
    parsed: dict | str
    if isinstance(row, ParquetLine):
        parsed = row.dict_row()
    elif isinstance(row, bytes):
        parsed = parse_line(row)
    else:
        parsed = row
    if isinstance(parsed, str):
        return Refused(parsed)
    is_event = "event_id" in parsed
    try:
        body = validate_row(parsed)
    except InvalidInput as err:
        return Refused(err.detail, session_row=not is_event)
    if isinstance(body, _EventRow):
        return _within(limits, FastEvent(body.session_id, event_row(body)))
    session = models.SessionIn.model_construct(**{name: getattr(body, name) for name in models.SessionIn.model_fields})
    return _within(
        limits, FastSession((*session_row(session), None), len(body.events), [event_row(e) for e in body.events])
    )


def _within(limits: Checks | None, row: FastSession | FastEvent) -> FastSession | FastEvent | Refused:
    if limits is None or (reason := limit_refusal(limits, row)) is None:
        return row
    return Refused(reason, session_row=isinstance(row, FastSession))


def _dumps(value: Any) -> str | None:
    """JSON text as the store writes it (``clickstream.store.db.dumps``: compact, UTF-8 kept), which the
    live limits measure; None stays None. (The history import does not import the database layer.)"""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


#: The shortest JSON text of a search result (``{"object_id":"x"}``): a ``search_results`` text shorter than
#: this many bytes times ``max_results`` cannot hold too many results, and is not decoded to count them.
MIN_RESULT_TEXT = 17


def limit_refusal(checks: Checks, row: FastSession | FastEvent) -> str | None:
    """The reason a valid row is over a size limit of the store, or None: live ingestion's limits and reasons
    (:class:`clickstream.store.checks.Checks`), checked in the order a live registration checks them, on the
    row's columns (the fast path's and the models' alike):

    * ``search_results``: at most ``max_results``;
    * ``search_meta``, ``payload_filter``, ``search_results.<i>.meta``: at most ``max_json_bytes`` each, as
      the store writes them (its JSON text);
    * ``events`` (the events of a session row): at most ``max_events_per_session``;
    * ``events.<i>.meta`` (an event of a session row), ``meta`` (an event row): at most ``max_json_bytes``.
    """
    cfg = checks.config
    try:
        if isinstance(row, FastEvent):
            checks.json_text_size("meta", row.columns[4])
            return None
        columns = row.columns
        results = columns[2]
        if len(results) > MIN_RESULT_TEXT * cfg.max_results and (n := len(json.loads(results))) > cfg.max_results:
            raise InvalidInput.field(
                "search_results", f"{n} results; at most {cfg.max_results} a session ([clickstream] max_results)"
            )
        checks.json_text_size("search_meta", columns[3])
        checks.json_text_size("payload_filter", columns[4])
        if utf8_len(results, cfg.max_json_bytes) > cfg.max_json_bytes // 2:  # only then can a result's meta be big
            for i, result in enumerate(json.loads(results)):
                checks.json_text_size(f"search_results.{i}.meta", _dumps(result.get("meta")))
        if row.events > cfg.max_events_per_session:
            raise InvalidInput.field(
                "events",
                f"{row.events} events; at most {cfg.max_events_per_session} a session "
                "([clickstream] max_events_per_session)",
            )
        embedded = columns[-1]
        if embedded is not None and utf8_len(embedded, cfg.max_json_bytes) > cfg.max_json_bytes // 2:
            for i, event in enumerate(json.loads(embedded)):
                checks.json_text_size(f"events.{i}.meta", _dumps(event.get("meta")))
        for i, event_columns in enumerate(row.event_columns):
            checks.json_text_size(f"events.{i}.meta", event_columns[4])
    except InvalidInput as err:
        return err.detail
    return None
