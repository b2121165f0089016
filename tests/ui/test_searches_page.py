"""The Searches view and the query page of the Clickstream page, in process (Airflow's API server app, real
JWTs), on SQLite and PostgreSQL: what they show, sorting, paging, lower-bound marks, escaping of hostile
query text, the labels seam, a base_url path, who may see them and how errors look."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import pytest

from clickstream.web.page import pages
from tests.support.bodies import click, session_body
from tests.support.inprocess import Api

#: A query a user could type: markup, quotes, a slash, URL delimiters.
HOSTILE = "<script>alert('x')</script> a/b?c=1&d#e \"q\""


def _session(api: Api, sid: str, query: str, results: tuple[str, ...], clicks: tuple[str, ...] = ()) -> None:
    body = session_body(sid, search_query=query, search_results=[{"object_id": o} for o in results])
    assert api.post("/session", body).status_code == 200
    if clicks:
        events = [click(f"e-{sid}-{i}", o) for i, o in enumerate(clicks)]
        assert api.post("/session/events", {"session_id": sid, "events": events}).status_code == 200


def _release(api: Api, release_id: str) -> str:
    answer = api.post("/batch/release", {"release_id": release_id})
    assert answer.status_code == 200, answer.text
    batch_id = answer.json()["batch_id"]
    assert api.store.metrics_step(batch_id).analytics.kept  # as the release DAG's metrics task does
    return batch_id


@pytest.fixture
def searches(api: Api) -> dict[str, Any]:
    """Two released batches of keyword sessions: "bert" (4, then 2 sessions), "gpt" (2 with no results),
    "llama" (1, clicked), the hostile query (1); the second batch adds "new"."""
    for i in range(4):
        _session(api, f"a-bert-{i}", "BERT", ("o1", "o2", "o3"), ("o2",) if i < 2 else ())
    _session(api, "a-gpt-0", "gpt", ())
    _session(api, "a-gpt-1", "gpt", ())
    _session(api, "a-llama-0", "llama", ("o3", "o1"), ("o3",))
    _session(api, "a-hostile", HOSTILE, ("o9",), ("o9",))
    first = _release(api, "r1")
    _session(api, "b-bert-0", "bert", ("o1", "o2"), ("o1",))
    _session(api, "b-bert-1", "bert", ("o1", "o2"))
    _session(api, "b-new-0", "new", ("o4",))
    second = _release(api, "r2")
    return {"batches": [first, second]}


def _rows(page: str) -> list[str]:
    """The queries (or object ids) of the table's rows, in order."""
    found = re.findall(r'<td class="query"><a data-query="([^"]*)"', page)
    return [html.unescape(q) for q in found] or re.findall(r'<td class="id" data-object-id="([^"]*)"', page)


def _svg(page: str, plot: str) -> str:
    found = re.search(rf'<svg class="plot" data-plot="{plot}".*?</svg>', page, re.S)
    assert found, f"no plot {plot!r} on the page"
    return found.group(0)


