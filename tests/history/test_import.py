"""The history import (clickstream.history + store.history_load) on both backends; the hook, the operator and
the DAG are in tests/airflow/test_import.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickstream import models
from clickstream.history import ImportReport, import_history, local_sources
from clickstream.store import InvalidInput, NotFound, SessionStore, now_ms
from tests.support import REPO_ROOT
from tests.support.history import history_session, mixed_file, write_jsonl

REPO = REPO_ROOT
EXAMPLES = REPO / "examples" / "history"
SESSION_FIELDS = set(models.SessionIn.model_fields)


# ------------------------------------------------------------------------------------------ helpers


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _event(sid: str, eid: str, created_at: int = 1_701_234_570_000, **extra: Any) -> dict[str, Any]:
    return {"session_id": sid, "event_id": eid, "object_id": "o1", "created_at": created_at, **extra}


def _run(store: SessionStore, *paths: Path, fmt: str = "jsonl", **options: Any) -> ImportReport:
    return import_history(store, local_sources(*map(str, paths)), fmt, **options)


def _expected(session_rows: list[dict], event_rows: list[dict]) -> dict[str, dict[str, Any]]:
    """session_id -> the session as get_session must show it (registration fields + events, in order)."""
    out = {}
    for row in session_rows:
        body = models.SessionIn(**{k: v for k, v in row.items() if k != "events"}).model_dump()
        out[row["session_id"]] = {**body, "events": [models.EventIn(**e).model_dump() for e in row.get("events", [])]}
    for row in event_rows:
        out[row["session_id"]]["events"].append(
            models.EventIn(**{k: v for k, v in row.items() if k != "session_id"}).model_dump()
        )
    for s in out.values():
        s["events"].sort(key=lambda e: e["created_at"])
    return out


def _stored(store: SessionStore, sid: str) -> dict[str, Any]:
    got = store.get_session(sid).model_dump()
    return {**{k: got[k] for k in SESSION_FIELDS}, "events": got["events"]}


def _parquet(path: Path, rows: list[dict[str, Any]], json_columns: tuple[str, ...]) -> Path:
    """Rows as Parquet; ``json_columns`` are written as strings holding JSON (free-form objects)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist would take the first row's keys only
    table = pa.Table.from_pylist(
        [
            {k: (json.dumps(r[k]) if k in json_columns and r.get(k) is not None else r.get(k)) for k in keys}
            for r in rows
        ]
    )
    pq.write_table(table, path)
    return path


# ------------------------------------------------------------------------------------------ loading


