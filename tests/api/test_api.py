"""The clickstream REST API inside Airflow's real API server app (``airflow.api_fastapi.app.create_app``).

The plugin is found through its ``airflow.plugins`` entry point, users are SimpleAuthManager users with
real JWTs (roles viewer, user, op, admin), and every test runs against a fresh SQLite and a fresh
PostgreSQL store, reached through the Airflow Connection ``clickstream_default`` (an env var here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from clickstream import models
from tests.support.bodies import click, now, session_body
from tests.support.connections import airflow_conn_uri, free_port
from tests.support.inprocess import PREFIX, ROLES, Api, mint_token

# ---------------------------------------------------------------------------------------------- mounting


class TestMounting:
    def test_plugin_is_listed_by_airflow(self, api: Api) -> None:
        answer = api.client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {api.tokens['admin']}"})
        assert answer.status_code == 200
        (plugin,) = [p for p in answer.json()["plugins"] if p["name"] == "clickstream"]
        assert plugin["fastapi_apps"] == [
            {"app": "fastapi.applications.FastAPI", "url_prefix": "/clickstream", "name": "Clickstream API"}
        ]

    def test_openapi_document_lists_every_route(self, api: Api) -> None:
        answer = api.client.get(f"{PREFIX}/openapi.json")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        assert set(answer.json()["paths"]) == {
            "/session",
            "/session/events",
            "/session/irrelevant",
            "/session/use-for-improvement",
            "/batch/sessions",
            "/batch/release",
            "/user/erase",
            "/bulk",
            "/batches",
            "/batches/{batch_id}",
            "/batches/{batch_id}/positions",
            "/metrics",
            "/analytics/searches",
            "/analytics/searches/no-results",
            "/analytics/searches/no-clicks",
            "/analytics/hits",
            "/analytics/queries/{query}",
            "/batches/{batch_id}/propensities",
            "/batches/{batch_id}/judgments",
        }

    def test_docs_page_loads_the_openapi_document_under_the_prefix(self, api: Api) -> None:
        answer = api.client.get(f"{PREFIX}/docs")
        assert answer.status_code == 200
        assert f"'{PREFIX}/openapi.json'" in answer.text

    def test_docs_page_respects_the_root_path_of_base_url(self, airflow_app: Any) -> None:
        from fastapi.testclient import TestClient

        client = TestClient(airflow_app, root_path="/airflow")
        answer = client.get(f"/airflow{PREFIX}/docs")
        assert answer.status_code == 200
        assert f"'/airflow{PREFIX}/openapi.json'" in answer.text

    def test_docs_link_in_the_ui_respects_base_url(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from clickstream.plugin import base_url_path

        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/airflow/")
        assert base_url_path("/clickstream/docs") == "/airflow/clickstream/docs"
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://localhost:8080")
        assert base_url_path("/clickstream/docs") == "/clickstream/docs"

    def test_importing_the_plugin_builds_nothing(self) -> None:
        import subprocess
        import sys

        code = (
            "import sys, clickstream.plugin; "
            "assert 'clickstream.web' not in sys.modules and 'fastapi' not in sys.modules, 'eager import'"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


# ---------------------------------------------------------------------------------------------- auth


@pytest.fixture
def seeded(api: Api) -> dict[str, Any]:
    """One registered session (``sess-1``, user ``user-123``) with a click on one of its results."""
    registered = api.store.register_session(session_body("sess-1"))
    api.store.push_events("sess-1", [click()])
    return {"session_id": "sess-1", "batch_id": registered.batch_id}


#: (method, path, body factory, access) of every route; bodies refer to the ``seeded`` data.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/session?session_id=sess-1", None, "read"),
    ("GET", "/batch/sessions?batch_id={batch_id}", None, "read"),
    ("POST", "/session", lambda: session_body("sess-new"), "write"),
    ("POST", "/session/events", lambda: {"session_id": "sess-1", "events": [click("evt-2")]}, "write"),
    ("POST", "/session/irrelevant", lambda: {"session_id": "sess-1"}, "write"),
    ("POST", "/session/use-for-improvement", lambda: {"session_id": "sess-1"}, "write"),
    (
        "POST",
        "/bulk",
        lambda: {"sessions": [session_body("sess-new")], "events": [{**click("evt-2"), "session_id": "sess-1"}]},
        "write",
    ),
    ("POST", "/batch/release", lambda: {"release_id": "release-v1"}, "write"),
    ("POST", "/user/erase", lambda: {"user_id": "user-123"}, "admin"),
]
_ROUTE_IDS = [f"{m} {p.split('?')[0]}" for m, p, _, _ in ROUTES]
_ALLOWED = {"read": set(ROLES), "write": {"user", "op", "admin"}, "admin": {"admin"}}


def _request(api: Api, route: tuple[str, str, Any, str], seeded: dict[str, Any], **kwargs: Any):
    method, path, body, _ = route
    return api.call(method, path.format(**seeded), json=body() if body else None, **kwargs)


class TestAuthentication:
    @pytest.mark.parametrize("route", ROUTES, ids=_ROUTE_IDS)
    def test_request_without_token_is_401(self, api: Api, seeded: dict, route: tuple) -> None:
        answer = _request(api, route, seeded, role=None)
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Not authenticated"}

    @pytest.mark.parametrize("route", ROUTES, ids=_ROUTE_IDS)
    def test_request_with_invalid_token_is_403(self, api: Api, seeded: dict, route: tuple) -> None:
        answer = _request(api, route, seeded, role=None, headers={"Authorization": "Bearer not-a-jwt"})
        assert answer.status_code == 403
        assert answer.json() == {"detail": "Invalid JWT token"}

    def test_expired_token_is_401(self, api: Api, airflow_app: Any, seeded: dict) -> None:
        token = mint_token(airflow_app, "admin", expires_in=-3600)
        answer = api.client.get(
            f"{PREFIX}/session", params={"session_id": "sess-1"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Token Expired"}

    def test_ui_cookie_authenticates_too(self, api: Api, seeded: dict) -> None:
        api.client.cookies.set("_token", api.tokens["viewer"])
        try:
            answer = api.client.get(f"{PREFIX}/session", params={"session_id": "sess-1"})
        finally:
            api.client.cookies.clear()
        assert answer.status_code == 200

    def test_unauthenticated_write_changes_nothing(self, api: Api) -> None:
        assert api.post("/session", session_body("sess-anon"), role=None).status_code == 401
        assert api.store.list_batches() == []


class TestAuthorization:
    @pytest.mark.parametrize("role", ROLES)
    @pytest.mark.parametrize("route", ROUTES, ids=_ROUTE_IDS)
    def test_role_is_allowed_or_forbidden(self, api: Api, seeded: dict, route: tuple, role: str) -> None:
        answer = _request(api, route, seeded, role=role)
        if role in _ALLOWED[route[3]]:
            assert answer.status_code == 200, answer.text
        else:
            assert answer.status_code == 403, answer.text
            assert answer.json()["detail"].startswith("Forbidden")

    def test_user_without_role_may_read_but_not_write(self, api: Api, airflow_app: Any, seeded: dict) -> None:
        api.tokens["none"] = mint_token(airflow_app, None)
        assert api.get("/session?session_id=sess-1", role="none").status_code == 200
        assert api.post("/session/irrelevant", {"session_id": "sess-1"}, role="none").status_code == 403

    def test_forbidden_erase_keeps_the_data(self, api: Api, seeded: dict) -> None:
        assert api.post("/user/erase", {"user_id": "user-123"}, role="op").status_code == 403
        assert api.store.get_session("sess-1").user_id == "user-123"

    def test_forbidden_write_changes_nothing(self, api: Api, seeded: dict) -> None:
        assert api.post("/batch/release", {"release_id": "r1"}, role="viewer").status_code == 403
        assert api.store.get_batch(seeded["batch_id"]).status == "collecting"


# ---------------------------------------------------------------------------------------------- sessions


class TestRegisterSession:
    def test_new_session_gets_a_batch_and_a_number(self, api: Api) -> None:
        answer = api.post("/session", session_body("sess-a"), role="user")
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "registered" and body["session_id"] == "sess-a"
        assert body["batch_id"] and body["session_number"] >= 1
        assert api.store.get_session("sess-a").batch_id == body["batch_id"]

    def test_retry_with_same_content_is_a_no_op_success(self, api: Api) -> None:
        first = api.post("/session", session_body("sess-a", created_at=now())).json()
        again = api.post("/session", {**session_body("sess-a"), "created_at": first_created(api, "sess-a")})
        assert again.status_code == 200
        assert again.json()["status"] == "already_registered"
        assert again.json()["session_number"] == first["session_number"]

    def test_same_id_with_other_content_is_409_and_keeps_the_stored_session(self, api: Api) -> None:
        api.post("/session", session_body("sess-a", search_query="first"))
        answer = api.post("/session", session_body("sess-a", search_query="second"))
        assert answer.status_code == 409
        assert "sess-a" in answer.json()["detail"]
        assert api.store.get_session("sess-a").search_query == "first"

    def test_events_pushed_before_registration_belong_to_the_session(self, api: Api) -> None:
        api.post("/session/events", {"session_id": "sess-early", "events": [click("e1"), click("e2")]})
        answer = api.post("/session", session_body("sess-early"))
        assert answer.json()["events_attached"] == 2

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"session_id": ""}, "body.session_id"),
            ({"session_id": "x" * 129}, "body.session_id"),
            ({"created_at": "yesterday"}, "body.created_at"),
            ({"sort_by": {"field": "stars", "order": "sideways"}}, "body.sort_by.order"),
            ({"search_results": [{"rank": 1.0}]}, "body.search_results.0.object_id"),
            ({"unknown_field": 1}, "body.unknown_field"),
        ],
    )
    def test_invalid_body_is_422_naming_the_field(self, api: Api, change: dict, field: str) -> None:
        answer = api.post("/session", {**session_body("sess-a"), **change})
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith(f"{field}: ")
        assert api.store.list_batches() == []

    def test_missing_field_is_422_naming_it(self, api: Api) -> None:
        body = session_body("sess-a")
        del body["session_id"]
        answer = api.post("/session", body)
        assert answer.status_code == 422
        assert answer.json()["detail"] == "body.session_id: Field required"

    def test_omitted_created_at_is_the_time_of_receipt_and_a_retry_is_already_registered(self, api: Api) -> None:
        body = session_body("sess-a")
        del body["created_at"]
        before = now()
        first = api.post("/session", body)
        assert first.status_code == 200, first.text
        stored = api.store.get_session("sess-a").created_at
        assert before <= stored <= now()
        retry = api.post("/session", body)
        assert retry.json()["status"] == "already_registered"
        assert api.store.get_session("sess-a").created_at == stored

    def test_timestamp_in_seconds_is_422_saying_so(self, api: Api) -> None:
        answer = api.post("/session", session_body("sess-a", created_at=now() // 1000))
        assert answer.status_code == 422
        assert "body.created_at" in answer.json()["detail"] and "seconds" in answer.json()["detail"]

    def test_timestamp_outside_the_live_window_is_422(self, api: Api) -> None:
        answer = api.post("/session", session_body("sess-a", created_at=now() - 3 * 24 * 3600 * 1000))
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("created_at: ")
        assert "in the past" in answer.json()["detail"]

    def test_malformed_json_is_422(self, api: Api) -> None:
        answer = api.call("POST", "/session", content=b"{not json", headers={"Content-Type": "application/json"})
        assert answer.status_code == 422
        assert "JSON" in answer.json()["detail"]


def first_created(api: Api, session_id: str) -> int:
    return api.store.get_session(session_id).created_at


class TestGetSession:
    def test_answers_the_session_with_its_events(self, api: Api, seeded: dict) -> None:
        answer = api.get("/session?session_id=sess-1", role="viewer")
        assert answer.status_code == 200
        body = answer.json()
        assert body["session_id"] == "sess-1" and body["batch_id"] == seeded["batch_id"]
        assert body["search_results"][0] == {"object_id": "obj-1", "rank": 1.0, "meta": None}
        assert [e["event_id"] for e in body["events"]] == ["evt-1"]
        assert body["is_payload_search"] is False and body["is_irrelevant"] is False

    def test_events_limit_caps_the_events(self, api: Api, seeded: dict) -> None:
        api.store.push_events("sess-1", [click("evt-2")])
        assert len(api.get("/session?session_id=sess-1&events_limit=1").json()["events"]) == 1
        assert api.get("/session?session_id=sess-1&events_limit=0").json()["events"] == []

    def test_unknown_session_is_404(self, api: Api) -> None:
        answer = api.get("/session?session_id=nope")
        assert answer.status_code == 404
        assert answer.json() == {"detail": "session_id 'nope' not found"}

    def test_missing_session_id_is_422(self, api: Api) -> None:
        answer = api.get("/session")
        assert answer.status_code == 422
        assert answer.json()["detail"] == "query.session_id: Field required"


class TestPushEvents:
    def test_counts_stored_and_duplicates(self, api: Api, seeded: dict) -> None:
        answer = api.post(
            "/session/events", {"session_id": "sess-1", "events": [click("evt-1"), click("evt-2"), click("evt-2")]}
        )
        assert answer.status_code == 200
        assert answer.json() == {
            "session_id": "sess-1",
            "stored": 1,
            "duplicates": 2,
            "over_limit": 0,
            "erased": 0,
            "purged": 0,
        }
        assert [e.event_id for e in api.store.get_session("sess-1").events] == ["evt-1", "evt-2"]

    def test_event_type_defaults_to_click(self, api: Api, seeded: dict) -> None:
        event = click("evt-9")
        del event["event_type"]
        api.post("/session/events", {"session_id": "sess-1", "events": [event]})
        assert api.store.get_session("sess-1").events[-1].event_type == "click"

    def test_bad_event_is_422_naming_its_index_and_nothing_is_stored(self, api: Api, seeded: dict) -> None:
        answer = api.post(
            "/session/events", {"session_id": "sess-1", "events": [click("evt-2"), click("evt-3", created_at=12345)]}
        )
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("body.events.1.created_at: ")
        assert len(api.store.get_session("sess-1").events) == 1


class TestMarkIrrelevant:
    def test_marks_and_is_idempotent(self, api: Api, seeded: dict) -> None:
        first = api.post("/session/irrelevant", {"session_id": "sess-1"})
        again = api.post("/session/irrelevant", {"session_id": "sess-1"})
        assert first.json() == {"session_id": "sess-1", "is_irrelevant": True, "changed": True}
        assert again.json() == {"session_id": "sess-1", "is_irrelevant": True, "changed": False}
        assert api.store.get_session("sess-1").is_irrelevant is True

    def test_unknown_session_is_404(self, api: Api) -> None:
        answer = api.post("/session/irrelevant", {"session_id": "nope"})
        assert answer.status_code == 404
        assert "nope" in answer.json()["detail"]


class TestUseForImprovement:
    def test_eligible_session_is_marked_once(self, api: Api, seeded: dict) -> None:
        first = api.post("/session/use-for-improvement", {"session_id": "sess-1"})
        again = api.post("/session/use-for-improvement", {"session_id": "sess-1"})
        assert first.json() == {"session_id": "sess-1", "status": "marked", "reason": None}
        assert again.json() == {"session_id": "sess-1", "status": "already_marked", "reason": None}
        assert api.store.get_improvement_mark("sess-1").status == "pending"

    def test_payload_search_is_skipped(self, api: Api) -> None:
        api.store.register_session(session_body("sess-p", is_payload_search=True))
        api.store.push_events("sess-p", [click()])
        answer = api.post("/session/use-for-improvement", {"session_id": "sess-p"})
        assert answer.json() == {"session_id": "sess-p", "status": "skipped", "reason": "payload_search"}

    def test_session_without_events_on_its_results_is_skipped(self, api: Api) -> None:
        api.store.register_session(session_body("sess-q"))
        api.store.push_events("sess-q", [click(object_id="not-shown")])
        answer = api.post("/session/use-for-improvement", {"session_id": "sess-q"})
        assert answer.json() == {"session_id": "sess-q", "status": "skipped", "reason": "no_events"}

    def test_irrelevant_session_without_clicks_is_eligible(self, api: Api) -> None:
        api.store.register_session(session_body("sess-r"))
        api.post("/session/irrelevant", {"session_id": "sess-r"})
        assert api.post("/session/use-for-improvement", {"session_id": "sess-r"}).json()["status"] == "marked"

    def test_unknown_session_is_404(self, api: Api) -> None:
        answer = api.post("/session/use-for-improvement", {"session_id": "nope"})
        assert answer.status_code == 404
        assert answer.json() == {"detail": "session_id 'nope' not found"}

    def test_missing_session_id_is_422(self, api: Api) -> None:
        answer = api.post("/session/use-for-improvement", {})
        assert answer.status_code == 422
        assert answer.json()["detail"] == "body.session_id: Field required"


# ---------------------------------------------------------------------------------------------- batches


class TestBatchSessions:
    def test_page_has_the_api_documents_shape(self, api: Api, seeded: dict) -> None:
        answer = api.get(f"/batch/sessions?batch_id={seeded['batch_id']}", role="viewer")
        assert answer.status_code == 200
        page = answer.json()
        assert set(page) == {"batch_id", "last_number", "sessions"}
        (session,) = page["sessions"]
        assert set(session) == {
            "session_number",
            "session_id",
            "search_query",
            "search_results",
            "search_meta",
            "payload_filter",
            "sort_by",
            "user_id",
            "created_at",
            "is_irrelevant",
            "events",
        }
        assert page["last_number"] == session["session_number"]
        assert session["payload_filter"] == {"task": "classification"}
        assert session["sort_by"] == {"field": "stars", "order": "desc"}
        assert set(session["events"][0]) == {"event_id", "object_id", "event_type", "created_at", "meta"}

    def test_paging_with_last_number_visits_every_session_once(self, api: Api) -> None:
        ids = [f"sess-{i:02d}" for i in range(7)]
        batch_id = {api.store.register_session(session_body(sid)).batch_id for sid in ids}.pop()
        seen, after = [], 0
        while True:
            page = api.get("/batch/sessions", params={"batch_id": batch_id, "after_number": after, "limit": 3}).json()
            if not page["sessions"]:
                assert page["last_number"] is None
                break
            seen += [s["session_id"] for s in page["sessions"]]
            after = page["last_number"]
        assert seen == ids

    def test_events_limit_caps_events_per_session(self, api: Api, seeded: dict) -> None:
        api.store.push_events("sess-1", [click("evt-2"), click("evt-3")])
        params = {"batch_id": seeded["batch_id"], "events_limit": 2}
        assert [e["event_id"] for e in api.get("/batch/sessions", params=params).json()["sessions"][0]["events"]] == [
            "evt-1",
            "evt-2",
        ]
        params["events_limit"] = 0
        assert api.get("/batch/sessions", params=params).json()["sessions"][0]["events"] == []

    def test_page_is_what_the_response_model_wrote(self, api: Api, seeded: dict) -> None:
        """The route passes the store's JSON through: the same document, once parsed (key order and number
        types included), as FastAPI's serialisation of the page model, which the route answered before."""
        from pydantic import TypeAdapter

        api.store.register_session(
            session_body("sess-\u00e9", search_meta={"caf\u00e9": {"n": [1, 2.5, None]}}, sort_by=None, user_id=None)
        )
        api.store.push_events("sess-\u00e9", [click("evt-\u2603", meta={"x": "\u00fc\n"})])

        def typed(value: Any) -> Any:
            if isinstance(value, dict):
                return [(k, typed(v)) for k, v in value.items()]
            if isinstance(value, list):
                return [typed(v) for v in value]
            return (type(value).__name__, value)

        first = api.get("/batch/sessions", params={"batch_id": seeded["batch_id"], "limit": 1}).json()
        for after in (0, first["last_number"], 2**62):  # both sessions, the last one, none
            answer = api.get("/batch/sessions", params={"batch_id": seeded["batch_id"], "after_number": after})
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
            page = api.store.get_batch_sessions(seeded["batch_id"], after_number=after)
            model = TypeAdapter(models.BatchSessionsPage).dump_json(page)
            assert typed(answer.json()) == typed(json.loads(model))

    def test_unknown_batch_is_404(self, api: Api) -> None:
        answer = api.get("/batch/sessions?batch_id=batch-typo")
        assert answer.status_code == 404
        assert answer.json() == {"detail": "batch_id 'batch-typo' not found"}

    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            ({"after_number": -1}, "query.after_number: Input should be greater than or equal to 0"),
            ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
            ({"limit": 1001}, "query.limit: Input should be less than or equal to 1000"),
            ({"events_limit": -1}, "query.events_limit: Input should be greater than or equal to 0"),
            ({"events_limit": 1001}, "query.events_limit: Input should be less than or equal to 1000"),
            ({"limit": "ten"}, "query.limit: Input should be a valid integer, unable to parse string as an integer"),
        ],
    )
    def test_out_of_bounds_parameter_is_422_naming_it_and_its_bound(
        self, api: Api, seeded: dict, params: dict, detail: str
    ) -> None:
        answer = api.get("/batch/sessions", params={"batch_id": seeded["batch_id"], **params})
        assert answer.status_code == 422
        assert answer.json()["detail"] == detail

    def test_missing_batch_id_is_422(self, api: Api) -> None:
        answer = api.get("/batch/sessions")
        assert answer.status_code == 422
        assert answer.json()["detail"] == "query.batch_id: Field required"


