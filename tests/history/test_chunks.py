"""The history import chunk by chunk: PostgreSQL's direct load (each chunk COPYed in the one load transaction)
and SQLite's staged load give the same outcome whatever the chunk size; a live write racing a chunk, and an
erasure arriving during an import, on PostgreSQL; Parquet rows read as JSON text judged as the dict way
judges them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from clickstream.history import ImportReport, import_history, local_sources, readers
from clickstream.store import NotFound, SessionStore, StoreUnavailable, history_load


def _session(sid: str, user: str = "u1", query: str = "q", events: list[dict[str, Any]] | None = None) -> dict:
    row: dict[str, Any] = {
        "session_id": sid,
        "search_query": query,
        "search_results": [{"object_id": "o1", "rank": 1.0}, {"object_id": "o2"}],
        "user_id": user,
        "created_at": 1_701_234_567_890,
    }
    if events is not None:
        row["events"] = events
    return row


def _ev(eid: str, at: int = 1_701_234_571_000) -> dict[str, Any]:
    return {"event_id": eid, "object_id": "o1", "created_at": at}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(store: SessionStore, *paths: Path, fmt: str = "jsonl", **options: Any) -> ImportReport:
    return import_history(store, local_sources(*map(str, paths)), fmt, **options)


def _count(store: SessionStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def _mixed_history(tmp_path: Path, store: SessionStore) -> Path:
    """Eight rows where every decision depends on an earlier row, so chunks of 1 or 2 rows split each pair.
    Session C's user is erased before the import."""
    store.register_session(_session("C", user="uc"), check_window=False)
    store.erase_user("uc")
    return _write(
        tmp_path / "mixed.jsonl",
        [
            _session("A", events=[_ev("a1")]),  # 1: new, with a new event
            {"session_id": "B", **_ev("b1")},  # 2: an event row before its session
            _session("B", user="u2", events=[_ev("b1"), _ev("b2")]),  # 3: new; b1 repeats line 2
            _session("A", events=[_ev("a1"), _ev("a2")]),  # 4: same content as line 1: duplicate; a2 new
            _session("A", query="other", events=[_ev("a3")]),  # 5: other content: conflict, a3 left out
            {"session_id": "A", **_ev("a4")},  # 6: an event row of A
            _session("C", user="uc", events=[_ev("c1")]),  # 7: erased: duplicate, and so is c1
            {"session_id": "C", **_ev("c2")},  # 8: erased session's event: duplicate
        ],
    )


