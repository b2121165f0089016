"""The Clickstream page served by the plugin's app, in process (Airflow's API server app, real JWTs), on
SQLite and PostgreSQL: what a user sees on the overview, a batch, a session and a DAG run's tab, who may
see it, and how errors look."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.bodies import click, session_body
from tests.support.inprocess import Api


def _svg(page: str, plot: str) -> str:
    found = re.search(rf'<svg class="plot" data-plot="{plot}".*?</svg>', page, re.S)
    assert found, f"no plot {plot!r} on the page"
    return found.group(0)


def _points(svg: str, attr: str = "data-batch-id") -> list[str]:
    """The values of ``attr`` on the plot's markers, in drawing order."""
    return re.findall(rf'class="series series-0 point[^"]*"[^>]*?{attr}="([^"]*)"', svg)


def _seed(api: Api, prefix: str, sessions: int, clicked: int = 1) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(sessions)]
    for sid in ids:
        assert api.post("/session", session_body(sid)).status_code == 200
    for sid in ids[:clicked]:
        assert api.post("/session/events", {"session_id": sid, "events": [click(f"e-{sid}")]}).status_code == 200
    return ids


def _release(api: Api, release_id: str) -> str:
    answer = api.post("/batch/release", {"release_id": release_id})
    assert answer.status_code == 200, answer.text
    return answer.json()["batch_id"]


@pytest.fixture
def two_releases(api: Api) -> dict[str, Any]:
    """Two released batches (3 sessions with 1 click, then 2 sessions with 2 clicks) and a collecting one."""
    first = _seed(api, "first", 3, clicked=1)
    b1 = _release(api, "clickstream_release/manual__run-1")
    second = _seed(api, "second", 2, clicked=2)
    b2 = _release(api, "r2")
    _seed(api, "open", 1, clicked=0)
    collecting = api.get("/batches", params={"limit": 1}).json()["batches"][0]["batch_id"]
    return {"released": [b1, b2], "collecting": collecting, "first": first, "second": second}


class TestOverview:
    def test_a_page_load_computes_at_most_two_missing_metrics_and_says_so(self, api: Api) -> None:
        released = []
        for i in range(3):
            _seed(api, f"b{i}", 1)
            released.append(_release(api, f"r{i}"))
        page = api.get("/ui/", role="viewer").text
        rows = dict(re.findall(r'<tr data-batch-id="([^"]+)">(.*?)</tr>', page, re.S))
        assert all("1.000" in rows[b] for b in released[1:])  # CTR 1: computed
        assert "1.000" not in rows[released[0]]  # the oldest: not computed by this load
        assert "metrics are not computed yet" in page
        assert "metrics are not computed yet" not in api.get("/ui/", role="viewer").text  # the next load did

    def test_plots_have_one_point_per_released_batch_oldest_first(self, api: Api, two_releases: dict) -> None:
        answer = api.get("/ui/", role="viewer")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        page = answer.text
        for plot in ("ctr", "mrr", "no_click_rate", "irrelevant_rate"):
            assert _points(_svg(page, plot)) == two_releases["released"], plot
        ctr = [float(v) for v in _points(_svg(page, "ctr"), "data-value")]
        assert ctr == pytest.approx([1 / 3, 1.0])
        volume = _svg(page, "volume")
        assert re.findall(r'data-series="sessions" data-value="([^"]*)"', volume) == ["3.0", "2.0"]

    def test_the_table_lists_every_batch_newest_first_with_links(self, api: Api, two_releases: dict) -> None:
        page = api.get("/ui/").text
        rows = re.findall(r'<tr data-batch-id="([^"]+)">', page)
        assert rows == [two_releases["collecting"], *reversed(two_releases["released"])]
        b1 = two_releases["released"][0]
        assert f'href="./batches/{b1}"' in page
        assert "clickstream_release/manual__run-1" in page
        assert 'class="status collecting"' in page and 'class="status released"' in page

    def test_the_table_pages_by_before(self, api: Api, two_releases: dict) -> None:
        page = api.get("/ui/", params={"limit": 2}).text
        newest = [two_releases["collecting"], two_releases["released"][1]]
        assert re.findall(r'<tr data-batch-id="([^"]+)">', page) == newest
        older = re.search(r'class="older" href="\./\?before=([^&"]+)&amp;limit=2"', page)
        assert older and older.group(1) == two_releases["released"][1]
        page2 = api.get("/ui/", params={"limit": 2, "before": older.group(1)}).text
        assert re.findall(r'<tr data-batch-id="([^"]+)">', page2) == [two_releases["released"][0]]
        assert 'class="older"' not in page2

    def test_empty_store_says_so(self, api: Api) -> None:
        page = api.get("/ui/").text
        assert "No batch has been released yet" in page
        assert "no released batch yet" in _svg(page, "ctr")
        assert _points(_svg(page, "ctr")) == []

    def test_loads_nothing_from_outside_and_runs_no_script(self, api: Api, two_releases: dict) -> None:
        answer = api.get("/ui/")
        assert "<script" not in answer.text
        assert not re.search(r'(src|href)="(https?:)?//', answer.text)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp
        css = api.get("/ui/static/clickstream.css", role="viewer")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert "@import" not in css.text and "url(" not in css.text


