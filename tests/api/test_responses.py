"""Answers the store serialised (clickstream.web.responses): a large page is gzip-compressed in the route, as
Airflow's GZipMiddleware would compress it, and only for clients that accept gzip."""

from __future__ import annotations

import gzip
import json

from starlette.requests import Request

from clickstream.web.responses import COMPRESS_FROM, json_response
from tests.support.bodies import session_body
from tests.support.inprocess import Api


def _request(accept_encoding: str | None) -> Request:
    headers = [] if accept_encoding is None else [(b"accept-encoding", accept_encoding.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


class TestJsonResponse:
    BIG = json.dumps({"sessions": ["x" * 100] * (COMPRESS_FROM // 100)}).encode()

    def test_large_body_is_compressed_for_a_client_that_accepts_gzip(self) -> None:
        answer = json_response(_request("gzip, deflate"), self.BIG)
        assert answer.headers["content-encoding"] == "gzip"
        assert answer.headers["vary"] == "Accept-Encoding"
        assert answer.headers["content-type"] == "application/json"
        assert gzip.decompress(answer.body) == self.BIG

    def test_plain_without_gzip_or_below_the_threshold(self) -> None:
        for request, body in [
            (_request(None), self.BIG),
            (_request("identity"), self.BIG),
            (_request("gzip"), b'{"small":true}'),
        ]:
            answer = json_response(request, body)
            assert "content-encoding" not in answer.headers
            assert answer.body == body and answer.headers["content-type"] == "application/json"


def test_large_page_through_the_api_server_app(api: Api) -> None:
    """Through Airflow's app and its GZipMiddleware: compressed once, decoded by the client to the same page."""
    for i in range(60):
        api.store.register_session(session_body(f"sess-{i:03d}", search_meta={"blob": "\u00e9" * 1500}))
    batch_id = api.store.get_session("sess-000").batch_id
    params = {"batch_id": batch_id, "limit": 100}
    zipped = api.get("/batch/sessions", params=params)
    assert zipped.status_code == 200 and zipped.headers["content-encoding"] == "gzip"
    plain = api.get("/batch/sessions", params=params, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert len(plain.content) >= COMPRESS_FROM
    assert zipped.json() == plain.json() == json.loads(api.store.get_batch_sessions_json(batch_id, limit=100))
    assert [s["session_id"] for s in plain.json()["sessions"]] == [f"sess-{i:03d}" for i in range(60)]