class TestSearchesView:
    def test_top_searches_of_the_last_batches_link_to_their_query_pages(self, api: Api, searches: dict) -> None:
        answer = api.get("/ui/searches", params={"last": 2}, role="viewer")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        page = answer.text
        assert _rows(page) == ["bert", "gpt", HOSTILE.lower(), "llama", "new"]  # by sessions, then by query
        assert 'href="./searches/query?last=2&amp;q=bert"' in page
        assert "2 released batches with search analytics" in page
        assert 'class="active" aria-current="page">Top searches' in page
        assert 'href="./static/clickstream.css"' in page

    def test_the_last_batch_by_default_and_one_batch_by_id(self, api: Api, searches: dict) -> None:
        assert _rows(api.get("/ui/searches").text) == ["bert", "new"]
        first = searches["batches"][0]
        page = api.get("/ui/searches", params={"batch_id": first, "last": 5}).text  # the batch wins
        assert _rows(page) == ["bert", "gpt", HOSTILE.lower(), "llama"]
        assert f'value="{first}"' in page
        blank = api.get("/ui/searches", params={"batch_id": "", "last": ""})  # a submitted empty form
        assert blank.status_code == 200 and _rows(blank.text) == ["bert", "new"]

    def test_a_heading_sorts_and_again_reverses(self, api: Api, searches: dict) -> None:
        page = api.get("/ui/searches", params={"last": 2, "order_by": "ctr"}).text
        assert _rows(page) == [HOSTILE.lower(), "llama", "bert", "gpt", "new"]  # CTR 1, 1, 0.5, 0, 0
        assert 'aria-sort="descending"' in page
        flip = re.search(r'<a class="sort" data-order="ctr" href="([^"]*)"', page)
        assert flip and "direction=asc" in flip.group(1)
        asc = api.get("/ui/searches", params={"last": 2, "order_by": "ctr", "direction": "asc"}).text
        assert _rows(asc) == ["gpt", "new", "bert", HOSTILE.lower(), "llama"]
        assert 'aria-sort="ascending"' in asc

    def test_pages_follow_the_cursor(self, api: Api, searches: dict) -> None:
        seen: list[str] = []
        params: dict[str, Any] = {"last": 2, "limit": 2}
        for _ in range(5):
            page = api.get("/ui/searches", params=params).text
            seen += _rows(page)
            found = re.search(r'<a class="next" href="\./searches\?([^"]*)"', page)
            if not found:
                break
            assert ("first page" in page) == ("after" in params)
            params = dict(parse_qsl(html.unescape(found.group(1))))
        assert seen == ["bert", "gpt", HOSTILE.lower(), "llama", "new"]
        assert "first page" in page

    def test_the_other_tabs(self, api: Api, searches: dict) -> None:
        no_clicks = api.get("/ui/searches", params={"last": 2, "tab": "no-clicks"}).text
        assert _rows(no_clicks) == ["bert", "gpt", "new"]  # 3, 2, 1 sessions without a click
        assert 'aria-sort="descending"' in no_clicks and 'data-order="no_click_sessions"' in no_clicks
        no_results = api.get("/ui/searches", params={"last": 2, "tab": "no-results"}).text
        assert _rows(no_results) == ["gpt"]
        hits = api.get("/ui/searches", params={"last": 2, "tab": "hits", "order_by": "clicks"}).text
        assert _rows(hits)[:3] == ["o2", "o1", "o3"]  # 2 clicks, then 1 each (ties by object id)
        asc = api.get("/ui/searches", params={"last": 2, "tab": "hits", "order_by": "impressions", "direction": "asc"})
        assert _rows(asc.text)[0] in ("o4", "o9")

    def test_lower_bounds_are_marked(self, api: Api) -> None:
        for i in range(3):
            _session(api, f"x-{i}", "often", ("o1",))
        _session(api, "y-0", "rare", ("o2",))
        answer = api.post("/batch/release", {"release_id": "r1"})
        first = answer.json()["batch_id"]
        small = replace(api.store.config, analytics_top_n=1)
        api.store.config = small
        assert api.store.compute_batch_analytics(first).kept_queries < 2  # "rare" is cut from the first batch
        _session(api, "z-0", "rare", ("o2",))
        _release(api, "r2")
        page = api.get("/ui/searches", params={"last": 2}).text
        row = re.search(r'<tr class="lower-bound"[^>]*>(.*?)</tr>', page, re.S)
        assert row and 'data-query="rare"' in row.group(1) and "≥ 1" in row.group(1)
        assert "lower bounds" in page
        query = api.get("/ui/searches/query", params={"q": "rare", "last": 2}).text
        assert "≥ 1" in query and "lower bounds" in query

    def test_nav_links_lead_to_the_searches_view(self, api: Api, searches: dict) -> None:
        assert 'href="./searches">Searches</a>' in api.get("/ui/").text
        batch = searches["batches"][0]
        assert 'href="../searches">Searches</a>' in api.get(f"/ui/batches/{batch}").text


