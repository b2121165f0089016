"""One definition of the session row's columns (clickstream.store.rows.SESSION_COLUMNS, EVENT_COLUMNS): the
history import's SQL (COPY targets, staging inserts), its load's row layout and the store's row mapping all
follow it. No database is needed."""

from __future__ import annotations

import re

import pytest

from clickstream import models
from clickstream.history.checks import check_row
from clickstream.history.fast import FastEvent, FastSession
from clickstream.store import sql
from clickstream.store.history_load import EVENT_ROW_COLUMNS, SESSION_ROW_COLUMNS
from clickstream.store.rows import EVENT_COLUMNS, SESSION_COLUMNS, session_columns, session_row


def _columns(query: str, dialect: str) -> tuple[str, ...]:
    """The column list of an ``INSERT INTO t (...)`` or ``COPY t (...)`` query."""
    match = re.search(r"\(([^)]*)\)", sql.queries(dialect)[query])
    assert match, query
    return tuple(c.strip() for c in match.group(1).split(","))


def test_the_copy_targets_list_the_stored_columns_in_order() -> None:
    assert _columns("import_copy_new_sessions", "postgresql") == (*SESSION_COLUMNS, "batch_id", "registered_at")
    assert _columns("import_copy_new_events", "postgresql") == ("session_id", *EVENT_COLUMNS, "received_at")


def test_the_staging_inserts_take_the_load_rows_columns() -> None:
    assert _columns("import_stage_session", "sqlite") == SESSION_ROW_COLUMNS
    assert _columns("import_stage_event", "sqlite") == EVENT_ROW_COLUMNS


def test_the_row_mapping_names_the_stored_columns() -> None:
    body = models.SessionIn(session_id="s1", created_at=1_701_234_567_890)
    assert tuple(session_columns(body)) == SESSION_COLUMNS
    assert tuple(session_columns(body).values()) == session_row(body)
    assert tuple(models.EventIn.model_fields) == EVENT_COLUMNS


@pytest.mark.parametrize("embed_events", [True, False])
def test_both_ways_of_checking_give_rows_of_the_same_shape(embed_events: bool) -> None:
    session = (
        b'{"session_id": "s1", "created_at": 1701234567890, "events": '
        b'[{"event_id": "e1", "object_id": "o1", "created_at": 1701234567891}]}'
    )
    lax = session.replace(b"1701234567890", b'"1701234567890"')  # a number as a string: the models' way
    fast, model = check_row(session, embed_events=embed_events), check_row(lax, embed_events=embed_events)
    assert isinstance(fast, FastSession) and isinstance(model, FastSession)
    assert len(fast.columns) == len(model.columns) == len(SESSION_COLUMNS) + 1
    assert fast.columns[:-1] == model.columns[:-1]
    assert (fast.embedded, model.embedded) == ((1, 0) if embed_events else (0, 0))
    assert model.event_columns == [("e1", "o1", "click", 1_701_234_567_891, None)]
    event = check_row(
        b'{"session_id": "s1", "event_id": "e2", "object_id": "o1", "created_at": "1701234567892"}',
        embed_events=embed_events,
    )
    assert isinstance(event, FastEvent) and len(event.columns) == len(EVENT_COLUMNS)
