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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from clickstream import models
from clickstream.history.fast import FastEvent, FastSession, convert_row, decode_line
from clickstream.history.readers import FiniteRow, ParquetLine, parse_line
from clickstream.store.checks import validate
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


def check_row(row: bytes | dict | str, *, embed_events: bool) -> FastSession | FastEvent | Refused:
    """Judge one row as a reader gives it (:func:`clickstream.history.readers.read_chunks`): a JSON Lines line
    or a Parquet row as JSON text (bytes), a Parquet row as a dict, or the reason it is unreadable (str).

    The fast path first; a row it does not take goes through the models, which give the reason of a refusal
    (a Parquet row as JSON text is then judged the dict way, as every Parquet row was).

    :param embed_events: a session row's events go in its columns as one JSON array when the fast path takes
        it (the staged load's shape); else, and always from the models, they come as event columns.
    """
    if isinstance(row, bytes):
        fast = decode_line(row, embed_events=embed_events)
    elif isinstance(row, dict):
        fast = convert_row(row, finite=isinstance(row, FiniteRow), embed_events=embed_events)
    else:
        fast = None
    if fast is not None:  # valid: loaded as columns, no model built
        return fast
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
        return FastEvent(body.session_id, event_row(body))
    session = models.SessionIn.model_construct(**{name: getattr(body, name) for name in models.SessionIn.model_fields})
    return FastSession((*session_row(session), None), len(body.events), [event_row(e) for e in body.events])