class TestValidFilesLoadExactly:
    def test_example_files_load_exactly(self, store: SessionStore) -> None:
        sessions, events = _read_jsonl(EXAMPLES / "sessions.jsonl"), _read_jsonl(EXAMPLES / "events.jsonl")
        report = _run(store, EXAMPLES / "sessions.jsonl", EXAMPLES / "events.jsonl")
        assert report.loaded and report.invalid == 0 and report.errors == []
        assert (report.rows, report.loaded_sessions, report.loaded_events) == (6, 3, 4)
        for sid, expected in _expected(sessions, events).items():
            assert _stored(store, sid) == expected

    def test_imported_session_equals_a_live_registration(self, store: SessionStore) -> None:
        # Same stored content and hash: re-registering the body live is a no-op success, not a conflict.
        row = _read_jsonl(EXAMPLES / "sessions.jsonl")[0]
        _run(store, EXAMPLES / "sessions.jsonl")
        body = {k: v for k, v in row.items() if k != "events"}
        again = store.register_session(body, check_window=False)
        assert again.status == "already_registered"

    def test_history_has_no_time_window(self, store: SessionStore, tmp_path: Path) -> None:
        old = 1_420_070_400_000  # 2015-01-01, far outside the live window
        report = _run(store, write_jsonl(tmp_path / "old.jsonl", [history_session("s-old", created_at=old)]))
        assert report.loaded and store.get_session("s-old").created_at == old

    def test_parquet_with_json_string_columns_loads_like_jsonl(self, store: SessionStore, tmp_path: Path) -> None:
        sessions, events = _read_jsonl(EXAMPLES / "sessions.jsonl"), _read_jsonl(EXAMPLES / "events.jsonl")
        json_cols = ("search_results", "search_meta", "payload_filter", "sort_by", "events", "meta")
        files = [
            _parquet(tmp_path / "sessions.parquet", sessions, json_cols),
            _parquet(tmp_path / "events.parquet", events, json_cols),
        ]
        report = _run(store, *files, fmt="parquet")
        assert report.loaded and (report.loaded_sessions, report.loaded_events, report.invalid) == (3, 4, 0)
        for sid, expected in _expected(sessions, events).items():
            assert _stored(store, sid) == expected

    def test_parquet_nested_columns_and_mixed_rows(self, store: SessionStore, tmp_path: Path) -> None:
        # search_results / sort_by as nested columns; session and event rows in one file (nulls = absent).
        rows = [
            history_session("p1", sort_by={"field": "stars", "order": "desc"}),
            _event("p1", "e1"),
            history_session("p2"),
            _event("p2", "e2"),
        ]
        report = _run(store, _parquet(tmp_path / "mixed.parquet", rows, ()), fmt="parquet")
        assert report.loaded and (report.loaded_sessions, report.loaded_events) == (2, 2)
        assert _stored(store, "p1") == _expected([rows[0]], [rows[1]])["p1"]

    def test_gzipped_jsonl_is_read(self, store: SessionStore, tmp_path: Path) -> None:
        import gzip

        path = tmp_path / "s.jsonl.gz"
        path.write_bytes(gzip.compress((json.dumps(history_session("gz1")) + "\n").encode()))
        assert _run(store, path).loaded_sessions == 1
        assert store.get_session("gz1").user_id == "u1"

    def test_bad_option_is_refused_naming_it(self, store: SessionStore) -> None:
        with pytest.raises(InvalidInput, match="invalid_threshold"):
            _run(store, EXAMPLES / "sessions.jsonl", invalid_threshold=1.5)
        with pytest.raises(InvalidInput, match="format"):
            _run(store, EXAMPLES / "sessions.jsonl", fmt="csv")


class TestReRunChangesNothing:
    def test_second_run_loads_nothing_new(self, store: SessionStore) -> None:
        files = (EXAMPLES / "sessions.jsonl", EXAMPLES / "events.jsonl")
        first = _run(store, *files)
        assert first.batch_id is not None
        before = {sid: store.get_session(sid).model_dump() for sid in ("hist-0001", "hist-0002", "hist-0003")}
        second = _run(store, *files)
        assert second.loaded and (second.loaded_sessions, second.loaded_events) == (0, 0)
        assert (second.duplicate_sessions, second.duplicate_events) == (3, 4)
        assert {sid: store.get_session(sid).model_dump() for sid in before} == before
        assert store.get_batch(first.batch_id).sessions == 3

    def test_rerun_after_release_opens_no_batch(self, store: SessionStore) -> None:
        _run(store, EXAMPLES / "sessions.jsonl")
        store.release_batch("r1")
        _run(store, EXAMPLES / "sessions.jsonl")
        assert [b.status for b in store.list_batches()] == ["released"]

    def test_duplicate_rows_within_a_file_load_once(self, store: SessionStore, tmp_path: Path) -> None:
        rows = [history_session("d1"), history_session("d1"), _event("d1", "e1"), _event("d1", "e1")]
        report = _run(store, write_jsonl(tmp_path / "dup.jsonl", rows))
        assert (report.loaded_sessions, report.duplicate_sessions) == (1, 1)
        assert (report.loaded_events, report.duplicate_events) == (1, 1)
        assert len(store.get_session("d1").events) == 1


# ------------------------------------------------------------------------------------- invalid rows


