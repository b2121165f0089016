"""Extraction on PostgreSQL reads its pages as Arrow columns through ADBC (``extract_page_arrow``,
``Database.arrow_reader``); the JSON-lines path (``extract_page``) is its fallback. Both must write the same
dataset: the same Parquet schema and the same values, in the same order, for awkward values too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickstream.dataset import ShardWriter
from clickstream.dataset.pages import extract_page_tables
from clickstream.store import SessionStore, StoreConfig, create_store_engine
from clickstream.store.db import Database
from tests.store.helpers import T0, Clock, an_event

pytestmark = pytest.mark.postgres

AWKWARD_META = {
    "quote": 'say "hi"',
    "backslash": "C:\\path\\n",
    "newline": "line 1\nline 2\r\n\ttab",
    "unicode": "naïve 日本語 😀 \u2028",
    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
    "number": 1e-7,
    "big": 12345678901234567,
}


def awkward_sessions() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Sessions (with their events) whose values are hard to carry through JSON or arrays."""
    return [
        (
            {
                "session_id": "s-unicode",
                "search_query": 'Ünïcödé "quoted" \\ back\nslash 😀',
                "search_results": [
                    {"object_id": "o-1", "rank": 1.0, "meta": AWKWARD_META},
                    {"object_id": 'o "2"', "rank": None, "meta": None},
                    {"object_id": "o-\\3"},
                    {"object_id": "o-4", "rank": 0.1 + 0.2, "meta": {}},
                ],
                "search_meta": AWKWARD_META,
                "payload_filter": {"a": ["x", None], "b": {"c": "d\ne"}},
                "sort_by": {"field": "price ü", "order": "desc"},
                "user_id": "user-ü",
                "created_at": T0,
            },
            [
                an_event("e-late", "o-1", created_at=T0 + 50, meta=AWKWARD_META),
                an_event("e-tie-1", "o 2", created_at=T0 + 10, event_type="view"),
                an_event("e-tie-2", "o-\\3", created_at=T0 + 10, meta={"q": 'a"b\\c'}),
                an_event("e-early", "o-4", created_at=T0 + 1, meta=None),
            ],
        ),
        ({"session_id": "s-empty", "search_results": [], "created_at": T0 + 1}, []),
        (
            {
                "session_id": "s-nulls",
                "search_query": None,
                "search_results": [{"object_id": "x"}],
                "search_meta": None,
                "payload_filter": None,
                "sort_by": None,
                "user_id": None,
                "is_irrelevant": True,
                "created_at": T0 + 2,
            },
            [an_event("only", "x", created_at=T0 + 3)],
        ),
        (
            {
                "session_id": "s-capped",
                "search_query": "",
                "search_results": [{"object_id": f"r{i}", "rank": float(i)} for i in range(30)],
                "payload_filter": {},
                "sort_by": {"field": "f", "order": "asc"},
                "created_at": T0 + 3,
            },
            [an_event(f"c{j}", f"r{j}", created_at=T0 + 100 - j) for j in range(7)],  # more than the cap
        ),
        *[
            (
                {"session_id": f"s-plain-{i}", "search_results": [{"object_id": "a", "rank": 1.0}], "created_at": T0},
                [an_event(f"p{i}", "a")] if i % 2 else [],
            )
            for i in range(5)
        ],
        (
            {"session_id": "s-erased", "search_query": "gone", "user_id": "erase-me", "created_at": T0 + 4},
            [an_event("gone-1", "a")],
        ),
    ]


@pytest.fixture
def released(pg_url: str) -> Iterator[tuple[SessionStore, str]]:
    """The awkward sessions in a released batch on PostgreSQL, the erased user's session erased; and a store
    that reads at most 5 events a session (the cap lowered after the events were stored)."""
    writer = SessionStore(create_store_engine(pg_url), clock=Clock(T0))
    writer.migrate()
    for session, events in awkward_sessions():
        writer.register_session(session)
        if events:
            writer.push_events(session["session_id"], events)
    writer.erase_user("erase-me")
    batch_id = writer.release_batch("r1").batch_id
    store = SessionStore(writer.db.engine, StoreConfig(max_events_per_session=5), clock=Clock(T0))
    yield store, batch_id
    writer.dispose()


def read_all(store: SessionStore, batch_id: str, **kwargs: Any) -> tuple[pa.Table, pa.Table, list[Any]]:
    pages = list(store.iter_extract_pages(batch_id, columns=True, **kwargs))
    tables = [extract_page_tables(p) for p in pages]
    sessions = pa.concat_tables([s for s, _ in tables]) if tables else None
    events = pa.concat_tables([e for _, e in tables]) if tables else None
    return sessions, events, pages


