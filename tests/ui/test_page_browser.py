"""The Clickstream page in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright)
against a real ``airflow api-server``.

A user logs in through the Airflow UI's login form, opens "Clickstream" from the navigation and sees, inside
the page (the UI's iframe), the ids of the released batches and plots with one point per released batch;
opens a batch and sees its first session. A viewer sees the page too. Screenshots go to the test's
``tmp_path`` (listed in the output); with ``CLICKSTREAM_UI_SCREENSHOTS=<dir>`` they are also saved there as
``clickstream-page.png``, ``clickstream-batch.png``, ``clickstream-searches.png``, ``clickstream-query.png``,
``clickstream-propensities.png`` and ``clickstream-judgments.png``
(that is how the README's images in docs/img are made:
``CLICKSTREAM_UI_SCREENSHOTS=docs/img ./dev test tests/ui/test_page_browser.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clickstream.store import now_ms
from clickstream.synthetic import generate
from tests.support.apiserver import PASSWORDS, ApiServer
from tests.support.bodies import session_body

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Debian's Chromium (`apt-get install chromium`); Playwright's own browser download cannot work here.
CHROMIUM = Path(os.environ.get("CLICKSTREAM_CHROMIUM", "/usr/bin/chromium"))
#: Milliseconds Playwright waits for an element (the UI's first load compiles a large bundle).
TIMEOUT_MS = 30_000
#: Batches released before the browser opens the page (each is one point of every plot).
RELEASES = 6


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install Debian's chromium (`apt-get install chromium`; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One api-server for the module, on a SQLite store (the store's backends are tested elsewhere)."""
    workdir = tmp_path_factory.mktemp("page-browser")
    with ApiServer(f"sqlite:///{workdir / 'store.db'}", workdir / "api-server") as running:
        yield running


@pytest.fixture(scope="module")
def seeded(server: ApiServer) -> dict[str, Any]:
    return _seed(server)


def _seed(server: ApiServer) -> dict[str, Any]:
    """Released batches of synthetic sessions (position-biased clicks, some irrelevant; a few hundred each,
    every batch a little different) and a collecting batch, all over REST."""
    auth = {"Authorization": f"Bearer {server.token('admin')}"}
    released: list[str] = []
    first_sessions: list[str] = []
    start = now_ms() - 30 * 60_000
    with httpx.Client(base_url=f"{server.base_url}/clickstream", headers=auth, timeout=60) as http:
        for number in range(1, RELEASES + 1):
            generated = list(
                generate(
                    120 + 40 * number,
                    seed=number,
                    start_ms=start,
                    span_ms=10 * 60_000,
                    id_prefix=f"b{number}",
                    irrelevant_rate=0.02 * number,
                )
            )
            sessions = [g.session for g in generated]
            events = [{"session_id": g.session["session_id"], **e} for g in generated for e in g.events]
            for i in range(0, len(events), 500):
                body = {"sessions": sessions if i == 0 else [], "events": events[i : i + 500]}
                answer = http.post("/bulk", json=body)
                assert answer.status_code == 200 and not answer.json()["rejected"], answer.text
            release = http.post("/batch/release", json={"release_id": f"ui-test-{number}"})
            assert release.status_code == 200, release.text
            released.append(release.json()["batch_id"])
            # released over REST, not by the release DAG: one read of the batch computes and keeps its metrics,
            # as the DAG's metrics task would (a page load computes at most two missing ones)
            assert http.get(f"/batches/{released[-1]}").json()["metrics"] is not None
            if number == 1:
                first_sessions = [s["session_id"] for s in sessions]
        assert http.post("/session", json=session_body("still-collecting")).status_code == 200
    return {"released": released, "first_sessions": first_sessions}


def _log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORDS[username])
    page.locator("input[name=password]").press("Enter")


def _screenshot(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / name))
    if target := os.environ.get("CLICKSTREAM_UI_SCREENSHOTS"):
        page.screenshot(path=str(Path(target) / name))