class TestInvalidRowsAndThreshold:
    def test_above_threshold_loads_nothing_and_names_the_lines(self, store: SessionStore, tmp_path: Path) -> None:
        path = mixed_file(tmp_path)
        report = _run(store, path, invalid_threshold=0.1)  # 2 of 10 invalid = 20% > 10%
        assert not report.loaded
        assert (report.invalid, report.invalid_share, report.loaded_sessions) == (2, 0.2, 0)
        assert [(e.file, e.line) for e in report.errors] == [(str(path), 3), (str(path), 7)]
        for i in (1, 2, 4, 10):
            with pytest.raises(NotFound):
                store.get_session(f"m{i}")
        assert store.list_batches() == []

    def test_below_threshold_loads_only_the_valid_rows(self, store: SessionStore, tmp_path: Path) -> None:
        report = _run(store, mixed_file(tmp_path), invalid_threshold=0.2)  # 20% <= 20%
        assert report.loaded and report.loaded_sessions == 8 and report.invalid == 2
        for i in (1, 2, 4, 5, 6, 8, 9, 10):
            assert store.get_session(f"m{i}").session_id == f"m{i}"
        for i in (3, 7):
            with pytest.raises(NotFound):
                store.get_session(f"m{i}")

    def test_zero_threshold_requires_every_row_valid(self, store: SessionStore, tmp_path: Path) -> None:
        assert not _run(store, mixed_file(tmp_path), invalid_threshold=0).loaded
        assert _run(store, EXAMPLES / "sessions.jsonl", invalid_threshold=0).loaded

    def test_seconds_timestamp_is_rejected_saying_seconds(self, store: SessionStore, tmp_path: Path) -> None:
        rows = [history_session("sec1", created_at=1_701_234_567), _event("x", "e1", created_at=1_701_234_570)]
        report = _run(store, write_jsonl(tmp_path / "sec.jsonl", rows), invalid_threshold=1)
        assert [e.line for e in report.errors] == [1, 2]
        assert all("created_at" in e.reason and "seconds" in e.reason for e in report.errors)

    def test_embedded_event_error_names_the_field(self, store: SessionStore, tmp_path: Path) -> None:
        row = history_session("ev1", events=[{"event_id": "e1", "object_id": "o1", "created_at": 1_701_234_570}])
        report = _run(store, write_jsonl(tmp_path / "e.jsonl", [row]), invalid_threshold=1)
        assert "events.0.created_at" in report.errors[0].reason

    def test_unknown_field_and_non_object_rows_are_invalid(self, store: SessionStore, tmp_path: Path) -> None:
        rows = [history_session("u1", colour="red"), "[1, 2]", history_session("ok1")]
        report = _run(store, write_jsonl(tmp_path / "u.jsonl", rows), invalid_threshold=1)
        assert [(e.line, "colour" in e.reason or "JSON object" in e.reason) for e in report.errors] == [
            (1, True),
            (2, True),
        ]
        assert report.loaded_sessions == 1

    def test_conflicting_session_is_an_invalid_row_and_the_stored_one_is_kept(
        self, store: SessionStore, tmp_path: Path
    ) -> None:
        store.register_session(history_session("c1", search_query="original"), check_window=False)
        rows = [
            history_session("ok1"),
            history_session("c1", search_query="changed"),
            {**history_session("c2"), "events": [{k: v for k, v in _event("c2", "e9").items() if k != "session_id"}]},
            history_session(
                "c2",
                search_query="other content",
                events=[{k: v for k, v in _event("c2", "e8").items() if k != "session_id"}],
            ),
        ]
        path = write_jsonl(tmp_path / "c.jsonl", rows)
        report = _run(store, path, invalid_threshold=0.5)
        assert report.loaded and report.invalid == 2
        assert [(e.line, "different content" in e.reason) for e in report.errors] == [(2, True), (4, True)]
        assert store.get_session("c1").search_query == "original"
        assert [e.event_id for e in store.get_session("c2").events] == ["e9"]  # the conflicting row's are not

    def test_conflicts_count_towards_the_threshold(self, store: SessionStore, tmp_path: Path) -> None:
        store.register_session(history_session("c1", search_query="original"), check_window=False)
        rows = [history_session("c1", search_query="changed"), history_session("new1")]
        path = write_jsonl(tmp_path / "c.jsonl", rows)
        report = _run(store, path, invalid_threshold=0.4)  # 1 of 2 = 50%
        assert not report.loaded and report.errors[0].line == 1
        with pytest.raises(NotFound):
            store.get_session("new1")

    def test_error_list_is_capped_but_every_invalid_row_counts(self, store: SessionStore, tmp_path: Path) -> None:
        rows = ["not json"] * 5 + [history_session("ok1")]
        report = _run(store, write_jsonl(tmp_path / "bad.jsonl", rows), invalid_threshold=1, max_errors=2)
        assert report.invalid == 5 and [e.line for e in report.errors] == [1, 2] and report.errors_truncated


