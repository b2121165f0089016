"""The search analytics routes (``/analytics/...``), inside Airflow's real API server app with real JWTs, on a
fresh SQLite and a fresh PostgreSQL store: shapes, access (viewer allowed, anonymous 401), bad parameters."""

from __future__ import annotations

import pytest

from tests.support.bodies import click, session_body
from tests.support.inprocess import ROLES, Api

ROUTES = [
    "/analytics/searches",
    "/analytics/searches/no-results",
    "/analytics/searches/no-clicks",
    "/analytics/hits",
    "/analytics/queries/Ai%20Transformer",
]


@pytest.fixture
def released(api: Api) -> list[str]:
    """Two released batches with kept analytics (the store computes them, as the metrics task does)."""
    ids = []
    for i in range(2):
        assert api.post("/session", session_body(f"s{i}-0"), role="user").status_code == 200
        no_results = session_body(f"s{i}-1", search_query="Nothing  Here", search_results=[])
        assert api.post("/session", no_results, role="user").status_code == 200
        events = {"session_id": f"s{i}-0", "events": [click(f"e{i}", "obj-2")]}
        assert api.post("/session/events", events, role="user").status_code == 200
        answer = api.post("/batch/release", {"release_id": f"release-{i}"}, role="user")
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["batch_id"])
        api.store.compute_batch_analytics(ids[-1])
    return ids


class TestAccess:
    @pytest.mark.parametrize("route", ROUTES)
    def test_anonymous_is_401(self, api: Api, released: list[str], route: str) -> None:
        answer = api.get(route, role=None)
        assert answer.status_code == 401

    @pytest.mark.parametrize("role", ROLES)
    def test_every_role_may_read_viewer_included(self, api: Api, released: list[str], role: str) -> None:
        for route in ROUTES:
            answer = api.get(route, role=role)
            assert answer.status_code == 200, (route, answer.text)


class TestShapes:
    def test_top_searches_over_the_last_two_batches(self, api: Api, released: list[str]) -> None:
        body = api.get("/analytics/searches?last=2&limit=1", role="viewer").json()
        assert body["range"]["batches"] == released[::-1] and body["range"]["missing"] == []
        assert body["range"]["keyword_sessions"] == 4 and body["range"]["no_result_sessions"] == 2
        assert (body["order_by"], body["direction"], body["total"]) == ("count", "desc", 2)
        (row,) = body["searches"]
        assert row["query"] == "ai transformer"
        assert (row["sessions"], row["sessions_with_click"], row["clicks"], row["avg_click_position"]) == (2, 2, 2, 2.0)
        assert row["lower_bound"] is False
        second = api.get("/analytics/searches", params={"last": 2, "limit": 1, "after": body["next_after"]}).json()
        assert [r["query"] for r in second["searches"]] == ["nothing here"] and second["next_after"] is None

    def test_no_results_no_clicks_and_hits(self, api: Api, released: list[str]) -> None:
        no_results = api.get(f"/analytics/searches/no-results?batch_id={released[0]}").json()
        assert [(r["query"], r["no_result_sessions"]) for r in no_results["searches"]] == [("nothing here", 1)]
        no_clicks = api.get("/analytics/searches/no-clicks?last=2").json()
        assert [(r["query"], r["no_click_sessions"]) for r in no_clicks["searches"]] == [("nothing here", 2)]
        hits = api.get("/analytics/hits?last=2&order_by=clicks").json()
        assert [(h["object_id"], h["impressions"], h["clicks"], h["mean_position"]) for h in hits["hits"]] == [
            ("obj-2", 2, 2, 2.0),
            ("obj-1", 2, 0, 1.0),
        ]

    def test_one_query_over_time(self, api: Api, released: list[str]) -> None:
        body = api.get("/analytics/queries/%20AI%20%20transformer", params={"last": 2}).json()
        assert body["query"] == "ai transformer" and body["labels"] is None
        assert [(p["batch_id"], p["sessions"], p["kept"]) for p in body["batches"]] == [
            (released[0], 1, True),
            (released[1], 1, True),
        ]
        assert body["positions"][:2] == [
            {"position": 1, "shown": 2, "clicks": 0, "ctr": 0.0},
            {"position": 2, "shown": 2, "clicks": 2, "ctr": 1.0},
        ]
        assert [o["object_id"] for o in body["top_objects"]] == ["obj-1", "obj-2"]

    def test_an_unknown_batch_is_404(self, api: Api) -> None:
        assert api.get("/analytics/searches?batch_id=nope").status_code == 404

    @pytest.mark.parametrize(
        "query, field",
        [
            ("/analytics/searches?order_by=nope", "query.order_by"),
            ("/analytics/searches?direction=up", "query.direction"),
            ("/analytics/searches?limit=0", "query.limit"),
            ("/analytics/searches?limit=1001", "query.limit"),
            ("/analytics/searches?last=0", "query.last"),
            ("/analytics/hits?from=-1", "query.from"),
            ("/analytics/hits?to=x", "query.to"),
            ("/analytics/searches?after=garbage", "after"),
            ("/analytics/searches?last=2&batch_id=b", "batch_id"),
            ("/analytics/searches/no-clicks?from=5&to=5", "to"),
            ("/analytics/queries/%20%20", "query"),
        ],
    )
    def test_bad_parameters_are_422_naming_them(self, api: Api, released: list[str], query: str, field: str) -> None:
        answer = api.get(query, role="viewer")
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(f"{field}: ")


class TestClient:
    def test_the_client_has_a_method_for_every_route(self, api: Api, released: list[str]) -> None:
        from clickstream import models
        from clickstream.client import ClickstreamClient

        with ClickstreamClient("http://testserver", token=api.tokens["viewer"]) as c:
            c._http = api.client  # the in-process app (an httpx.Client) under the client's own request code
            page = c.top_searches(limit=1, last=2)
            assert isinstance(page, models.SearchesPage) and page.searches[0].query == "ai transformer"
            assert c.top_searches(limit=1, last=2, after=page.next_after).searches[0].query == "nothing here"
            assert c.searches_without_results(batch_id=released[0]).searches[0].no_result_sessions == 1
            assert c.searches_without_clicks(last=2).searches[0].query == "nothing here"
            assert [h.object_id for h in c.top_hits("clicks", last=2).hits] == ["obj-2", "obj-1"]
            one = c.query_analytics("AI transformer", from_ms=0)
            assert isinstance(one, models.QueryAnalytics) and one.summary.sessions == 2
