"""The history import's fast path (clickstream.history.fast) agrees with the live models.

It may accept a row only if the models accept it, with the same stored values and the same content hash;
every rule of the models is tried at least once with a row the fast path must leave to the models.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from clickstream import models
from clickstream.history import import_history, local_sources
from clickstream.history.checks import validate_row
from clickstream.history.fast import FastEvent, FastSession, convert_row, decode_line
from clickstream.store import InvalidInput, SessionStore
from clickstream.store.rows import content_hash, session_columns
from tests.support.random_bodies import random_session

T = 1_701_234_567_890
JSON_COLUMNS = {2, 3, 4, 5}  # search_results, search_meta, payload_filter, sort_by in FastSession.columns


def _session(sid: str = "s1", **extra: Any) -> dict[str, Any]:
    return {"session_id": sid, "search_results": [{"object_id": "o1", "rank": 1}], "created_at": T, **extra}


def _event(**extra: Any) -> dict[str, Any]:
    return {"event_id": "e1", "object_id": "o1", "created_at": T + 1, **extra}


def _agree(row: dict[str, Any], fast: FastSession | FastEvent | None) -> None:
    """``fast`` (the fast path's result on ``row``) is None or exactly the models' answer."""
    if fast is None:
        return
    body = validate_row(row)  # the fast path accepted: the models must accept too (else InvalidInput)
    if isinstance(fast, FastEvent):
        assert isinstance(body, models.EventIn) and "session_id" in row
        expected = models.EventIn.model_validate({k: v for k, v in row.items() if k != "session_id"}).model_dump()
        assert fast.session_id == row["session_id"]
        got = dict(zip(("event_id", "object_id", "event_type", "created_at", "meta"), fast.columns, strict=True))
        assert {**got, "meta": json.loads(got["meta"]) if got["meta"] is not None else None} == expected
        return
    session = models.SessionIn.model_validate({k: v for k, v in row.items() if k != "events"})
    columns = list(session_columns(session).values())
    for i, (mine, theirs) in enumerate(zip(fast.columns[:11], columns, strict=True)):
        if i in JSON_COLUMNS:
            assert (mine is None) == (theirs is None) and (mine is None or json.loads(mine) == json.loads(theirs))
        else:
            assert mine == theirs, (i, mine, theirs)
    assert fast.columns[10] == content_hash(session)
    events = [models.EventIn.model_validate(e).model_dump() for e in row.get("events", [])]
    assert (json.loads(fast.columns[11]) if fast.columns[11] else []) == events
    assert fast.events == len(events)


class TestFastPathAgreesWithTheModels:
    def test_random_valid_sessions_take_the_fast_path_with_the_models_values_and_hash(self) -> None:
        rng = random.Random(14)
        taken = 0
        for i in range(600):
            row = random_session(rng, i, T, history=True)
            line = json.dumps(row, ensure_ascii=rng.random() < 0.5).encode()
            fast = decode_line(line)
            _agree(row, fast)
            _agree(row, convert_row(json.loads(line)))  # the Parquet path: values already parsed
            taken += fast is not None
        assert taken == 600  # every one of these valid rows is taken by the fast path

    def test_event_rows_take_the_fast_path(self) -> None:
        rows = [
            {"session_id": "s1", **_event()},
            {"session_id": "s1", **_event(event_type="download", meta={"format": "zip", "size": 1.5e-9})},
        ]
        for row in rows:
            fast = decode_line(json.dumps(row).encode())
            assert isinstance(fast, FastEvent)
            _agree(row, fast)

    # (rule, row): each row breaks one rule of the models; the fast path must leave it to them
    INVALID = [
        ("unknown field", _session(colour="red")),
        ("unknown field of an event row", {"session_id": "s1", **_event(colour="red")}),
        ("session_id missing", {k: v for k, v in _session().items() if k != "session_id"}),
        ("session_id empty", _session("")),
        ("session_id longer than 128", _session("x" * 129)),
        ("session_id not text", _session(7)),  # type: ignore[arg-type]
        ("user_id empty", _session(user_id="")),
        ("user_id longer than 256", _session(user_id="u" * 257)),
        ("created_at missing (history)", {k: v for k, v in _session().items() if k != "created_at"}),
        ("created_at in seconds", _session(created_at=1_701_234_567)),
        ("created_at negative", _session(created_at=-5)),
        ("created_at beyond BIGINT", _session(created_at=2**63)),
        ("created_at with a fraction", _session(created_at=1_701_234_567_890.5)),
        ("search_results not a list", _session(search_results={"object_id": "o1"})),
        ("search_results null", _session(search_results=None)),
        ("result without object_id", _session(search_results=[{"rank": 1}])),
        ("result object_id empty", _session(search_results=[{"object_id": ""}])),
        ("result object_id longer than 256", _session(search_results=[{"object_id": "o" * 257}])),
        ("result rank not a number", _session(search_results=[{"object_id": "o1", "rank": "high"}])),
        ("result unknown field", _session(search_results=[{"object_id": "o1", "score": 1}])),
        ("result meta not an object", _session(search_results=[{"object_id": "o1", "meta": [1]}])),
        ("sort_by order not asc/desc", _session(sort_by={"field": "stars", "order": "up"})),
        ("sort_by field empty", _session(sort_by={"field": "", "order": "asc"})),
        ("sort_by unknown field", _session(sort_by={"field": "a", "order": "asc", "x": 1})),
        ("search_meta not an object", _session(search_meta=[1, 2])),
        ("payload_filter not an object", _session(payload_filter="task=x")),
        ("is_irrelevant not a boolean", _session(is_irrelevant=[True])),
        ("is_payload_search not a boolean", _session(is_payload_search={"a": 1})),
        ("search_query not text", _session(search_query=["q"])),
        ("user_id not text", _session(user_id={"id": 1})),
        ("event row created_at missing", {"session_id": "s1", "event_id": "e1", "object_id": "o1"}),
        ("event row meta not an object", {"session_id": "s1", **_event(meta=[1])}),
        ("NUL in text", _session(search_query="a\x00b")),
        ("NUL in a free-form key", _session(search_meta={"a\x00": 1})),
        ("NUL in a free-form value", _session(payload_filter={"a": ["x\x00"]})),
        ("NUL in an embedded event id", _session(events=[_event(event_id="e\x00")])),
        ("embedded event created_at in seconds", _session(events=[_event(created_at=1_701_234_570)])),
        ("embedded event created_at missing", _session(events=[{"event_id": "e1", "object_id": "o1"}])),
        ("embedded event event_type longer than 64", _session(events=[_event(event_type="t" * 65)])),
        ("embedded event event_type empty", _session(events=[_event(event_type="")])),
        ("embedded event without object_id", _session(events=[{"event_id": "e1", "created_at": T}])),
        ("embedded event meta not an object", _session(events=[_event(meta="x")])),
        ("embedded event unknown field", _session(events=[_event(session_id="s1")])),
        ("events not a list", _session(events={"event_id": "e1"})),
        ("event row event_id longer than 256", {"session_id": "s1", **_event(event_id="e" * 257)}),
        ("event row without session_id", _event()),
        ("event row session_id empty", {"session_id": "", **_event()}),
        ("event row created_at in seconds", {"session_id": "s1", **_event(created_at=1_701_234_570)}),
    ]

    @pytest.mark.parametrize(("rule", "row"), INVALID, ids=[rule for rule, _ in INVALID])
    def test_each_rule_is_left_to_the_models(self, rule: str, row: dict[str, Any]) -> None:
        with pytest.raises(InvalidInput):
            validate_row(row)
        assert decode_line(json.dumps(row).encode()) is None
        assert convert_row(row) is None

    @pytest.mark.parametrize(
        ("rule", "line"),
        [
            ("NaN", b'{"session_id": "s1", "created_at": 1701234567890, "search_meta": {"a": NaN}}'),
            (
                "number too large for a float",
                b'{"session_id": "s1", "created_at": 1701234567890, "search_meta": {"a": 1e400}}',
            ),
            ("lone surrogate", b'{"session_id": "s1", "created_at": 1701234567890, "user_id": "\\ud800"}'),
            ("NUL escape", b'{"session_id": "s1\\u0000", "created_at": 1701234567890}'),
            ("not JSON", b'{"session_id": "s1", '),
            ("not an object", b"[1, 2]"),
        ],
    )
    def test_json_the_models_refuse_is_left_to_them(self, rule: str, line: bytes) -> None:
        assert decode_line(line) is None

    def test_python_values_json_cannot_hold_are_left_to_the_models(self) -> None:
        for row in (
            _session(search_meta={"a": float("nan")}),
            _session(search_results=[{"object_id": "o1", "rank": float("inf")}]),
            _session(user_id="\ud800"),
            _session(events=[_event(meta={"x": float("-inf")})]),
        ):
            with pytest.raises(InvalidInput):
                validate_row(row)
            assert convert_row(row) is None

    def test_lax_shapes_the_models_accept_are_left_to_them(self) -> None:
        # valid for the models (lax JSON mode), not taken by the fast path: they still load, as before
        for row in (_session(created_at=str(T)), _session(is_irrelevant="true"), _session(created_at=float(T))):
            validate_row(row)
            _agree(row, decode_line(json.dumps(row).encode()))


class TestImportStoresWhatLiveRegistrationStores:
    def test_random_sessions_import_then_live_registration_is_already_registered(
        self, store: SessionStore, tmp_path: Path
    ) -> None:
        rng = random.Random(7)
        rows = [random_session(rng, i, T, history=True) for i in range(60)]
        rows += [_session("lax", created_at=str(T + 5))]  # one row through the models
        path = tmp_path / "h.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        report = import_history(store, local_sources(str(path)), "jsonl", invalid_threshold=0)
        assert report.loaded and report.invalid == 0 and report.loaded_sessions == len(rows)
        assert report.loaded_events == sum(len(r.get("events", [])) for r in rows)
        for row in rows:
            # the same body registered live (under another id) reads back the same, whatever the backend
            # does to edge values (PostgreSQL's jsonb prints 1e300 in full, -0.0 as 0)
            body = {k: v for k, v in row.items() if k != "events"}
            live_id = f"live-{row['session_id']}"
            store.register_session({**body, "session_id": live_id}, check_window=False)
            if row.get("events"):
                store.push_events(live_id, row["events"], check_window=False)
            imported, live = store.get_session(row["session_id"]).model_dump(), store.get_session(live_id).model_dump()
            for key in ("session_id", "session_number"):
                del imported[key], live[key]
            assert imported == live
            assert store.register_session(body, check_window=False).status == "already_registered"


class TestParquetNonFiniteNumbers:
    def test_nan_in_a_json_string_or_a_nested_column_is_refused_naming_the_field(
        self, store: SessionStore, tmp_path: Path
    ) -> None:
        # the fast path skips its walk for non-finite numbers only for JSON that msgspec decoded (which
        # refuses NaN); NaN written as JSON text (json.loads takes it) or in a nested double column is refused
        import pyarrow as pa
        import pyarrow.parquet as pq

        strings = pa.table(
            {
                "session_id": ["ok", "nan-json"],
                "created_at": [T, T],
                "search_meta": ['{"a": 1.5}', '{"a": NaN}'],
            }
        )
        nested = pa.table(
            {
                "session_id": ["nan-nested"],
                "created_at": [T],
                "search_results": [[{"object_id": "o1", "rank": float("nan")}]],
            }
        )
        pq.write_table(strings, tmp_path / "a.parquet")
        pq.write_table(nested, tmp_path / "b.parquet")
        files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
        report = import_history(store, local_sources(*files), "parquet", invalid_threshold=1)
        assert report.loaded and report.loaded_sessions == 1 and report.invalid == 2
        assert [(e.line, e.reason.split(":")[0]) for e in report.errors] == [
            (2, "search_meta"),
            (1, "search_results.0.rank"),
        ]
        assert store.get_session("ok").search_meta == {"a": 1.5}


class TestEventsAsColumns:
    """PostgreSQL's direct load takes a session row's events as columns (``embed_events=False``), not as one
    JSON array: the same rows are taken, with the models' events."""

    EMBEDDED_TEXT = [
        ("NUL in an embedded event id", _session(events=[_event(event_id="e\x00")])),
        ("NUL in an embedded object_id", _session(events=[_event(object_id="o\x00")])),
        ("NUL in an embedded event_type", _session(events=[_event(event_type="c\x00")])),
        ("NUL in an embedded meta", _session(events=[_event(meta={"k": "v\x00"})])),
        ("lone surrogate in an embedded event id", _session(events=[_event(event_id="e\ud800")])),
    ]

    def test_random_sessions_give_the_models_events(self) -> None:
        rng = random.Random(15)
        for i in range(300):
            row = random_session(rng, i, T, history=True)
            line = json.dumps(row, ensure_ascii=rng.random() < 0.5).encode()
            expected = [models.EventIn.model_validate(e) for e in row.get("events", [])]
            whole = decode_line(line)
            assert isinstance(whole, FastSession)
            for fast in (decode_line(line, embed_events=False), convert_row(json.loads(line), embed_events=False)):
                assert isinstance(fast, FastSession)
                assert fast.columns[:11] == whole.columns[:11] and fast.columns[11] is None
                assert fast.events == len(expected)
                assert [(*c[:4], json.loads(c[4]) if c[4] is not None else None) for c in fast.event_columns] == [
                    (e.event_id, e.object_id, e.event_type, e.created_at, e.meta) for e in expected
                ]

    @pytest.mark.parametrize(
        ("rule", "row"),
        TestFastPathAgreesWithTheModels.INVALID + EMBEDDED_TEXT,
        ids=[rule for rule, _ in TestFastPathAgreesWithTheModels.INVALID + EMBEDDED_TEXT],
    )
    def test_each_rule_is_still_left_to_the_models(self, rule: str, row: dict[str, Any]) -> None:
        with pytest.raises(InvalidInput):
            validate_row(row)
        line = json.dumps(row).encode()
        assert decode_line(line, embed_events=False) is None
        assert convert_row(row, embed_events=False) is None