# --------------------------------------------------------------------------------- batch invariants


class TestBatchAssignment:
    def test_imported_sessions_join_the_collecting_batch(self, store: SessionStore) -> None:
        live = store.register_session(history_session("live1", created_at=now_ms()))
        assert live.batch_id is not None and live.session_number is not None
        report = _run(store, EXAMPLES / "sessions.jsonl")
        assert report.batch_id == live.batch_id
        batch = store.get_batch(live.batch_id)
        assert batch.status == "collecting" and batch.sessions == 4
        numbers = [store.get_session(f"hist-000{i}").session_number for i in (1, 2, 3)]
        assert numbers == sorted(numbers) and min(numbers) > live.session_number  # file order, same identity

    def test_never_into_a_released_batch(self, store: SessionStore) -> None:
        live = store.register_session(history_session("live1", created_at=now_ms()))
        assert live.batch_id is not None
        store.release_batch("r1")
        report = _run(store, EXAMPLES / "sessions.jsonl")
        assert report.batch_id != live.batch_id
        assert report.batch_id is not None
        assert store.get_batch(live.batch_id).sessions == 1
        assert store.get_batch(report.batch_id).status == "collecting"
        page = store.get_batch_sessions(report.batch_id, limit=10)
        assert [s.session_id for s in page.sessions] == ["hist-0001", "hist-0002", "hist-0003"]

    def test_events_of_sessions_in_released_batches_are_stored(self, store: SessionStore, tmp_path: Path) -> None:
        _run(store, EXAMPLES / "sessions.jsonl")
        store.release_batch("r1")
        report = _run(store, write_jsonl(tmp_path / "late.jsonl", [_event("hist-0002", "late-1")]))
        assert report.loaded_events == 1 and report.batch_id is None
        assert "late-1" in [e.event_id for e in store.get_session("hist-0002").events]


class TestImportDuringRelease:
    def test_release_committing_during_the_load_sends_the_sessions_to_a_new_batch(self, pg_url: str) -> None:
        # PostgreSQL: a release holds the collecting batch row when the import's load starts; the import
        # waits for it (FOR SHARE), then finds the batch released, opens a new one and loads there.
        import threading

        store = SessionStore.from_url(pg_url)
        store.migrate()
        try:
            live = store.register_session(history_session("live1", created_at=now_ms()))
            results: list[ImportReport] = []
            with store.engine.connect() as conn:
                tx = conn.begin()
                conn.execute(store.db.clause("release_collecting"), {"release_id": "r1", "now": now_ms()})
                worker = threading.Thread(target=lambda: results.append(_run(store, EXAMPLES / "sessions.jsonl")))
                worker.start()
                worker.join(timeout=1.0)
                assert worker.is_alive(), "the import must wait for the release in progress"
                tx.commit()
            worker.join(timeout=60)
            report = results[0]
            assert report.loaded and report.batch_id != live.batch_id
            assert live.batch_id is not None and report.batch_id is not None
            assert store.get_batch(live.batch_id).sessions == 1
            assert store.get_batch(report.batch_id).status == "collecting"
        finally:
            store.dispose()