class TestChunkSizeDoesNotChangeTheOutcome:
    @pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5000])
    def test_every_decision_across_chunks(self, store: SessionStore, tmp_path: Path, chunk_rows: int) -> None:
        report = _run(store, _mixed_history(tmp_path, store), invalid_threshold=0.5, chunk_rows=chunk_rows)
        assert report.loaded
        counts = (report.rows, report.session_rows, report.event_rows)
        assert counts == (8, 5, 3)
        assert (report.loaded_sessions, report.duplicate_sessions, report.invalid) == (2, 2, 1)
        assert (report.loaded_events, report.duplicate_events) == (5, 4)
        assert [(e.line, "already registered" in e.reason) for e in report.errors] == [(5, True)]
        a, b = store.get_session("A"), store.get_session("B")
        assert a.search_query == "q" and [e.event_id for e in a.events] == ["a1", "a2", "a4"]
        assert [e.event_id for e in b.events] == ["b1", "b2"]
        assert a.batch_id == b.batch_id == report.batch_id
        with pytest.raises(NotFound):
            store.get_session("C")
        assert _count(store, "cs_event WHERE session_id = 'C'") == 0

    @pytest.mark.parametrize("chunk_rows", [1, 3])
    def test_refused_import_leaves_nothing_after_many_chunks(
        self, store: SessionStore, tmp_path: Path, chunk_rows: int
    ) -> None:
        path = _mixed_history(tmp_path, store)
        report = _run(store, path, invalid_threshold=0.0, chunk_rows=chunk_rows)
        assert not report.loaded and report.invalid == 1
        assert (report.loaded_sessions, report.loaded_events, report.batch_id) == (0, 0, None)
        assert (_count(store, "cs_session"), _count(store, "cs_event"), _count(store, "cs_batch")) == (0, 0, 1)
        with pytest.raises(NotFound):
            store.get_session("A")

    def test_sessions_and_events_keep_file_order(self, store: SessionStore, tmp_path: Path) -> None:
        # session_number and the events' arrival order (event_seq, the tie-break of equal created_at) follow
        # the file, across chunks: the events of "s00" are spread over every chunk, all at the same time
        rows: list[dict[str, Any]] = []
        for i in range(12):
            rows.append(_session(f"s{i:02d}", events=[_ev(f"e{i}-a", at=1_701_234_571_000)]))
            rows.append({"session_id": "s00", **_ev(f"z{11 - i:02d}", at=1_701_234_571_000)})
        report = _run(store, _write(tmp_path / "order.jsonl", rows), chunk_rows=5)
        assert report.loaded and (report.loaded_sessions, report.loaded_events) == (12, 24)
        assert report.batch_id is not None
        page = store.get_batch_sessions(report.batch_id, limit=100)
        assert [s.session_id for s in page.sessions] == [f"s{i:02d}" for i in range(12)]
        assert [e.event_id for e in store.get_session("s00").events] == ["e0-a"] + [f"z{11 - i:02d}" for i in range(12)]


# ----------------------------------------------------------------------------------- PostgreSQL only


@pytest.fixture
def pg_store(pg_url: str) -> Any:
    store = SessionStore.from_url(pg_url)
    store.migrate()
    yield store
    store.dispose()


def _on_chunk(monkeypatch: pytest.MonkeyPatch, before: Any) -> None:
    """Call ``before(n)`` (n = 1, 2, ...) each time the direct load decides a chunk, after its reads."""
    real = history_load.plan_chunk
    calls = [0]

    def plan(*args: Any) -> Any:
        calls[0] += 1
        before(calls[0])
        return real(*args)

    monkeypatch.setattr(history_load, "plan_chunk", plan)