class TestBatchView:
    def test_shows_metrics_position_curve_and_first_session(self, api: Api, two_releases: dict) -> None:
        b1 = two_releases["released"][0]
        answer = api.get(f"/ui/batches/{b1}", role="viewer")
        assert answer.status_code == 200
        page = answer.text
        assert "0.333" in page  # CTR: 1 of 3 sessions clicked
        positions = _svg(page, "positions")
        assert _points(positions, "data-position") == [str(p) for p in range(1, 21)]
        # obj-1 is at position 1 in every session, clicked in one of three; position 3+ was never shown
        values = re.findall(r'data-series="ctr" data-value="([^"]*)"', positions)
        assert float(values[0]) == pytest.approx(1 / 3) and float(values[1]) == 0.0 and values[2] == ""
        sessions = re.findall(r'<article class="session" data-session-id="([^"]+)"', page)
        assert sessions == two_releases["first"]
        assert 'href="../sessions?session_id=first-0"' in page

    def test_sessions_page_by_after_number(self, api: Api, two_releases: dict) -> None:
        b1 = two_releases["released"][0]
        page = api.get(f"/ui/batches/{b1}", params={"limit": 2}).text
        assert re.findall(r'data-session-id="([^"]+)"', page) == two_releases["first"][:2]
        nxt = re.search(r'class="next" href="([^"]+)"', page)
        assert nxt
        link = nxt.group(1).replace("&amp;", "&")
        assert link.startswith(f"../batches/{b1}?after_number=")
        page2 = api.get(f"/ui/batches/{b1}?{link.split('?', 1)[1]}").text
        assert re.findall(r'data-session-id="([^"]+)"', page2) == two_releases["first"][2:]

    def test_a_collecting_batch_has_no_metrics_yet(self, api: Api, two_releases: dict) -> None:
        page = api.get(f"/ui/batches/{two_releases['collecting']}").text
        assert "Still collecting" in page and "open-0" in page

    def test_unknown_batch_is_a_404_page(self, api: Api) -> None:
        answer = api.get("/ui/batches/b-typo")
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert "b-typo" in answer.text and "not found" in answer.text


class TestSessionView:
    def test_shows_results_and_events(self, api: Api, two_releases: dict) -> None:
        page = api.get("/ui/sessions", params={"session_id": "second-1"}, role="viewer").text
        assert 'data-session-id="second-1"' in page
        assert "obj-1" in page and "obj-2" in page and "e-second-1" not in page  # event ids are not shown
        assert page.count('class="clicked"') == 1
        assert f"../batches/{two_releases['released'][1]}" not in page  # relative to the page's root
        assert f"./batches/{two_releases['released'][1]}" in page

    def test_unknown_session_is_a_clear_404(self, api: Api, two_releases: dict) -> None:
        answer = api.get("/ui/sessions", params={"session_id": "nope"})
        assert answer.status_code == 404
        assert "No session with session_id &#39;nope&#39;" in answer.text

    def test_without_session_id_shows_the_form(self, api: Api) -> None:
        answer = api.get("/ui/sessions")
        assert answer.status_code == 200 and 'name="session_id"' in answer.text

    def test_every_value_is_escaped(self, api: Api) -> None:
        evil = '<script>alert("x")</script>'
        body = session_body(
            "s<b>&'\"",
            search_query=evil,
            search_results=[{"object_id": "<img src=x onerror=alert(1)>"}],
            user_id="u<i>",
        )
        assert api.post("/session", body).status_code == 200
        page = api.get("/ui/sessions", params={"session_id": "s<b>&'\""}).text
        assert "<script>" not in page and "<img" not in page and "<b>" not in page and "<i>" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert 'href="./sessions?session_id=s%3Cb%3E%26%27%22"' in page


