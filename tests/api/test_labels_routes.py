"""The training-signal label routes (``/batches/{batch_id}/propensities`` and ``/judgments``), inside Airflow's
real API server app with real JWTs, on a fresh SQLite and a fresh PostgreSQL store: shapes, keyset paging,
access (viewer allowed, anonymous 401), 404 / 409 / 422."""

from __future__ import annotations

import pytest

from tests.support.bodies import click, session_body
from tests.support.inprocess import ROLES, Api


@pytest.fixture
def released(api: Api) -> str:
    """A released batch with kept labels (the store fits them, as the labels task does)."""
    for i in range(4):
        assert (
            api.post("/session", session_body(f"s{i}", search_query="Ai  Transformer"), role="user").status_code == 200
        )
    for sid, event_id, obj in (("s0", "e0", "obj-2"), ("s1", "e1", "obj-1")):
        events = {"session_id": sid, "events": [click(event_id, obj)]}
        assert api.post("/session/events", events, role="user").status_code == 200
    answer = api.post("/batch/release", {"release_id": "release-labels"}, role="user")
    assert answer.status_code == 200, answer.text
    batch_id = answer.json()["batch_id"]
    assert api.store.fit_batch_labels(batch_id).report.kept
    return batch_id


def routes(batch_id: str) -> list[str]:
    return [f"/batches/{batch_id}/propensities", f"/batches/{batch_id}/judgments"]


class TestAccess:
    def test_anonymous_is_401(self, api: Api, released: str) -> None:
        for route in routes(released):
            assert api.get(route, role=None).status_code == 401

    @pytest.mark.parametrize("role", ROLES)
    def test_every_role_may_read_viewer_included(self, api: Api, released: str, role: str) -> None:
        for route in routes(released):
            answer = api.get(route, role=role)
            assert answer.status_code == 200, (route, answer.text)


class TestShapes:
    def test_the_curve_says_what_the_batch_cannot_identify(self, api: Api, released: str) -> None:
        body = api.get(f"/batches/{released}/propensities", role="viewer").json()
        curve = body["propensities"]
        assert [p["position"] for p in curve] == list(range(1, 21))
        assert curve[0]["theta"] == 1.0 and curve[0]["identified"] is True
        # one ranking, clicks at positions 1 and 2: no pair links position 2 to position 1, so no number there
        assert curve[1]["theta"] is None and curve[1]["reason"] and curve[1]["raw_ctr"] == 0.25
        report = body["report"]
        assert report["fitted_sessions"] == 4 and report["identified_positions"] == [1]
        assert "2" in report["unidentified_positions"]

    def test_judgments_are_keyset_paged_and_filtered_by_normalized_query(self, api: Api, released: str) -> None:
        first = api.get(f"/batches/{released}/judgments", params={"limit": 1}).json()
        assert [j["object_id"] for j in first["judgments"]] == ["obj-1"] and first["next_after"]
        second = api.get(f"/batches/{released}/judgments", params={"limit": 1, "after": first["next_after"]}).json()
        assert [(j["query"], j["object_id"], j["impressions"], j["clicks"]) for j in second["judgments"]] == [
            ("ai transformer", "obj-2", 4, 1)
        ]
        assert second["next_after"] is None
        mine = api.get(f"/batches/{released}/judgments", params={"query": "  AI transformer "}).json()
        assert mine["query"] == "ai transformer" and len(mine["judgments"]) == 2
        assert api.get(f"/batches/{released}/judgments", params={"query": "other"}).json()["judgments"] == []

    def test_query_analytics_carries_the_kept_labels(self, api: Api, released: str) -> None:
        api.store.compute_batch_analytics(released)
        body = api.get("/analytics/queries/ai%20transformer", params={"batch_id": released}).json()
        assert {row["object_id"] for row in body["labels"]} == {"obj-1", "obj-2"}


class TestErrors:
    def test_unknown_batch_is_404(self, api: Api) -> None:
        for route in routes("nope"):
            assert api.get(route).status_code == 404

    def test_a_batch_without_labels_is_409(self, api: Api) -> None:
        assert api.post("/session", session_body("c0"), role="user").status_code == 200
        collecting = api.store.list_batches()[0].batch_id
        for route in routes(collecting):
            answer = api.get(route)
            assert answer.status_code == 409 and "collecting" in answer.text
        released = api.post("/batch/release", {"release_id": "r"}, role="user").json()["batch_id"]
        answer = api.get(f"/batches/{released}/propensities")
        assert answer.status_code == 409 and "no labels kept yet" in answer.text

    @pytest.mark.parametrize(
        ("params", "field"),
        [({"limit": 0}, "limit"), ({"limit": 5000}, "limit"), ({"after": "!!"}, "after"), ({"query": "   "}, "query")],
    )
    def test_bad_parameters_are_422_naming_the_field(self, api: Api, released: str, params: dict, field: str) -> None:
        answer = api.get(f"/batches/{released}/judgments", params=params)
        assert answer.status_code == 422 and field in answer.text
