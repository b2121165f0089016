"""Ingestion at scale through a real ``airflow api-server``: ``POST /clickstream/bulk``, the request and item
limits of ``[clickstream]``, and an omitted ``created_at``.

One server (PostgreSQL store) for the module, configured with small limits so each is cheap to reach:
``max_request_bytes`` 64 KiB, ``max_bulk_items`` 40, ``max_results`` 5, ``max_json_bytes`` 1000,
``max_events_per_session`` 4. What a limit refuses must leave the store untouched, so every test checks
the store's tables, not only the status code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clickstream.store import now_ms
from tests.support.apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LIMITS = {
    "MAX_REQUEST_BYTES": 64 * 1024,
    "MAX_BULK_ITEMS": 40,
    "MAX_RESULTS": 5,
    "MAX_JSON_BYTES": 1000,
    "MAX_EVENTS_PER_SESSION": 4,
}


@pytest.fixture(scope="module")
def pg_store_url(pg_server: Any) -> Iterator[str]:
    name = f"t_ingest_server_{uuid.uuid4().hex[:10]}"
    url = pg_server.create_database(name)
    yield url
    try:
        pg_server.drop_database(name)
    except Exception:
        pass


@pytest.fixture(scope="module")
def server(airflow_db: None, pg_store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    env = {f"AIRFLOW__CLICKSTREAM__{key}": str(value) for key, value in LIMITS.items()}
    with ApiServer(pg_store_url, Path(tmp_path_factory.mktemp("ingest-server")), extra_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: ApiServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.token('admin')}"}
    with httpx.Client(base_url=f"{server.base_url}/clickstream", headers=headers, timeout=30) as client:
        yield client


def _ids(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _session(session_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "search_query": "q",
        "created_at": now_ms(),
        "search_results": [{"object_id": "o1", "rank": 1.0}, {"object_id": "o2", "rank": 0.5}],
        **fields,
    }


def _event(session_id: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {"session_id": session_id, "event_id": event_id, "object_id": "o1", "created_at": now_ms(), **fields}


def _rows(store_url: str, table: str, session_ids: list[str]) -> int:
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE session_id = ANY(:ids)"), {"ids": session_ids}
            ).scalar_one()
    finally:
        engine.dispose()


def _accounted(answer: dict[str, Any]) -> int:
    return sum(answer["sessions"].values()) + sum(answer["events"].values()) + len(answer["rejected"])


class TestBulk:
    def test_mixed_request_accounts_for_every_item_and_the_valid_ones_are_readable(
        self, http: httpx.Client, pg_store_url: str
    ) -> None:
        known = _ids()
        assert http.post("/session", json=_session(known)).status_code == 200
        new_a, new_b = _ids(), _ids()
        body = {
            "sessions": [
                _session(new_a),
                _session(known, search_query="other"),
                _session(new_a),
                _session(new_b, created_at=12345),
                _session(new_b),
            ],
            "events": [
                _event(new_a, "e1"),
                _event(new_a, "e1"),
                _event(new_b, "e1", object_id=""),
                _event(new_b, "e2"),
            ],
        }
        answer = http.post("/bulk", json=body)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert got["sessions"] == {"registered": 2, "already_registered": 1, "erased": 0}
        assert got["events"] == {"stored": 2, "duplicates": 1, "over_limit": 0, "erased": 0, "purged": 0}
        assert [(r["item"], r["session_id"]) for r in got["rejected"]] == [
            ("sessions[1]", known),
            ("sessions[3]", new_b),
            ("events[2]", new_b),
        ]
        assert got["rejected"][1]["error"].startswith("created_at:")
        assert got["rejected"][2]["error"].startswith("object_id:")
        assert _accounted(got) == 9

        batch_id = http.get("/session", params={"session_id": new_a}).json()["batch_id"]
        page = http.get("/batch/sessions", params={"batch_id": batch_id, "limit": 1000}).json()
        by_id = {s["session_id"]: s for s in page["sessions"]}
        assert {known, new_a, new_b} <= set(by_id)
        assert by_id[known]["search_query"] == "q"  # the conflicting item did not overwrite it
        assert [e["event_id"] for e in by_id[new_a]["events"]] == ["e1"]

    def test_a_retried_request_changes_nothing(self, http: httpx.Client, pg_store_url: str) -> None:
        ids = [_ids() for _ in range(5)]
        body = {"sessions": [_session(s) for s in ids], "events": [_event(s, f"e{j}") for s in ids for j in range(3)]}
        first = http.post("/bulk", json=body).json()
        assert (first["sessions"]["registered"], first["events"]["stored"]) == (5, 15)
        retry = http.post("/bulk", json=body).json()
        assert retry == {
            "sessions": {"registered": 0, "already_registered": 5, "erased": 0},
            "events": {"stored": 0, "duplicates": 15, "over_limit": 0, "erased": 0, "purged": 0},
            "rejected": [],
        }
        assert (_rows(pg_store_url, "cs_session", ids), _rows(pg_store_url, "cs_event", ids)) == (5, 15)

    def test_more_items_than_max_bulk_items_is_422_naming_the_bound_and_stores_nothing(
        self, http: httpx.Client, pg_store_url: str
    ) -> None:
        ids = [_ids() for _ in range(41)]
        answer = http.post("/bulk", json={"sessions": [_session(s) for s in ids]})
        assert answer.status_code == 422
        assert "max_bulk_items" in answer.json()["detail"] and "41 items" in answer.json()["detail"]
        assert _rows(pg_store_url, "cs_session", ids) == 0

    def test_a_body_that_is_not_the_bulk_shape_is_422_naming_the_field(self, http: httpx.Client) -> None:
        answer = http.post("/bulk", json={"sessions": {"session_id": "x"}})
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("body.sessions:")
        assert http.post("/bulk", json={"session": []}).json()["detail"].startswith("body.session:")

    def test_viewer_may_not_write(self, server: ApiServer) -> None:
        answer = httpx.post(
            f"{server.base_url}/clickstream/bulk",
            json={"sessions": []},
            headers={"Authorization": f"Bearer {server.token('viewer')}"},
            timeout=30,
        )
        assert answer.status_code == 403


class TestRequestSize:
    def _oversized(self) -> tuple[list[str], bytes]:
        ids = [_ids() for _ in range(30)]
        body = json.dumps({"sessions": [_session(s, search_query="x" * 2500) for s in ids]}).encode()
        assert len(body) > LIMITS["MAX_REQUEST_BYTES"]
        return ids, body

    def test_body_over_max_request_bytes_is_413_and_stores_nothing(self, http: httpx.Client, pg_store_url: str) -> None:
        ids, body = self._oversized()
        answer = http.post("/bulk", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 413
        assert "max_request_bytes" in answer.json()["detail"]
        assert _rows(pg_store_url, "cs_session", ids) == 0

    def test_chunked_body_without_content_length_is_413_too(self, http: httpx.Client, pg_store_url: str) -> None:
        ids, body = self._oversized()

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        answer = http.post("/bulk", content=chunks(), headers={"Content-Type": "application/json"})
        assert answer.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in answer.request.headers
        assert answer.status_code == 413
        assert _rows(pg_store_url, "cs_session", ids) == 0

    def test_the_single_session_route_is_bounded_too(self, http: httpx.Client, pg_store_url: str) -> None:
        sid = _ids()
        answer = http.post("/session", json=_session(sid, search_query="x" * (LIMITS["MAX_REQUEST_BYTES"] + 1)))
        assert answer.status_code == 413
        assert _rows(pg_store_url, "cs_session", [sid]) == 0


class TestItemLimits:
    def test_too_many_results_is_422_naming_field_and_bound(self, http: httpx.Client, pg_store_url: str) -> None:
        sid = _ids()
        results = [{"object_id": f"o{i}"} for i in range(6)]
        answer = http.post("/session", json=_session(sid, search_results=results))
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("search_results: 6 results; at most 5")
        assert _rows(pg_store_url, "cs_session", [sid]) == 0

    @pytest.mark.parametrize(
        "field, overrides",
        [
            ("search_meta", {"search_meta": {"blob": "x" * 1000}}),
            ("payload_filter", {"payload_filter": {"blob": "x" * 1000}}),
            ("search_results.0.meta", {"search_results": [{"object_id": "o1", "meta": {"blob": "x" * 1000}}]}),
        ],
    )
    def test_oversized_json_object_is_422_naming_the_field(
        self, http: httpx.Client, pg_store_url: str, field: str, overrides: dict[str, Any]
    ) -> None:
        sid = _ids()
        answer = http.post("/session", json=_session(sid, **overrides))
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith(f"{field}: JSON object of ")
        assert "max_json_bytes" in answer.json()["detail"]
        assert _rows(pg_store_url, "cs_session", [sid]) == 0

    def test_oversized_event_meta_is_422_naming_it(self, http: httpx.Client, pg_store_url: str) -> None:
        sid = _ids()
        event = {"event_id": "e1", "object_id": "o1", "meta": {"blob": "x" * 1000}}
        answer = http.post("/session/events", json={"session_id": sid, "events": [event]})
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("events.0.meta: JSON object of ")
        assert _rows(pg_store_url, "cs_event", [sid]) == 0

    def test_events_past_max_events_per_session_are_counted_over_limit(self, http: httpx.Client) -> None:
        sid = _ids()
        assert http.post("/session", json=_session(sid)).status_code == 200
        events = [{"event_id": f"e{j}", "object_id": "o1"} for j in range(6)]
        answer = http.post("/session/events", json={"session_id": sid, "events": events})
        assert answer.json() == {
            "session_id": sid,
            "stored": 4,
            "duplicates": 0,
            "over_limit": 2,
            "erased": 0,
            "purged": 0,
        }
        bulk = http.post("/bulk", json={"events": [_event(sid, "e9")]}).json()
        assert bulk["events"] == {"stored": 0, "duplicates": 0, "over_limit": 1, "erased": 0, "purged": 0}
        assert [e["event_id"] for e in http.get("/session", params={"session_id": sid}).json()["events"]] == [
            "e0",
            "e1",
            "e2",
            "e3",
        ]


class TestCreatedAtOmitted:
    def test_session_and_events_without_created_at_get_the_time_of_receipt(self, http: httpx.Client) -> None:
        sid = _ids()
        before = now_ms()
        # The body EmbeddingStudio's demo client sends: no created_at.
        body = {
            "session_id": sid,
            "search_query": "q",
            "search_results": [{"object_id": "o1"}],
            "search_meta": {},
            "payload_filter": {},
            "user_id": "u1",
        }
        first = http.post("/session", json=body)
        assert first.status_code == 200, first.text
        assert (
            http.post(
                "/session/events", json={"session_id": sid, "events": [{"event_id": "e1", "object_id": "o1"}]}
            ).status_code
            == 200
        )
        stored = http.get("/session", params={"session_id": sid}).json()
        assert before <= stored["created_at"] <= now_ms()
        assert before <= stored["events"][0]["created_at"] <= now_ms()
        assert http.post("/session", json=body).json()["status"] == "already_registered"