class TestDagRunTab:
    def test_shows_the_batch_the_run_released(self, api: Api, two_releases: dict) -> None:
        answer = api.get(
            "/ui/dag_run", params={"dag_id": "clickstream_release", "run_id": "manual__run-1"}, role="viewer"
        )
        assert answer.status_code == 200
        assert f'data-batch-id="{two_releases["released"][0]}"' in answer.text
        assert "Run manual__run-1 of clickstream_release released this batch" in answer.text
        assert re.findall(r'<article class="session" data-session-id="([^"]+)"', answer.text) == two_releases["first"]

    def test_a_run_that_released_nothing_says_so(self, api: Api, two_releases: dict) -> None:
        page = api.get("/ui/dag_run", params={"dag_id": "clickstream_release", "run_id": "scheduled__x"}).text
        assert "has not released a batch under its own release id (yet)" in page
        assert "triggered with its own release_id param" in page
        other = api.get("/ui/dag_run", params={"dag_id": "some_etl", "run_id": "manual__1"}).text
        assert "not a clickstream release" in other

    def test_missing_run_id_is_a_422_page_naming_it(self, api: Api) -> None:
        answer = api.get("/ui/dag_run", params={"dag_id": "clickstream_release"})
        assert answer.status_code == 422
        assert "query.run_id" in answer.text and answer.headers["content-type"].startswith("text/html")


class TestAccess:
    def test_anonymous_gets_a_401_page_with_a_login_link(self, api: Api) -> None:
        for path in ("/ui/", "/ui/batches/b1", "/ui/sessions?session_id=x"):
            answer = api.get(path, role=None)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"].startswith("text/html")
            assert "Log in to Airflow" in answer.text and "Traceback" not in answer.text
        # the link leads from /clickstream/ui/batches/b1 to Airflow's root, whatever the base path
        assert 'href="../../../"' in api.get("/ui/batches/b1", role=None).text

    def test_the_ui_cookie_is_enough(self, api: Api, two_releases: dict) -> None:
        api.client.cookies.set("_token", api.tokens["viewer"])
        try:
            answer = api.get("/ui/", role=None)
        finally:
            api.client.cookies.clear()
        assert answer.status_code == 200 and two_releases["released"][0] in answer.text

    def test_bad_input_is_a_422_page_naming_the_parameter(self, api: Api) -> None:
        answer = api.get("/ui/", params={"limit": 0})
        assert answer.status_code == 422 and "query.limit" in answer.text
        not_a_batch = api.get("/ui/", params={"before": "b-unknown"})  # keyset paging: older than it, none
        assert not_a_batch.status_code == 200


