"""Live ingestion's fast path (clickstream.store.fastrows, Checks.live_session_params / live_event_record)
agrees with the models' path (validate + Checks.session_params / event_record).

It may take a body only if the models accept it, and then gives the same columns, content hash and size-limit
reasons; what it does not take goes to the models, so ``ingest_bulk`` answers the same whether its items come
as JSON text (``POST /bulk``), as dicts (the hook) or as models, on both backends.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from clickstream import models
from clickstream.store import InvalidInput, SessionStore, StoreConfig
from clickstream.store.checks import Checks, validate
from clickstream.store.fastrows import BODY_FIELDS, LiveEvent, LiveSession, live_event, live_session
from tests.store.helpers import HOUR, T0, a_bulk_event, a_session, accounted, an_event
from tests.support.random_bodies import random_session, random_value

JSON_COLUMNS = ("search_results", "search_meta", "payload_filter", "sort_by")


def _random_event(rng: random.Random, i: int) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": f"s{i % 7}", "event_id": f"e{i}", "object_id": rng.choice(["o", "ö"])}
    if rng.random() < 0.7:
        body["created_at"] = T0 + i
    if rng.random() < 0.5:
        body["event_type"] = rng.choice(["click", "view", "x" * 64])
    if rng.random() < 0.6:
        body["meta"] = rng.choice([None, {"rank": i, "v": random_value(rng, 1)}])
    return body


def _forms(body: Any) -> list[Any]:
    """A body as the fast path may get it: JSON text (ASCII-escaped or not), a msgspec.Raw, the parsed dict."""
    return [json.dumps(body).encode(), msgspec.Raw(json.dumps(body, ensure_ascii=False).encode()), body]


def _same_columns(fast: dict[str, Any], slow: dict[str, Any]) -> None:
    assert fast.keys() == slow.keys()
    for key, value in slow.items():
        if key in JSON_COLUMNS:
            assert (fast[key] is None) == (value is None)
            assert value is None or json.loads(fast[key]) == json.loads(value)
        else:
            assert fast[key] == value, key


NOW = T0 + 1000


class TestTheFastPathAgreesWithTheModels:
    def test_the_structs_have_the_models_fields(self) -> None:
        # content_hash encodes a LiveSession as the registration body itself: the same fields, no others
        assert LiveSession.__struct_fields__ == BODY_FIELDS == tuple(models.SessionIn.model_fields)
        assert set(LiveEvent.__struct_fields__) == set(models.BulkEventIn.model_fields)

    def test_random_valid_sessions_are_taken_with_the_models_columns_and_hash(self) -> None:
        checks, rng = Checks(StoreConfig()), random.Random(25)
        for i in range(400):
            body = random_session(rng, i, T0)
            slow = checks.session_params(validate(models.SessionIn, body), NOW, check_window=True)
            for form in _forms(body):
                taken = live_session(form)
                assert taken is not None, body
                _same_columns(checks.live_session_params(taken, NOW, check_window=True), slow)

    def test_random_valid_events_are_taken_with_the_models_record(self) -> None:
        checks, rng = Checks(StoreConfig()), random.Random(26)
        for i in range(400):
            body = _random_event(rng, i)
            slow = checks.event_record(validate(models.BulkEventIn, body), NOW, "", check_window=True)
            for form in _forms(body):
                taken = live_event(form)
                assert taken is not None, body
                fast = checks.live_event_record(taken, NOW, check_window=True)
                meta = fast.pop("meta")
                assert fast == {k: v for k, v in slow.items() if k != "meta"}
                assert (json.loads(bytes(meta)) if meta is not None else None) == slow["meta"]

    INVALID_SESSIONS = [
        ("unknown field", a_session("s1", colour="red")),
        ("session_id missing", {"created_at": T0}),
        ("session_id empty", a_session("")),
        ("session_id longer than 128", a_session("x" * 129)),
        ("session_id not text", a_session(7)),  # type: ignore[arg-type]
        ("user_id empty", a_session("s1", user_id="")),
        ("user_id longer than 256", a_session("s1", user_id="u" * 257)),
        ("created_at in seconds", a_session("s1", created_at=1_701_234_567)),
        ("created_at beyond BIGINT", a_session("s1", created_at=2**63)),
        ("created_at with a fraction", a_session("s1", created_at=1_701_234_567_890.5)),  # type: ignore[arg-type]
        ("search_results null", a_session("s1", search_results=None)),
        ("result without object_id", a_session("s1", search_results=[{"rank": 1}])),
        ("result rank not a number", a_session("s1", search_results=[{"object_id": "o1", "rank": "high"}])),
        ("result unknown field", a_session("s1", search_results=[{"object_id": "o1", "score": 1}])),
        ("result meta not an object", a_session("s1", search_results=[{"object_id": "o1", "meta": [1]}])),
        ("sort_by order not asc/desc", a_session("s1", sort_by={"field": "stars", "order": "up"})),
        ("sort_by field empty", a_session("s1", sort_by={"field": "", "order": "asc"})),
        ("search_meta not an object", a_session("s1", search_meta=[1, 2])),
        ("is_irrelevant not a boolean", a_session("s1", is_irrelevant=[True])),
        ("search_query not text", a_session("s1", search_query=["q"])),
        ("NUL in text", a_session("s1", search_query="a\x00b")),
        ("NUL in a free-form key", a_session("s1", search_meta={"a\x00": 1})),
        ("NUL in a free-form value", a_session("s1", payload_filter={"a": ["x\x00"]})),
        ("not an object", [1, 2]),
        ("null", None),
    ]
    INVALID_EVENTS = [
        ("unknown field", a_bulk_event("s1", "e1", colour="red")),
        ("without session_id", an_event("e1")),
        ("session_id empty", a_bulk_event("", "e1")),
        ("event_id longer than 256", a_bulk_event("s1", "e" * 257)),
        ("without object_id", {"session_id": "s1", "event_id": "e1"}),
        ("event_type empty", a_bulk_event("s1", "e1", event_type="")),
        ("event_type longer than 64", a_bulk_event("s1", "e1", event_type="t" * 65)),
        ("created_at in seconds", a_bulk_event("s1", "e1", created_at=1_701_234_570)),
        ("meta not an object", a_bulk_event("s1", "e1", meta="x")),
        ("NUL in an id", a_bulk_event("s1", "e\x00")),
        ("NUL in meta", a_bulk_event("s1", "e1", meta={"k": "v\x00"})),
        ("a string", "event"),
    ]

    @pytest.mark.parametrize(("rule", "body"), INVALID_SESSIONS, ids=[r for r, _ in INVALID_SESSIONS])
    def test_each_rule_of_a_session_is_left_to_the_models(self, rule: str, body: Any) -> None:
        with pytest.raises(InvalidInput):
            validate(models.SessionIn, body)
        for form in _forms(body):
            assert live_session(form) is None

    @pytest.mark.parametrize(("rule", "body"), INVALID_EVENTS, ids=[r for r, _ in INVALID_EVENTS])
    def test_each_rule_of_an_event_is_left_to_the_models(self, rule: str, body: Any) -> None:
        with pytest.raises(InvalidInput):
            validate(models.BulkEventIn, body)
        for form in _forms(body):
            assert live_event(form) is None

    @pytest.mark.parametrize(
        "text",
        [
            b'{"session_id": "s1", "search_meta": {"a": NaN}}',
            b'{"session_id": "s1", "search_meta": {"a": 1e400}}',
            b'{"session_id": "s1", "user_id": "\\ud800"}',
            b'{"session_id": "s1\\u0000"}',
            b'{"session_id": "s1", "created_at": "1750000000000"}',  # valid for the models (lax), not taken
        ],
    )
    def test_json_not_taken_is_left_to_the_models(self, text: bytes) -> None:
        assert live_session(text) is None

    def test_python_values_json_cannot_hold_are_left_to_the_models(self) -> None:
        for body in (
            a_session("s1", search_meta={"a": float("nan")}),
            a_session("s1", search_results=[{"object_id": "o1", "rank": float("inf")}]),
            a_session("s1", user_id="\ud800"),
        ):
            assert live_session(body) is None
        assert live_event(a_bulk_event("s1", "e1", meta={"x": float("-inf")})) is None
        assert live_session(models.SessionIn.model_validate(a_session("s1"))) is None  # a model: validated already


class TestTheLimitsGiveTheModelsReasons:
    CONFIG = StoreConfig(max_results=3, max_json_bytes=40)

    SESSIONS = [
        a_session("window", created_at=NOW - 48 * HOUR),
        a_session("future", created_at=NOW + HOUR),
        a_session("results", results=("a", "b", "c", "d")),
        a_session("meta", search_meta={"k": "x" * 40}),
        a_session("filter", payload_filter={"k": "é" * 20}),  # 40 characters of text, more bytes
        a_session("result-meta", search_results=[{"object_id": "a"}, {"object_id": "b", "meta": {"k": "x" * 40}}]),
        # 1e+16 (json.dumps) is one byte longer than msgspec's 1e16: at the bound, the store's text decides
        a_session("spelling", search_meta={"k": [1e16, 1e16, 1e16, 1e16, 1e16]}),
        a_session("at-the-bound", search_meta={"k": [1e16, 1e16, 1e16, 1e16]}),
        a_session("fine"),
    ]
    EVENTS = [
        a_bulk_event("s1", "window", created_at=NOW - 48 * HOUR),
        a_bulk_event("s1", "meta", meta={"k": "x" * 40}),
        a_bulk_event("s1", "spelling", meta={"k": [1e16, 1e16, 1e16, 1e16, 1e16]}),
        a_bulk_event("s1", "fine", meta={"k": 1}),
    ]

    @pytest.mark.parametrize("body", SESSIONS, ids=[b["session_id"] for b in SESSIONS])
    def test_a_session(self, body: dict[str, Any]) -> None:
        checks = Checks(self.CONFIG)
        try:
            slow: Any = checks.session_params(validate(models.SessionIn, body), NOW, check_window=True)
        except InvalidInput as err:
            slow = err.detail
        for form in _forms(body):
            taken = live_session(form)
            assert taken is not None
            try:
                fast: Any = checks.live_session_params(taken, NOW, check_window=True)
            except InvalidInput as err:
                fast = err.detail
            if isinstance(slow, str):
                assert fast == slow
            else:
                _same_columns(fast, slow)

    @pytest.mark.parametrize("body", EVENTS, ids=[b["event_id"] for b in EVENTS])
    def test_an_event(self, body: dict[str, Any]) -> None:
        checks = Checks(self.CONFIG)
        try:
            slow: Any = checks.event_record(validate(models.BulkEventIn, body), NOW, "", check_window=True)["event_id"]
        except InvalidInput as err:
            slow = err.detail
        for form in _forms(body):
            taken = live_event(form)
            assert taken is not None
            try:
                fast: Any = checks.live_event_record(taken, NOW, check_window=True)["event_id"]
            except InvalidInput as err:
                fast = err.detail
            assert fast == slow


def _items(prefix: str) -> tuple[list[Any], list[Any]]:
    """A request's good and bad items (every kind of answer), their ids under ``prefix``."""
    p = prefix
    sessions = [
        a_session(f"{p}1"),
        a_session(f"{p}2", created_at=T0 // 1000),  # invalid: seconds (the models' message)
        a_session(f"{p}stored", search_query="other content"),  # conflicts with the stored session
        a_session(f"{p}1"),  # same as sessions[0]: already registered
        a_session(f"{p}1", search_query="changed"),  # differs from sessions[0] in this request
        {"session_id": f"{p}3", "created_at": T0, "typo": 1},  # invalid: unknown field
        a_session(f"{p}4", results=("a", "b", "c", "d")),  # over max_results
        a_session(f"{p}5", search_meta={"k": "x" * 100}),  # over max_json_bytes
        a_session(f"{p}6", created_at=T0 - 48 * HOUR),  # outside the live window
        a_session(f"{p}7", search_meta={"a": float("nan")}),  # NaN (JSON text: the NaN literal)
        a_session(f"{p}erased"),  # tombstoned
        {"session_id": f"{p}8", "search_results": [{"object_id": "a"}]},  # created_at omitted: now
        "not an object",
    ]
    events = [
        a_bulk_event(f"{p}1", "e1"),
        a_bulk_event(f"{p}1", "e2", "b", meta={"k": 1}),
        a_bulk_event(f"{p}1", "e1"),  # sent twice: duplicate
        a_bulk_event(f"{p}stored", "old"),  # stored before: duplicate
        a_bulk_event(f"{p}stored", "new"),  # over max_events_per_session
        a_bulk_event(f"{p}4", "e1", created_at=T0 - 48 * HOUR),  # outside the live window
        {"session_id": f"{p}4", "event_id": "e9"},  # invalid: no object_id
        a_bulk_event(f"{p}4", "big", meta={"k": "x" * 100}),  # over max_json_bytes
        a_bulk_event(f"{p}erased", "e1"),  # erased
        {"session_id": f"{p}8", "event_id": "e1", "object_id": "a"},  # created_at omitted: now
        7,
    ]
    return sessions, events


class TestIngestBulkAnswersAlikeWhateverTheItemsForm:
    """The same request as JSON text (POST /bulk's form), as dicts and, for the valid items, as models."""

    FORMS: dict[str, Callable[[Any], Any]] = {
        "json": lambda item: json.dumps(item).encode(),
        "raw": lambda item: msgspec.Raw(json.dumps(item, ensure_ascii=False).encode()),
        "dict": lambda item: item,
        "model": lambda item: item,  # replaced by its model below when the models accept it
    }

    def test_good_and_bad_items(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store(max_results=3, max_json_bytes=64, max_events_per_session=2)
        answers = {}
        for form, encode in self.FORMS.items():
            p = f"{form}-"
            store.register_session(a_session(f"{p}stored"))
            store.push_events(f"{p}stored", [an_event("old"), an_event("old2")])
            store.register_session(a_session(f"{p}erased", user_id=f"{p}user"))
            store.erase_user(f"{p}user")
            sessions, events = _items(p)
            if form == "model":
                sessions = [_model(models.SessionIn, s) for s in sessions]
                events = [_model(models.BulkEventIn, e) for e in events]
            else:
                sessions, events = [encode(s) for s in sessions], [encode(e) for e in events]
            result = store.ingest_bulk(sessions, events)
            assert accounted(result) == len(sessions) + len(events)
            answers[form] = json.loads(result.model_dump_json().replace(p, "<p>"))
            assert store.get_session(f"{p}8").created_at == T0  # omitted: the time of receipt
        assert answers["json"] == answers["raw"] == answers["dict"] == answers["model"]
        got = answers["json"]
        assert got["sessions"] == {"registered": 2, "already_registered": 1, "erased": 1}
        assert got["events"] == {"stored": 3, "duplicates": 2, "over_limit": 1, "erased": 1, "purged": 0}
        assert [r["item"] for r in got["rejected"]] == [
            *(f"sessions[{i}]" for i in (1, 2, 4, 5, 6, 7, 8, 9, 12)),
            *(f"events[{i}]" for i in (5, 6, 7, 10)),
        ]
        reasons = {r["item"]: r["error"] for r in got["rejected"]}
        assert reasons["sessions[6]"].startswith("search_results: 4 results; at most 3")
        assert reasons["sessions[7]"].startswith("search_meta: JSON object of")
        assert reasons["sessions[8]"].startswith("created_at:") and "past" in reasons["sessions[8]"]
        assert reasons["sessions[9]"].startswith("search_meta")
        assert reasons["events[7]"].startswith("meta: JSON object of")

    def test_a_request_of_json_text_is_stored_as_one_of_dicts(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store()
        rng = random.Random(27)
        bodies = [random_session(rng, i, T0) for i in range(40)]
        events = [{**_random_event(rng, i), "session_id": bodies[i % 40]["session_id"]} for i in range(80)]
        as_text = store.ingest_bulk([json.dumps(b).encode() for b in bodies], [json.dumps(e).encode() for e in events])
        assert (as_text.sessions.registered, as_text.events.stored, as_text.rejected) == (40, 80, [])
        stored = {b["session_id"]: store.get_session(b["session_id"]).model_dump() for b in bodies}
        # the same bodies as dicts, as models: already registered (same content hash), events duplicates
        for form in (bodies, [models.SessionIn.model_validate(b) for b in bodies]):
            again = store.ingest_bulk(form, events)
            assert (again.sessions.already_registered, again.events.duplicates, again.rejected) == (40, 80, [])
        for b in bodies:  # and live registration reads it back the same under another id
            live_id = f"live-{b['session_id']}"
            store.register_session({**b, "session_id": live_id})
            live = store.get_session(live_id).model_dump()
            imported = stored[b["session_id"]]
            for key in ("session_id", "session_number", "events"):
                del live[key], imported[key]
            assert live == imported


def _model(model: type[Any], item: Any) -> Any:
    try:
        return model.model_validate(item)
    except Exception:
        return item


class TestRegisterAndPushAnswerAlikeAsDictsOrModels:
    """register_session and push_events: a plain dict takes the fast path, a model the models' path; the answers,
    the stored sessions (content hash included: registering the other form again is ``already_registered``)
    and the refusals' messages naming the field are the same."""

    def test_valid_bodies(self, make_store: Callable[..., SessionStore]) -> None:
        store = make_store()
        rng = random.Random(28)
        for i in range(30):
            body = random_session(rng, i, T0)
            events = [{k: v for k, v in _random_event(rng, 3 * i + j).items() if k != "session_id"} for j in range(3)]
            as_dict = store.register_session(body)
            assert as_dict.status == "registered"
            again = store.register_session(models.SessionIn.model_validate(body))
            assert again.status == "already_registered"
            pushed = store.push_events(body["session_id"], events)
            repeated = store.push_events(body["session_id"], [models.EventIn.model_validate(e) for e in events])
            assert (pushed.stored, repeated.duplicates) == (len({e["event_id"] for e in events}),) * 2
            model_id = f"model-{body['session_id']}"
            store.register_session(models.SessionIn.model_validate({**body, "session_id": model_id}))
            store.push_events(model_id, [models.EventIn.model_validate(e) for e in events])
            by_dict = store.get_session(body["session_id"]).model_dump()
            by_model = store.get_session(model_id).model_dump()
            for key in ("session_id", "session_number"):
                del by_dict[key], by_model[key]
            assert by_dict == by_model

    @pytest.mark.parametrize(
        ("events", "field"),
        [
            ([an_event("e1"), an_event("e2", created_at=NOW - 48 * HOUR)], "events.1.created_at"),
            ([an_event("e1"), an_event("e2", meta={"k": "x" * 100})], "events.1.meta"),
            ([an_event("e1"), {"event_id": "e2"}], "events.1.object_id"),
            ([{**an_event("e1"), "session_id": "s1"}], "events.0.session_id"),
        ],
        ids=["window", "meta-size", "no-object-id", "own-session-id"],
    )
    def test_a_refused_push_names_the_field_either_way(
        self, make_store: Callable[..., SessionStore], events: list[dict[str, Any]], field: str
    ) -> None:
        store = make_store(max_json_bytes=64)
        with pytest.raises(InvalidInput) as as_dicts:
            store.push_events("s1", events)
        with pytest.raises(InvalidInput) as as_models:
            store.push_events("s1", [_model(models.EventIn, e) if "session_id" not in e else e for e in events])
        assert as_dicts.value.detail == as_models.value.detail
        assert field in str(as_dicts.value.detail)