def without_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON-lines path: as where ADBC is not installed."""
    monkeypatch.setattr(Database, "arrow_reader", lambda self: None)


@pytest.mark.parametrize("page_size", [1, 3, 1000])
def test_columns_and_json_lines_give_the_same_tables(
    released: tuple[SessionStore, str], monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    store, batch_id = released
    col_sessions, col_events, col_pages = read_all(store, batch_id, page_size=page_size)
    assert all(p.columns is not None and p.sessions_json == b"" for p in col_pages)  # the ADBC path ran
    without_columns(monkeypatch)
    json_sessions, json_events, json_pages = read_all(store, batch_id, page_size=page_size)
    assert all(p.columns is None for p in json_pages)

    assert [(p.first_number, p.last_number, p.sessions, p.events) for p in col_pages] == [
        (p.first_number, p.last_number, p.sessions, p.events) for p in json_pages
    ]
    assert col_sessions.schema.equals(json_sessions.schema, check_metadata=True)
    assert col_events.schema.equals(json_events.schema, check_metadata=True)
    assert col_sessions.to_pylist() == json_sessions.to_pylist()
    assert col_events.to_pylist() == json_events.to_pylist()
    assert col_sessions.equals(json_sessions) and col_events.equals(json_events)

    ids = col_sessions.column("session_id").to_pylist()
    assert "s-erased" not in ids and len(ids) == len(awkward_sessions()) - 1
    first = col_sessions.to_pylist()[0]
    assert first["search_query"] == 'Ünïcödé "quoted" \\ back\nslash 😀'
    assert [r["object_id"] for r in first["search_results"]] == ["o-1", 'o "2"', "o-\\3", "o-4"]
    assert [r["rank"] for r in first["search_results"]] == [1.0, None, None, 0.1 + 0.2]
    assert [r["meta"] is None for r in first["search_results"]] == [False, True, True, False]
    assert first["sort_by"] == {"field": "price ü", "order": "desc"}
    events = [e for e in col_events.to_pylist() if e["session_id"] == "s-unicode"]
    assert [(e["event_index"], e["event_id"]) for e in events] == [
        (0, "e-early"),
        (1, "e-tie-1"),
        (2, "e-tie-2"),
        (3, "e-late"),
    ]
    capped = [e["event_id"] for e in col_events.to_pylist() if e["session_id"] == "s-capped"]
    assert capped == ["c6", "c5", "c4", "c3", "c2"]  # the earliest 5 of 7
    nulls = next(s for s in col_sessions.to_pylist() if s["session_id"] == "s-nulls")
    assert (nulls["sort_by"], nulls["search_meta"], nulls["user_id"], nulls["n_events"]) == (None, None, None, 1)


def test_the_parquet_files_are_the_same(
    released: tuple[SessionStore, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store, batch_id = released

    def write(root: Path) -> dict[str, Any]:
        pages = store.iter_extract_pages(batch_id, page_size=3, columns=True)
        return ShardWriter(root, batch_id, pages_per_part=2).write(pages)

    columns = write(tmp_path / "columns")
    without_columns(monkeypatch)
    lines = write(tmp_path / "lines")
    assert columns == lines
    for table in ("sessions", "events"):
        names = sorted(p.name for p in (tmp_path / "columns" / table).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "lines" / table).iterdir()) and names
        for name in names:
            a, b = tmp_path / "columns" / table / name, tmp_path / "lines" / table / name
            assert pq.read_schema(a).equals(pq.read_schema(b), check_metadata=True)
            assert pq.read_table(a).equals(pq.read_table(b))


def test_a_reader_that_cannot_connect_falls_back_to_json_lines_once_logged(
    released: tuple[SessionStore, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, batch_id = released
    expected_sessions, expected_events, _ = read_all(store, batch_id, page_size=4)
    # a setting the engine's driver took but ADBC's libpq does not know, as a newer libpq's option would be
    monkeypatch.setattr(Database, "libpq_conninfo", lambda self: "dbname=x no_such_libpq_option=1")
    fresh = SessionStore(store.db.engine, StoreConfig(max_events_per_session=5), clock=Clock(T0))
    with caplog.at_level(logging.WARNING, logger="clickstream.store.db"):
        for _ in range(2):
            sessions, events, pages = read_all(fresh, batch_id, page_size=4)
            assert all(p.columns is None for p in pages)
            assert sessions.equals(expected_sessions) and events.equals(expected_events)
    warnings = [r for r in caplog.records if "columnar reads unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no_such_libpq_option" in warnings[0].getMessage()


def test_the_reader_runs_on_the_engines_settings(released: tuple[SessionStore, str]) -> None:
    store, _ = released
    reader = store.db.arrow_reader()
    assert reader is not None
    try:
        port = store.db.engine.url.port
        info = reader.table("extract_page_bounds", batch_id="none", after_number=0, until_number=1, page_size=1)
        assert info.num_rows == 0 and info.column_names == ["session_number"]
        assert reader.table("applied_migrations").num_rows > 0  # a query without parameters runs too
        with pytest.raises(TypeError, match="page_size"):
            reader.table("extract_page_bounds", batch_id="none", after_number=0, until_number=1, page_size=1.5)
        assert f"port={port}" in store.db.libpq_conninfo()
    finally:
        reader.close()


def test_without_the_adbc_driver_the_pages_are_json_lines(
    released: tuple[SessionStore, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, batch_id = released
    expected_sessions, expected_events, _ = read_all(store, batch_id, page_size=4)
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql", None)  # as where it is not installed
    fresh = SessionStore(store.db.engine, StoreConfig(max_events_per_session=5), clock=Clock(T0))
    with caplog.at_level(logging.WARNING, logger="clickstream.store.db"):
        sessions, events, pages = read_all(fresh, batch_id, page_size=4)
    assert all(p.columns is None for p in pages)
    assert sessions.equals(expected_sessions) and events.equals(expected_events)
    assert any("not installed" in r.getMessage() for r in caplog.records)