class TestInTheAirflowUi:
    def test_airflow_lists_the_nav_entry_and_the_dag_run_tab(self, api: Api) -> None:
        plugins = api.client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {api.tokens['admin']}"}).json()[
            "plugins"
        ]
        views = {v["name"]: v for p in plugins if p["name"] == "clickstream" for v in p["external_views"]}
        assert views["Clickstream"]["url_route"] == "clickstream"
        assert views["Clickstream"]["href"] == "/clickstream/ui/"
        assert views["Clickstream"]["destination"] == "nav"
        tab = views["Clickstream batch"]
        assert tab["destination"] == "dag_run"
        assert tab["href"] == "/clickstream/ui/dag_run?dag_id={DAG_ID}&run_id={RUN_ID}"
        assert views["Clickstream API"]["category"] == "docs"

    def test_the_page_and_its_stylesheet_work_under_a_base_url_path(
        self, api: Api, airflow_app: Any, two_releases: dict
    ) -> None:
        from fastapi.testclient import TestClient

        client = TestClient(airflow_app, root_path="/team-a")
        client.cookies.set("_token", api.tokens["viewer"])
        batch = two_releases["released"][0]
        page = client.get(f"/team-a/clickstream/ui/batches/{batch}")
        assert page.status_code == 200 and 'href="../static/clickstream.css"' in page.text
        # what the browser resolves the page's relative links to stays under /team-a/clickstream/ui/
        assert client.get("/team-a/clickstream/ui/static/clickstream.css").status_code == 200
        assert 'href="../sessions?session_id=first-0"' in page.text
        assert client.get("/team-a/clickstream/ui/sessions", params={"session_id": "first-0"}).status_code == 200

    def test_hrefs_follow_the_base_url_path(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from clickstream import plugin

        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example/team-a/")
        views = {v["name"]: v["href"] for v in plugin._external_views()}
        assert views["Clickstream"] == "/team-a/clickstream/ui/"
        assert views["Clickstream batch"].startswith("/team-a/clickstream/ui/dag_run?")


class TestLabelsView:
    """The training-signal labels on the batch view: the examination curve beside the raw CTR curve, and a
    query's judgments one click away."""

    @pytest.fixture
    def labelled(self, api: Api) -> str:
        # two rankings of the same query, so positions 1 and 2 are linked and θ_2 is identified
        for i in range(8):
            results = ["obj-1", "obj-2"] if i % 2 == 0 else ["obj-2", "obj-1"]
            body = session_body(f"l-{i}", search_results=[{"object_id": o} for o in results])
            assert api.post("/session", body).status_code == 200
        for i, obj in ((0, "obj-1"), (1, "obj-2"), (2, "obj-1"), (3, "obj-1"), (4, "obj-2")):
            events = {"session_id": f"l-{i}", "events": [click(f"e-l-{i}", obj)]}
            assert api.post("/session/events", events).status_code == 200
        batch_id = _release(api, "labelled")
        api.store.compute_batch_analytics(batch_id)
        assert api.store.fit_batch_labels(batch_id).report.identified_positions == [1, 2]
        return batch_id

    def test_the_batch_shows_the_theta_curve_beside_the_raw_ctr(self, api: Api, labelled: str) -> None:
        page = api.get(f"/ui/batches/{labelled}", role="viewer").text
        theta = _svg(page, "propensities")
        values = re.findall(r'data-series="theta" data-value="([^"]*)" data-position="(\d+)"', theta)
        assert values[0] == ("1.0", "1") and values[1][1] == "2" and 0 < float(values[1][0]) <= 1
        assert len(re.findall(r'data-series="theta"', theta)) == 20  # a cross where θ is unidentified
        assert "no impressions at this position" in page
        assert _svg(page, "positions")  # the raw CTR curve stays
        assert 'href="../batches/' in page and "/judgments?query=ai%20transformer" in page

    def test_a_querys_judgments_are_one_click_away(self, api: Api, labelled: str) -> None:
        answer = api.get(f"/ui/batches/{labelled}/judgments", params={"query": "AI  Transformer"}, role="viewer")
        assert answer.status_code == 200, answer.text
        page = answer.text
        rows = re.findall(r'<tr data-object-id="([^"]+)">', page)
        assert sorted(rows) == ["obj-1", "obj-2"]
        assert len(re.findall(r'data-series="gamma"', _svg(page, "judgments"))) == 2
        assert 'href="../../batches/' in page and "<script" not in page

    def test_without_labels_the_batch_says_why(self, api: Api, two_releases: dict) -> None:
        page = api.get(f"/ui/batches/{two_releases['released'][0]}").text
        assert "Labels not fitted yet" in page and 'data-plot="propensities"' not in page
        assert "fitted when it is released" in api.get(f"/ui/batches/{two_releases['collecting']}").text
        answer = api.get(f"/ui/batches/{two_releases['released'][0]}/judgments")
        assert answer.status_code == 409 and "no labels kept yet" in answer.text
