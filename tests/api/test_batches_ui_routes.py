"""The batch overview routes behind the Clickstream page (``/batches``, ``/batches/{id}``,
``/batches/{id}/positions``, ``/metrics``), inside Airflow's real API server app with real JWTs, on a fresh
SQLite and a fresh PostgreSQL store. Batches here are released over REST, as a script would."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.bodies import click, session_body
from tests.support.inprocess import ROLES, Api

ROUTES = ["/batches", "/batches/{batch_id}", "/batches/{batch_id}/positions", "/metrics"]


def _release_over_rest(api: Api, n: int, *, sessions: int = 1, prefix: str = "s") -> list[str]:
    """``n`` batches released with ``POST /batch/release`` (oldest first), ``sessions`` sessions each, the
    first of them with a click on its second result; their ids."""
    ids = []
    for i in range(n):
        for j in range(sessions):
            assert api.post("/session", session_body(f"{prefix}{i}-{j}"), role="user").status_code == 200
        assert (
            api.post(
                "/session/events",
                {"session_id": f"{prefix}{i}-0", "events": [click(f"e{i}", "obj-2")]},
                role="user",
            ).status_code
            == 200
        )
        answer = api.post("/batch/release", {"release_id": f"release-{prefix}{i}"}, role="user")
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["batch_id"])
    return ids


@pytest.fixture
def released(api: Api) -> list[str]:
    return _release_over_rest(api, 3, sessions=2)


class TestAccess:
    @pytest.mark.parametrize("route", ROUTES)
    def test_anonymous_is_401(self, api: Api, released: list[str], route: str) -> None:
        answer = api.get(route.format(batch_id=released[0]), role=None)
        assert answer.status_code == 401
        assert answer.json() == {"detail": "Not authenticated"}

    @pytest.mark.parametrize("role", ROLES)
    @pytest.mark.parametrize("route", ROUTES)
    def test_every_role_may_read_viewer_included(self, api: Api, released: list[str], route: str, role: str) -> None:
        answer = api.get(route.format(batch_id=released[0]), role=role)
        assert answer.status_code == 200, answer.text

    def test_the_uis_cookie_is_enough(self, api: Api, released: list[str]) -> None:
        api.client.cookies.set("_token", api.tokens["viewer"])
        try:
            answer = api.client.get("/clickstream/batches")
        finally:
            api.client.cookies.clear()
        assert answer.status_code == 200
        assert [b["batch_id"] for b in answer.json()["batches"]] == released[::-1]


class TestBatches:
    def test_a_batch_released_over_rest_has_its_metrics(self, api: Api, released: list[str]) -> None:
        answer = api.get(f"/batches/{released[0]}", role="viewer")
        assert answer.status_code == 200
        assert answer.json() == {
            "batch_id": released[0],
            "status": "released",
            "created_at": answer.json()["created_at"],
            "released_at": answer.json()["released_at"],
            "release_id": "release-s0",
            "sessions": 2,
            "events": 1,
            "metrics": {"ctr": 0.5, "mrr": 0.25, "no_click_rate": 0.5, "irrelevant_rate": 0.0, "late_events": 0},
            "dataset": None,
        }
        body = answer.json()
        assert body["released_at"] >= body["created_at"] >= 10**12

    def test_pages_follow_next_before_to_the_oldest_batch(self, api: Api, released: list[str]) -> None:
        api.post("/session", session_body("collecting-1"), role="user")
        first = api.get("/batches?limit=2", role="viewer").json()
        assert [b["status"] for b in first["batches"]] == ["collecting", "released"]
        assert first["batches"][0]["metrics"] is None and first["batches"][0]["sessions"] == 1
        assert first["batches"][1]["batch_id"] == released[2]
        assert first["next_before"] == released[2]
        second = api.get(f"/batches?limit=2&before={first['next_before']}", role="viewer").json()
        assert [b["batch_id"] for b in second["batches"]] == [released[1], released[0]]
        assert second["next_before"] is None

    def test_release_id_finds_the_batch_a_dag_run_released(self, api: Api, released: list[str]) -> None:
        answer = api.get("/batches", params={"release_id": "release-s1"}, role="viewer").json()
        assert [b["batch_id"] for b in answer["batches"]] == [released[1]]
        assert api.get("/batches", params={"release_id": "clickstream_release/never"}).json() == {
            "batches": [],
            "next_before": None,
        }

    def test_a_before_that_is_no_batch_still_pages_keyset_wise(self, api: Api, released: list[str]) -> None:
        # e.g. the last batch of the previous page was purged meanwhile: paging goes on from where it sorted
        answer = api.get(f"/batches?before={released[-1]}-purged", role="viewer")
        assert answer.status_code == 200
        assert [b["batch_id"] for b in answer.json()["batches"]] == released[::-1]
        assert api.get("/batches?before=b0000000000000-nope", role="viewer").json()["batches"] == []

    def test_a_read_computes_at_most_two_missing_metrics_the_others_are_null(
        self, api: Api, released: list[str]
    ) -> None:
        first = api.get("/batches", role="viewer").json()["batches"]
        assert [(b["sessions"], b["metrics"] is None) for b in first] == [(2, False), (2, False), (None, True)]
        second = api.get("/batches", role="viewer").json()["batches"]
        assert [(b["sessions"], b["metrics"] is None) for b in second] == [(2, False)] * 3

    @pytest.mark.parametrize("route", ["/batches/nope", "/batches/nope/positions"])
    def test_an_unknown_batch_is_404(self, api: Api, route: str) -> None:
        answer = api.get(route, role="viewer")
        assert answer.status_code == 404
        assert "'nope'" in answer.json()["detail"]

    @pytest.mark.parametrize(
        "query, field",
        [
            ("/batches?limit=0", "query.limit"),
            ("/batches?limit=101", "query.limit"),
            ("/batches?before=", "query.before"),
            ("/metrics?limit=1001", "query.limit"),
            ("/batches/{batch_id}/positions?max_position=101", "query.max_position"),
            ("/batches/{batch_id}/positions?max_position=x", "query.max_position"),
        ],
    )
    def test_bad_parameters_are_422_naming_them(self, api: Api, released: list[str], query: str, field: str) -> None:
        answer = api.get(query.format(batch_id=released[0]), role="viewer")
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith(f"{field}: ")


class TestPositions:
    def test_one_entry_per_position_with_the_click_on_the_second_result(self, api: Api, released: list[str]) -> None:
        answer = api.get(f"/batches/{released[0]}/positions", role="viewer")
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        assert body["batch_id"] == released[0]
        assert [p["position"] for p in body["positions"]] == list(range(1, 21))
        assert body["positions"][:3] == [
            {"position": 1, "shown": 2, "clicks": 0, "ctr": 0.0},
            {"position": 2, "shown": 2, "clicks": 1, "ctr": 0.5},
            {"position": 3, "shown": 0, "clicks": 0, "ctr": None},
        ]
        assert len(api.get(f"/batches/{released[0]}/positions?max_position=5").json()["positions"]) == 5


class TestMetrics:
    def test_released_batches_oldest_first_each_with_its_metrics(self, api: Api, released: list[str]) -> None:
        api.post("/session", session_body("collecting-1"), role="user")  # not released: not plotted
        assert api.get("/metrics", role="viewer").json() == {"metrics": []}  # kept metrics only: none yet
        api.get("/batches", role="viewer")  # computes (and keeps) two
        assert len(api.get("/metrics", role="viewer").json()["metrics"]) == 2
        api.get(f"/batches/{released[0]}", role="viewer")  # and the third
        answer = api.get("/metrics", role="viewer")
        assert answer.status_code == 200
        points = answer.json()["metrics"]
        assert [p["batch_id"] for p in points] == released
        assert [p["released_at"] for p in points] == sorted(p["released_at"] for p in points)
        assert set(points[0]) == {
            "batch_id",
            "released_at",
            "sessions",
            "events",
            "ctr",
            "mrr",
            "no_click_rate",
            "irrelevant_rate",
            "late_events",
        }
        assert all((p["sessions"], p["events"], p["ctr"], p["mrr"]) == (2, 1, 0.5, 0.25) for p in points)
        assert [p["batch_id"] for p in api.get("/metrics?limit=2").json()["metrics"]] == released[1:]

    def test_no_released_batch_is_an_empty_series(self, api: Api) -> None:
        assert api.get("/metrics", role="viewer").json() == {"metrics": []}