class TestTheClickstreamPageInChromium:
    def test_log_in_open_clickstream_see_batches_and_plots_then_a_batch(
        self, chromium: Path, server: ApiServer, seeded: dict[str, Any], tmp_path: Path
    ) -> None:
        from playwright.sync_api import expect, sync_playwright

        released: list[str] = seeded["released"]
        shots = tmp_path / "screenshots"
        shots.mkdir()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.set_default_timeout(TIMEOUT_MS)
                _log_in(page, server.base_url, "admin")

                # "Clickstream" in Airflow's navigation opens the page inside the UI, at /plugin/clickstream
                page.get_by_role("link", name="Clickstream", exact=True).click()
                page.wait_for_url("**/plugin/clickstream**")
                frame = page.frame_locator("iframe[title=Clickstream]")
                ctr_points = frame.locator("svg[data-plot=ctr] circle.point")
                expect(ctr_points).to_have_count(len(released))
                assert [ctr_points.nth(i).get_attribute("data-batch-id") for i in range(len(released))] == released
                for batch_id in released:
                    expect(frame.locator(f"table.batches tr[data-batch-id='{batch_id}']")).to_be_visible()
                expect(frame.locator("svg[data-plot=volume] circle.point[data-series=sessions]")).to_have_count(
                    len(released)
                )
                _screenshot(page, shots, "clickstream-page.png")

                # open the first released batch: its position curve and its first session
                frame.locator(f"a.batch-link[href$='{released[0]}']").click()
                expect(frame.locator("svg[data-plot=positions] .point")).to_have_count(20)  # 11-20: nothing shown
                first = frame.locator("article.session").first
                expect(first).to_have_attribute("data-session-id", seeded["first_sessions"][0])
                expect(first.locator("a.session-link")).to_have_text(seeded["first_sessions"][0])
                _screenshot(page, shots, "clickstream-batch.png")

                # the address bar follows the page, so the batch's view is a link to share: it reopens there
                page.wait_for_url(f"**/plugin/clickstream/clickstream/ui/batches/{released[0]}")
                page.reload()
                expect(frame.locator("article.session").first).to_have_attribute(
                    "data-session-id", seeded["first_sessions"][0]
                )
            finally:
                browser.close()
        print(f"screenshots: {shots}")

    def test_a_viewer_sees_the_page(
        self, chromium: Path, server: ApiServer, seeded: dict[str, Any], tmp_path: Path
    ) -> None:
        from playwright.sync_api import expect, sync_playwright

        released = seeded["released"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                _log_in(page, server.base_url, "viewer")
                page.get_by_role("link", name="Clickstream", exact=True).click()
                frame = page.frame_locator("iframe[title=Clickstream]")
                expect(frame.locator("svg[data-plot=ctr] circle.point")).to_have_count(len(released))
                expect(frame.locator(f"table.batches tr[data-batch-id='{released[-1]}']")).to_be_visible()
                page.screenshot(path=str(tmp_path / "viewer.png"))
            finally:
                browser.close()


class TestTheSearchesViewInChromium:
    def test_open_searches_from_the_page_then_a_query(
        self, chromium: Path, server: ApiServer, seeded: dict[str, Any], tmp_path: Path
    ) -> None:
        """The search analytics of the released batches (computed here as the release DAG's metrics task
        does), the Searches view opened from the page's header, then a query's page."""
        from playwright.sync_api import expect, sync_playwright

        from clickstream.store import SessionStore

        store = SessionStore.from_url(server.store_url)
        try:
            while store.compute_missing_analytics(10).more:
                pass
        finally:
            store.dispose()
        released: list[str] = seeded["released"]
        shots = tmp_path / "screenshots"
        shots.mkdir()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.set_default_timeout(TIMEOUT_MS)
                _log_in(page, server.base_url, "viewer")
                page.get_by_role("link", name="Clickstream", exact=True).click()
                page.wait_for_url("**/plugin/clickstream**")
                frame = page.frame_locator("iframe[title=Clickstream]")
                frame.locator("a.nav-searches").click()
                frame.locator("input[name=last]").fill(str(len(released)))
                frame.locator("form.selection button").click()
                rows = frame.locator("table.searches tbody tr")
                expect(rows.first).to_be_visible()
                expect(frame.locator(".range")).to_contain_text(f"{len(released)} released batches")
                top = frame.locator("td.query a").first.get_attribute("data-query")
                # sort by CTR, then back: the heading is a link
                frame.locator("a.sort[data-order=ctr]").click()
                expect(frame.locator("th.sorted a.sort[data-order=ctr]")).to_be_visible()
                frame.locator("a.sort[data-order=count]").click()
                expect(frame.locator("td.query a").first).to_have_attribute("data-query", top or "")
                _screenshot(page, shots, "clickstream-searches.png")

                frame.locator("td.query a").first.click()
                expect(frame.locator("svg[data-plot=query-sessions] circle.point")).to_have_count(len(released))
                expect(frame.locator("svg[data-plot=query-positions] .point")).to_have_count(20)
                expect(frame.locator("table.objects tbody tr").first).to_be_visible()
                expect(frame.locator("h1 q.query")).to_have_text(top or "")
                _screenshot(page, shots, "clickstream-query.png")
            finally:
                browser.close()
        print(f"screenshots: {shots}")


class TestTheExaminationCurveInChromium:
    """A released batch of the ground-truth generator (clicks from a known position-based model), its labels
    fitted as the release DAG's labels task does: the batch view shows the estimated θ curve beside the raw
    CTR curve, and a query's judgments one click away. ``clickstream-propensities.png`` is the README's image."""

    def test_the_batch_shows_the_theta_curve_and_a_querys_judgments(
        self, chromium: Path, server: ApiServer, seeded: dict[str, Any], tmp_path: Path
    ) -> None:
        from playwright.sync_api import expect, sync_playwright

        from clickstream.store import SessionStore
        from clickstream.synthetic import pbm_truth

        truth = pbm_truth(seed=4, n_queries=8, n_candidates=20, max_position=10, page_sizes=(10,))
        generated = list(
            generate(2400, seed=4, start_ms=now_ms() - 20 * 60_000, span_ms=10 * 60_000, id_prefix="pbm", truth=truth)
        )
        auth = {"Authorization": f"Bearer {server.token('admin')}"}
        with httpx.Client(base_url=f"{server.base_url}/clickstream", headers=auth, timeout=60) as http:
            sessions = [g.session for g in generated]
            events = [{"session_id": g.session["session_id"], **e} for g in generated for e in g.events]
            for i in range(0, max(len(sessions), len(events)), 400):
                body = {"sessions": sessions[i : i + 400], "events": events[i : i + 400]}
                answer = http.post("/bulk", json=body)
                assert answer.status_code == 200, answer.text
            release = http.post("/batch/release", json={"release_id": "ui-test-labels"})
            batch_id = release.json()["batch_id"]
            store = SessionStore.from_url(server.store_url)
            try:
                store.compute_batch_analytics(batch_id)
                report = store.fit_batch_labels(batch_id).report
            finally:
                store.dispose()
            assert report.kept and report.identified_positions == list(range(1, 11))
            curve = http.get(f"/batches/{batch_id}/propensities").json()["propensities"]
            assert abs(curve[1]["theta"] - truth.theta[1]) < 0.1

        shots = tmp_path / "screenshots"
        shots.mkdir()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.set_default_timeout(TIMEOUT_MS)
                _log_in(page, server.base_url, "viewer")
                page.get_by_role("link", name="Clickstream", exact=True).click()
                frame = page.frame_locator("iframe[title=Clickstream]")
                frame.locator(f"a.batch-link[href$='{batch_id}']").click()
                section = frame.locator("section[aria-label='examination curve']")
                theta = section.locator("svg[data-plot=propensities] circle.point[data-series=theta]")
                expect(theta).to_have_count(10)  # positions 11-20 were never shown: crosses, no number
                expect(theta.first).to_have_attribute("data-value", "1.0")
                expect(section.locator("svg[data-plot=positions]")).to_be_visible()
                section.scroll_into_view_if_needed()
                section.screenshot(path=str(shots / "clickstream-propensities.png"))
                if target := os.environ.get("CLICKSTREAM_UI_SCREENSHOTS"):
                    section.screenshot(path=str(Path(target) / "clickstream-propensities.png"))

                # one click: a query's judgments, raw CTR vs debiased γ
                section.locator("a.judgments-link").first.click()
                expect(frame.locator("svg[data-plot=judgments] circle.point[data-series=gamma]")).to_have_count(20)
                expect(frame.locator("table.judgments tbody tr")).to_have_count(20)
                _screenshot(page, shots, "clickstream-judgments.png")
            finally:
                browser.close()
        print(f"screenshots: {shots}")