class TestLiveWritesDuringTheDirectLoad:
    @pytest.mark.parametrize("live_query, outcome", [("q", "duplicate"), ("live", "conflict")])
    def test_live_registration_between_reads_and_copy(
        self, pg_store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_query: str, outcome: str
    ) -> None:
        # The chunk's reads found s1 new; a live registration of s1 commits before the COPY: the COPY fails
        # on the unique index, the chunk is read again, and s1 counts as the live registration decides.
        rows = [_session(f"s{i}", events=[_ev(f"e{i}")]) for i in range(3)]
        path = _write(tmp_path / "race.jsonl", rows)

        def live_write(n: int) -> None:
            if n == 1:
                pg_store.register_session(_session("s1", query=live_query), check_window=False)

        _on_chunk(monkeypatch, live_write)
        report = _run(pg_store, path, invalid_threshold=0.5)
        assert report.loaded
        stored = pg_store.get_session("s1")
        assert stored.search_query == live_query  # the live registration is kept
        if outcome == "duplicate":
            assert (report.loaded_sessions, report.duplicate_sessions, report.invalid) == (2, 1, 0)
            assert [e.event_id for e in stored.events] == ["e1"]  # the row's events still load
        else:
            assert (report.loaded_sessions, report.invalid) == (2, 1)
            assert [e.line for e in report.errors] == [2] and stored.events == []

    def test_a_batch_the_import_opens_does_not_hold_up_live_registrations(
        self, pg_store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # No batch is collecting when the import starts (one was just released): the import opens one. Live
        # registrations of other ids go on while the import is open, into the same batch.
        pg_store.register_session(_session("before"), check_window=False)
        pg_store.release_batch("r1")
        path = _write(tmp_path / "open.jsonl", [_session(f"s{i}") for i in range(4)])
        waited: list[float] = []

        def live_meanwhile(n: int) -> None:
            if n == 2:  # chunk 1 is copied: the load transaction is open and holds the new batch FOR SHARE
                started = time.monotonic()
                live = threading.Thread(
                    target=lambda: pg_store.register_session(_session("live", user="u9"), check_window=False)
                )
                live.start()
                live.join(timeout=5)
                waited.append(time.monotonic() - started)
                assert not live.is_alive(), "a live registration waited for the import"

        _on_chunk(monkeypatch, live_meanwhile)
        report = _run(pg_store, path, chunk_rows=1)
        assert report.loaded and report.loaded_sessions == 4 and waited and waited[0] < 5
        assert pg_store.get_session("live").batch_id == report.batch_id

    def test_a_lock_cycle_with_a_live_bulk_write_does_not_fail_the_import(
        self, pg_store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The import copies B (chunk 1, uncommitted); a live /bulk of [A, B] stores A and waits for B; the
        # import's chunk 2 needs A: a deadlock. PostgreSQL fails one of them. The import goes on either way
        # (the chunk is read and copied again); the live request fails as "unavailable" (503: retry), or,
        # if PostgreSQL failed the import's chunk, finds A and B stored... after the import commits.
        pg_store.register_session(_session("first"), check_window=False)  # a collecting batch exists
        path = _write(tmp_path / "cycle.jsonl", [_session("B"), _session("A")])
        outcome: list[Any] = []

        def bulk() -> None:
            try:
                outcome.append(pg_store.ingest_bulk([_session("A"), _session("B")], check_window=False))
            except StoreUnavailable as err:
                outcome.append(err)

        live = threading.Thread(target=bulk)

        def live_bulk_meanwhile(n: int) -> None:
            if n == 2:
                live.start()
                time.sleep(0.5)  # the live request has stored A and waits for B

        _on_chunk(monkeypatch, live_bulk_meanwhile)
        report = _run(pg_store, path, chunk_rows=1, invalid_threshold=1.0)
        live.join(timeout=30)
        assert report.loaded and report.invalid == 0
        assert {pg_store.get_session(s).search_query for s in ("A", "B")} == {"q"}
        assert len(outcome) == 1
        if isinstance(outcome[0], StoreUnavailable):
            assert "deadlock" in str(outcome[0])
            assert report.loaded_sessions == 2
        else:  # the import's chunk was the one failed: A is the live request's, B the import's
            assert report.loaded_sessions == 1 and report.duplicate_sessions == 1

    def test_erasure_waits_for_the_import_and_erases_what_it_loaded(
        self, pg_store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rows = [_session(f"s{i}", user="gone" if i % 2 else "kept") for i in range(6)]
        path = _write(tmp_path / "erase.jsonl", rows)
        erased: list[Any] = []
        eraser = threading.Thread(target=lambda: erased.append(pg_store.erase_user("gone")))

        def erase_meanwhile(n: int) -> None:
            if n == 2:  # the first chunk (s0, s1) is copied: the load transaction holds the tables
                eraser.start()
                eraser.join(timeout=1.0)
                assert eraser.is_alive(), "the erasure must wait for the import's transaction"

        _on_chunk(monkeypatch, erase_meanwhile)
        report = _run(pg_store, path, chunk_rows=2)
        eraser.join(timeout=60)
        assert report.loaded and report.loaded_sessions == 6
        assert erased and erased[0].sessions == 3  # every session of "gone", the imported ones included
        for i in range(6):
            if i % 2:
                with pytest.raises(NotFound):
                    pg_store.get_session(f"s{i}")
            else:
                assert pg_store.get_session(f"s{i}").user_id == "kept"
        again = _run(pg_store, path, chunk_rows=2)  # tombstoned now: a re-import does not bring them back
        assert again.loaded and again.loaded_sessions == 0 and again.duplicate_sessions == 6


# --------------------------------------------------------------------------------------------- Parquet


JSON_COLUMNS = ("search_results", "search_meta", "payload_filter", "sort_by", "events")


def _parquet(path: Path, rows: list[dict[str, Any]], *, force_dicts: bool) -> Path:
    """Rows as Parquet with JSON-string object columns (text as given when a value is already a str).
    ``force_dicts``: add an all-null timestamp column, a column type the JSON text way does not take, so the
    batch goes the dict way (nulls are absent: the rows are unchanged)."""
    columns: dict[str, pa.Array] = {}
    for key in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(key) for r in rows]
        if key in JSON_COLUMNS:
            values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
        columns[key] = pa.array(values)
    if force_dicts:
        columns["unused_timestamp"] = pa.array([None] * len(rows), pa.timestamp("ms"))
    pq.write_table(pa.table(columns), path)
    return path


class TestParquetRowsAsJsonText:
    def test_the_json_text_way_judges_every_row_as_the_dict_way(self, tmp_path: Path) -> None:
        rows = [
            _session("ok1", events=[_ev("e1")]),
            {**_session("ok2"), "search_meta": '{"ü": "é", "n": 1.5e300, "list": [1, {"x": null}]}'},
            {**_session("bad-json"), "search_meta": "{oops"},
            {**_session("injected"), "search_meta": '{"a": 1}, "user_id": "someone-else"'},
            {**_session("nan"), "search_meta": '{"a": NaN}'},
            {**_session("surrogate"), "search_meta": '{"a": "\\ud800"}'},
            {**_session("not-object"), "search_meta": "[1, 2]"},
            {**_session("nul"), "search_query": "a\x00b"},
            {**_session("seconds"), "created_at": 1_701_234_567},
            {"session_id": "ok1", **_ev("e2"), "meta": '{"k": "v"}'},
        ]
        reports, stored = [], []
        for force_dicts in (False, True):
            store = SessionStore.from_url(f"sqlite:///{tmp_path / f'store-{force_dicts}.db'}")
            store.migrate()
            try:
                path = _parquet(tmp_path / f"rows-{force_dicts}.parquet", rows, force_dicts=force_dicts)
                report = _run(store, path, fmt="parquet", invalid_threshold=1.0)
                reports.append(
                    (report.loaded_sessions, report.loaded_events, [(e.line, e.reason) for e in report.errors])
                )
                stored.append([store.get_session(s).model_dump(exclude={"batch_id"}) for s in ("ok1", "ok2")])
            finally:
                store.dispose()
        lines = [
            readers.batch_lines(next(pq.ParquetFile(tmp_path / f"rows-{force}.parquet").iter_batches()))
            for force in (False, True)
        ]
        assert lines[1] is None  # the dict way, all of it
        assert lines[0] is not None  # the JSON text way, but for the rows whose JSON text is not one value
        dict_way = {i + 1 for i, line in enumerate(lines[0]) if line is None}
        assert {3, 4, 5} <= dict_way <= {3, 4, 5, 6}  # bad JSON, injected text, NaN (a lone surrogate: either)
        assert reports[0] == reports[1]
        assert stored[0] == stored[1]
        loaded_sessions, loaded_events, errors = reports[0]
        refused = {line for line, _ in errors}
        assert refused == {3, 4, 5, 6, 7, 8, 9}, errors
        assert "invalid JSON" in dict(errors)[4]  # the injected text is refused, not read as a user_id
        assert stored[0][1]["search_meta"] == {"ü": "é", "n": 1.5e300, "list": [1, {"x": None}]}

    def test_rows_the_fast_path_does_not_take_are_judged_the_dict_way(self, tmp_path: Path) -> None:
        # The dict way reads an embedded event's null values as absent and its JSON-string meta as an object;
        # nothing of it may depend on whether the batch also has a column the JSON text way does not take.
        at = 1_701_234_571_000
        events = [
            json.dumps([{"event_id": "e1", "object_id": "o1", "created_at": at, "event_type": None}]),
            json.dumps([{"event_id": "e2", "object_id": "o1", "created_at": at, "meta": '{"k": 1}'}]),
            json.dumps([{"event_id": "e3", "object_id": "o1", "created_at": None}]),
            json.dumps([{"event_id": "e4", "object_id": None, "created_at": at}]),
            json.dumps([{"event_id": "e5", "object_id": "o1", "created_at": at, "meta": "{oops"}]),
            "[" * 3000 + "]" * 3000,
        ]
        rows = [{**_session(f"s{i}"), "events": text} for i, text in enumerate(events)]
        outcomes = []
        for force_dicts in (False, True):
            store = SessionStore.from_url(f"sqlite:///{tmp_path / f'store-{force_dicts}.db'}")
            store.migrate()
            try:
                path = _parquet(tmp_path / f"rows-{force_dicts}.parquet", rows, force_dicts=force_dicts)
                report = _run(store, path, fmt="parquet", invalid_threshold=1.0)
                stored = {e.event_id: (e.event_type, e.meta) for s in ("s0", "s1") for e in store.get_session(s).events}
                outcomes.append(([(e.line, e.reason) for e in report.errors], stored))
            finally:
                store.dispose()
        assert outcomes[0] == outcomes[1]
        errors, stored = outcomes[0]
        assert stored == {"e1": ("click", None), "e2": ("click", {"k": 1})}
        assert [line for line, _ in errors] == [3, 4, 5, 6]

    def test_a_deeply_nested_value_is_an_invalid_row_not_a_failed_import(self, tmp_path: Path) -> None:
        deep = "[" * 3000 + "]" * 3000
        store = SessionStore.from_url(f"sqlite:///{tmp_path / 'store.db'}")
        store.migrate()
        try:
            jsonl = tmp_path / "deep.jsonl"
            jsonl.write_text(
                '{"session_id": "d1", "created_at": 1701234567890, "search_meta": {"a": '
                + deep
                + "}}\n"
                + json.dumps(_session("ok1"))
                + "\n"
            )
            parquet = _parquet(
                tmp_path / "deep.parquet",
                [{**_session("d2"), "search_meta": '{"a": ' + deep + "}"}, _session("ok2")],
                force_dicts=False,
            )
            for path, fmt in ((jsonl, "jsonl"), (parquet, "parquet")):
                report = _run(store, path, fmt=fmt, invalid_threshold=1.0)
                assert report.loaded and report.loaded_sessions == 1
                assert [(e.line, "nested too deeply" in e.reason) for e in report.errors] == [(1, True)]
        finally:
            store.dispose()

    def test_an_integer_beyond_bigint_is_refused_both_ways(self, tmp_path: Path) -> None:
        reasons = []
        for force_dicts in (False, True):
            columns = {
                "session_id": pa.array(["big", "ok"]),
                "created_at": pa.array([2**63, 1_701_234_567_890], pa.uint64()),
            }
            if force_dicts:
                columns["unused_timestamp"] = pa.array([None, None], pa.timestamp("ms"))
            pq.write_table(pa.table(columns), tmp_path / f"big-{force_dicts}.parquet")
            store = SessionStore.from_url(f"sqlite:///{tmp_path / f'big-{force_dicts}.db'}")
            store.migrate()
            try:
                report = _run(store, tmp_path / f"big-{force_dicts}.parquet", fmt="parquet", invalid_threshold=1.0)
                assert report.loaded_sessions == 1
                reasons.append([(e.line, e.reason) for e in report.errors])
            finally:
                store.dispose()
        assert reasons[0] == reasons[1] and [line for line, _ in reasons[0]] == [1]