class TestQueryPage:
    def test_trend_position_curve_and_objects(self, api: Api, searches: dict) -> None:
        answer = api.get("/ui/searches/query", params={"q": "  Bert "}, role="viewer")
        assert answer.status_code == 200
        page = answer.text
        assert 'data-query="bert"' in page and "normalized" in page
        sessions = _svg(page, "query-sessions")
        assert re.findall(r'data-series="sessions" data-value="([^"]*)"', sessions) == ["4.0", "2.0"]
        ctr = re.findall(r'data-series="ctr" data-value="([^"]*)"', _svg(page, "query-ctr"))
        assert [float(v) for v in ctr] == pytest.approx([0.5, 0.5])
        positions = _svg(page, "query-positions")
        assert len(re.findall(r'data-position="', positions)) == 20
        first = re.findall(r'data-series="ctr" data-value="([^"]*)" data-position="1"', positions)
        assert [float(v) for v in first] == pytest.approx([1 / 6], abs=1e-6)  # o1 first in 6 sessions, clicked once
        objects = re.findall(r'<tr data-object-id="([^"]*)"', page)
        assert objects == ["o1", "o2", "o3"]
        assert 'href="../static/clickstream.css"' in page and 'href="../searches?last=10"' in page
        assert "Not computed" in page

    def test_debiased_labels_are_shown_when_present(self, api: Api, searches: dict) -> None:
        found = api.store.query_analytics("bert", last=2)
        labels = [{"object_id": "o2", "raw_ctr": 0.5, "gamma": 0.8123456, "sessions": 4}]
        page = pages.query_page(
            ui="../", text="bert", analytics=found.model_copy(update={"labels": labels}), last=2, batch_id=None
        )
        assert "Not computed" not in page
        table = re.search(r'<table class="labels">(.*?)</table>', page, re.S)
        assert table
        assert re.findall(r"<th>([^<]*)</th>", table.group(1)) == ["object_id", "raw_ctr", "gamma", "sessions"]
        assert "0.8123" in table.group(1) and ">o2<" in table.group(1)

    def test_hostile_query_text_is_escaped_everywhere(self, api: Api, searches: dict) -> None:
        listing = api.get("/ui/searches", params={"last": 2}).text
        assert "<script>" not in listing and "&lt;script&gt;" in listing
        link = re.search(r'<a data-query="&lt;script[^"]*" href="([^"]*)"', listing)
        assert link and "%2F" in link.group(1) and "%3F" in link.group(1) and "%23" in link.group(1)
        target = html.unescape(link.group(1)).removeprefix("./")
        answer = api.client.get(
            f"/clickstream/ui/{target}", headers={"Authorization": f"Bearer {api.tokens['viewer']}"}
        )
        assert answer.status_code == 200
        assert "<script>" not in answer.text and "&lt;script&gt;" in answer.text
        assert re.findall(r'<tr data-object-id="([^"]*)"', answer.text) == ["o9"]

    def test_an_unknown_query_has_an_empty_page(self, api: Api, searches: dict) -> None:
        page = api.get("/ui/searches/query", params={"q": "never searched"}).text
        assert "No object was shown" in page
        assert re.findall(r'data-series="sessions" data-value="([^"]*)"', _svg(page, "query-sessions")) == [
            "0.0",
            "0.0",
        ]


class TestErrorsAndAccess:
    def test_anonymous_gets_the_401_page(self, api: Api) -> None:
        for path in ("/ui/searches", "/ui/searches/query?q=a"):
            answer = api.get(path, role=None)
            assert answer.status_code == 401, path
            assert "Log in to Airflow" in answer.text

    def test_bad_input_is_a_422_page_naming_the_parameter(self, api: Api, searches: dict) -> None:
        for params, name in (
            ({"tab": "nope"}, "query.tab"),
            ({"last": "abc"}, "last"),
            ({"last": "0"}, "last"),
            ({"order_by": "impressions"}, "order_by"),
            ({"after": "garbage"}, "after"),
        ):
            answer = api.get("/ui/searches", params=params)
            assert answer.status_code == 422, params
            assert name in answer.text and answer.headers["content-type"].startswith("text/html"), params
        assert api.get("/ui/searches/query").status_code == 422  # q is required
        assert api.get("/ui/searches/query", params={"q": "   "}).status_code == 422  # empty once normalized

    def test_a_collecting_batch_is_a_409_page_and_an_unknown_one_a_404(self, api: Api, searches: dict) -> None:
        _session(api, "open-0", "bert", ("o1",))
        collecting = api.get("/batches", params={"limit": 1}).json()["batches"][0]["batch_id"]
        answer = api.get("/ui/searches", params={"batch_id": collecting})
        assert answer.status_code == 409 and "collecting" in answer.text
        assert api.get("/ui/searches", params={"batch_id": "b-unknown"}).status_code == 404

    def test_under_a_base_url_path(self, api: Api, airflow_app: Any, searches: dict) -> None:
        from fastapi.testclient import TestClient

        client = TestClient(airflow_app, root_path="/team-a")
        client.cookies.set("_token", api.tokens["viewer"])
        page = client.get("/team-a/clickstream/ui/searches", params={"last": 2})
        assert page.status_code == 200 and 'href="./static/clickstream.css"' in page.text
        query = client.get("/team-a/clickstream/ui/searches/query", params={"q": "bert"})
        assert query.status_code == 200 and 'href="../static/clickstream.css"' in query.text
        assert client.get("/team-a/clickstream/ui/static/clickstream.css").status_code == 200