class TestConfiguredBounds:
    def test_page_bounds_follow_the_clickstream_config(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fastapi.testclient import TestClient

        from clickstream.web.app import create_app
        from clickstream.web.deps import get_user

        monkeypatch.setenv("AIRFLOW__CLICKSTREAM__MAX_PAGE", "50")
        monkeypatch.setenv("AIRFLOW__CLICKSTREAM__MAX_EVENTS", "5")
        app = create_app(conn_id="clickstream_absent")
        app.dependency_overrides[get_user] = lambda: None  # bounds only; auth is covered above
        params = app.openapi()["paths"]["/batch/sessions"]["get"]["parameters"]
        assert {p["name"]: p["schema"].get("maximum") for p in params} == {
            "batch_id": None,
            "after_number": 2**63 - 1,
            "limit": 50,
            "events_limit": 5,
        }
        answer = TestClient(app).get("/batch/sessions", params={"batch_id": "b", "limit": 51})
        assert answer.json()["detail"] == "query.limit: Input should be less than or equal to 50"


class TestRelease:
    def test_releases_the_collecting_batch(self, api: Api, seeded: dict) -> None:
        answer = api.post("/batch/release", {"release_id": "release-v1"})
        assert answer.status_code == 200
        body = answer.json()
        assert body["release_id"] == "release-v1" and body["batch_id"] == seeded["batch_id"]
        assert body["released_at"] >= 10**12
        assert api.store.get_batch(seeded["batch_id"]).status == "released"

    def test_retry_answers_the_original_result(self, api: Api, seeded: dict) -> None:
        first = api.post("/batch/release", {"release_id": "release-v1"}).json()
        api.post("/session", session_body("sess-next"))  # a new batch is collecting by now
        again = api.post("/batch/release", {"release_id": "release-v1"})
        assert again.status_code == 200
        assert again.json() == first

    def test_session_registered_after_release_goes_to_a_new_batch(self, api: Api, seeded: dict) -> None:
        api.post("/batch/release", {"release_id": "release-v1"})
        later = api.post("/session", session_body("sess-next")).json()
        assert later["batch_id"] != seeded["batch_id"]

    def test_no_collecting_batch_is_404(self, api: Api) -> None:
        answer = api.post("/batch/release", {"release_id": "release-v9"})
        assert answer.status_code == 404
        assert "no collecting batch" in answer.json()["detail"]

    def test_empty_release_id_is_422(self, api: Api, seeded: dict) -> None:
        answer = api.post("/batch/release", {"release_id": ""})
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("body.release_id: ")


# ---------------------------------------------------------------------------------------------- admin


class TestEraseUser:
    def test_removes_every_row_of_the_user_and_only_theirs(self, api: Api, seeded: dict) -> None:
        api.post("/session/use-for-improvement", {"session_id": "sess-1"})
        api.store.register_session(session_body("sess-other", user_id="user-456"))
        api.store.push_events("sess-other", [click()])
        answer = api.post("/user/erase", {"user_id": "user-123"})
        assert answer.status_code == 200
        assert answer.json() == {
            "user_id": "user-123",
            "sessions": 1,
            "events": 1,
            "marks": 1,
            "batches": [seeded["batch_id"]],
            "tombstones": 1,
        }
        assert api.get("/session?session_id=sess-1").status_code == 404
        other = api.get("/session?session_id=sess-other").json()
        assert other["user_id"] == "user-456" and len(other["events"]) == 1

    def test_unknown_user_answers_zero_counts(self, api: Api) -> None:
        answer = api.post("/user/erase", {"user_id": "nobody"})
        assert answer.status_code == 200
        assert answer.json() == {
            "user_id": "nobody",
            "sessions": 0,
            "events": 0,
            "marks": 0,
            "batches": [],
            "tombstones": 0,
        }

    def test_missing_user_id_is_422(self, api: Api) -> None:
        answer = api.post("/user/erase", {"user": "user-123"})
        assert answer.status_code == 422
        assert "body.user_id: Field required" in answer.json()["detail"]


# ---------------------------------------------------------------------------------------------- outages


@pytest.fixture
def client_without_store(airflow_app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API while ``clickstream_default`` is not defined (set it with monkeypatch to bring it up)."""
    from fastapi.testclient import TestClient

    monkeypatch.delenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", raising=False)
    with TestClient(airflow_app) as client:
        yield Api(client, None, {role: mint_token(airflow_app, role) for role in ROLES})


class TestStoreUnavailable:
    def test_unreachable_database_answers_503_with_retry_after(
        self, client_without_store: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", f"postgresql://postgres@127.0.0.1:{free_port()}/db")
        answer = client_without_store.get("/session?session_id=sess-1")
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["detail"].startswith("session store unavailable")

    def test_undefined_connection_answers_503_naming_it(self, client_without_store: Api) -> None:
        answer = client_without_store.post("/batch/release", {"release_id": "r1"})
        assert answer.status_code == 503
        assert "'clickstream_default'" in answer.json()["detail"]

    def test_invalid_input_is_422_even_while_the_store_is_down(self, client_without_store: Api) -> None:
        answer = client_without_store.get("/batch/sessions?batch_id=b&limit=0")
        assert answer.status_code == 422

    def test_store_opens_once_the_connection_is_defined(
        self, client_without_store: Api, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert client_without_store.get("/session?session_id=x").status_code == 503
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", airflow_conn_uri(sqlite_url))
        answer = client_without_store.get("/session?session_id=x")
        assert answer.status_code == 404  # the store is up (and migrated): the session is just unknown

    def test_database_lost_while_serving_answers_503(
        self, airflow_app: Any, pg_server: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from fastapi.testclient import TestClient

        name = f"t_api_lost_{free_port()}"
        url = pg_server.create_database(name)
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", airflow_conn_uri(url))
        with TestClient(airflow_app) as client:
            api = Api(client, None, {"admin": mint_token(airflow_app, "admin")})
            assert api.post("/session", session_body("sess-1")).status_code == 200
            pg_server.drop_database(name)  # WITH (FORCE): kills the pooled connections too
            answer = api.get("/session?session_id=sess-1")
            assert answer.status_code == 503, answer.text
            assert answer.json()["detail"].startswith("session store unavailable")

    def test_no_free_pooled_connection_answers_503_busy_on_the_json_routes_and_the_page(
        self, store_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The pool's timeout is the store's error (Database translates it), mapped once for both faces.
        from fastapi.testclient import TestClient

        from clickstream.web.app import create_app
        from clickstream.web.deps import get_user
        from clickstream.web.holder import StoreHolder

        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", airflow_conn_uri(store_url))
        app = create_app()
        app.dependency_overrides[get_user] = lambda: None  # the pool only; auth is covered above
        holder = StoreHolder(
            "clickstream_default", engine_kwargs={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
        )
        app.state.clickstream = holder
        with TestClient(app) as client:
            with holder.get().engine.connect():  # the pool's only connection, taken
                answer = client.get("/session", params={"session_id": "sess-1"})
                assert (answer.status_code, answer.headers["Retry-After"]) == (503, "5")
                assert answer.json() == {"detail": "session store busy: no free database connection; retry later"}
                page = client.get("/ui/sessions", params={"session_id": "sess-1"})
                assert (page.status_code, page.headers["Retry-After"]) == (503, "5")
                assert "session store busy: no free database connection; retry later" in page.text
            assert client.get("/session", params={"session_id": "sess-1"}).status_code == 404  # free again


class TestConnectionResolution:
    def test_connection_stored_in_the_metadata_db_is_used_in_the_api_server(
        self, airflow_db: None, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow.models.connection import Connection
        from airflow.utils.session import create_session

        from clickstream.web.holder import StoreHolder

        monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # what `airflow api-server` sets
        path = sqlite_url.removeprefix("sqlite:///")
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "clickstream_in_db").delete()
            session.add(Connection(conn_id="clickstream_in_db", conn_type="sqlite", host=path))
        holder = StoreHolder("clickstream_in_db")
        try:
            store = holder.get()
            assert store.dialect == "sqlite" and store.list_batches() == []
        finally:
            holder.close()
