"""``POST /bulk``'s fast read of the body (:class:`clickstream.web.routes.bulk.BulkRoute`): a body in the bulk
shape reaches the store as each item's JSON text; any other body is left to FastAPI, which answers it as
before (a JSON error, a missing or unknown field, a list that is not one, text that is not UTF-8)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import msgspec
import pytest

from clickstream.store import SessionStore
from clickstream.web.routes.bulk import split_body
from tests.support.bodies import click, session_body
from tests.support.inprocess import Api


class TestSplitBody:
    def test_the_bulk_shape_splits_into_the_items_json_text(self) -> None:
        body = b'{"sessions": [{"session_id": "s1"}, 7], "events": [{"a": [1, {"b": null}]}]}'
        split = split_body(body)
        assert split is not None
        assert [bytes(r) for r in split["sessions"]] == [b'{"session_id": "s1"}', b"7"]
        assert [json.loads(bytes(r)) for r in split["events"]] == [{"a": [1, {"b": None}]}]
        assert split_body(b'{"events": []}') == {"sessions": [], "events": []}

    @pytest.mark.parametrize(
        "body",
        [
            b'{"sessions": [',  # not JSON
            b'{"sessions": [{"a": NaN}]}',  # json.loads takes NaN: left to it
            b'{"sessions": [], "session": []}',  # unknown field
            b'{"sessions": {"session_id": "x"}}',  # not a list
            b'{"sessions": null}',
            b"[]",
            '{"sessions": [{"session_id": "caf\xe9"}]}'.encode("latin-1"),  # not UTF-8 (msgspec skips item text)
            b'\xef\xbb\xbf{"sessions": []}',  # a byte order mark (json.loads takes it)
        ],
    )
    def test_any_other_body_is_left_to_fastapi(self, body: bytes) -> None:
        assert split_body(body) is None


class TestBulkRoute:
    def test_a_body_in_the_bulk_shape_reaches_the_store_as_json_text(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: list[type] = []
        ingest = SessionStore.ingest_bulk

        def spy(self: SessionStore, sessions: Any = (), events: Any = (), **kwargs: Any) -> Any:
            seen.extend(type(item) for item in [*sessions, *events])
            return ingest(self, sessions, events, **kwargs)

        monkeypatch.setattr(SessionStore, "ingest_bulk", spy)
        body = {"sessions": [session_body("s1")], "events": [{**click("e1"), "session_id": "s1"}, {"x": 1}]}
        answer = api.post("/bulk", json=body)
        assert answer.status_code == 200
        got = answer.json()
        assert (got["sessions"]["registered"], got["events"]["stored"]) == (1, 1)
        assert [(r["item"], r["error"].split(":")[0]) for r in got["rejected"]] == [("events[1]", "event_id")]
        assert seen == [msgspec.Raw] * 3
        # gzip too (decompressed before the route reads it)
        again = api.post(
            "/bulk",
            content=gzip.compress(json.dumps(body).encode()),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert again.status_code == 200 and again.json()["sessions"]["already_registered"] == 1
        assert seen == [msgspec.Raw] * 6

    def test_bodies_left_to_fastapi_answer_as_fastapi_answers_them(self, api: Api) -> None:
        def post(content: bytes) -> Any:
            return api.post("/bulk", content=content, headers={"Content-Type": "application/json"})

        bad_json = post(b'{"sessions": [')
        assert bad_json.status_code == 422 and bad_json.json()["errors"][0]["type"] == "json_invalid"
        unknown = post(b'{"sessions": [], "session": []}')
        assert unknown.status_code == 422 and unknown.json()["detail"].startswith("body.session:")
        not_a_list = post(b'{"sessions": {"session_id": "x"}}')
        assert not_a_list.status_code == 422 and not_a_list.json()["detail"].startswith("body.sessions:")
        not_utf8 = post('{"sessions": [{"session_id": "caf\xe9"}]}'.encode("latin-1"))
        assert not_utf8.status_code == 400
        # NaN: json.loads takes it, so the item is refused by the models, naming the field
        nan = post(b'{"sessions": [{"session_id": "n1", "search_meta": {"a": NaN}}]}')
        assert nan.status_code == 200
        assert [(r["item"], r["session_id"], r["error"].split(":")[0]) for r in nan.json()["rejected"]] == [
            ("sessions[0]", "n1", "search_meta")
        ]
        not_json_type = api.post("/bulk", content=b'{"sessions": []}', headers={"Content-Type": "text/plain"})
        assert not_json_type.status_code == 422

    def test_an_unauthorised_request_is_refused_whatever_its_body(self, api: Api) -> None:
        assert api.post("/bulk", json={"sessions": [session_body("s1")]}, role=None).status_code == 401
        assert api.post("/bulk", json={"sessions": [session_body("s1")]}, role="viewer").status_code == 403
