"""Routes of the Clickstream page, under ``/clickstream/ui/`` in the plugin's app (HTML, not in the OpenAPI
document).

* ``/ui/``: plots of the released batches' metrics, the batch table (``before``, ``limit``), the lookup;
* ``/ui/batches/{batch_id}``: a batch, its position-bias curve, its examination curve (the training-signal
  labels), its sessions (``after_number``, ``limit``);
* ``/ui/batches/{batch_id}/judgments?query=``: a batch's judgments (raw CTR vs debiased γ), of one query;
* ``/ui/sessions?session_id=``: one session with its results and events;
* ``/ui/dag_run?dag_id=&run_id=``: the tab of a DAG run: the batch released under ``<dag_id>/<run_id>``;
* ``/ui/searches``: the search analytics of the ``last`` N released batches or one (``batch_id``): top searches,
  searches without clicks, without results, top hits (``tab``), each sortable (``order_by``, ``direction``)
  and paged (``after``, ``limit``);
* ``/ui/searches/query?q=``: one query over the same selection: its trend, its position curve, its objects
  and its debiased labels (once the labels step keeps them);
* ``/ui/static/clickstream.css``: the stylesheet.

They read through the same store dependency and store methods as the JSON routes, need the same
authenticated Airflow user (the app's ``get_user``: the UI's ``_token`` cookie inside the UI's iframe; any
role, reads only), and answer every error as an HTML page with the status and message the JSON routes
answer (:func:`clickstream.web.errors.error_answer`): 401 without a login (with a link to Airflow's login),
404 for an unknown id, 422 for bad input naming the parameter, 503 while the store is down or busy.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from clickstream import models
from clickstream.models import MAX_BIGINT, BatchSummary
from clickstream.store import Conflict, InvalidInput, NotFound, StoreConfig
from clickstream.store.analytics import MAX_ANALYTICS_BATCHES
from clickstream.store.config import KEPT_POSITIONS
from clickstream.web.errors import error_answer
from clickstream.web.holder import StoreDep
from clickstream.web.page import pages

if TYPE_CHECKING:
    from clickstream.store import SessionStore

#: Where the router is mounted in the plugin's app (so at ``<base path>/clickstream/ui/``).
PREFIX = "/ui"
#: Queries of a batch linked to their judgments on its page (its most searched ones).
LABEL_QUERIES = 8
#: Judgments on one page of the judgments view (at most).
JUDGMENTS_PAGE = 100
#: The DAG whose runs release batches (its runs' tab explains when nothing was released).
RELEASE_DAG_ID = "clickstream_release"
#: Content-Security-Policy of every page: everything from the API server itself, nothing from outside,
#: no script at all, shown only inside Airflow's own UI (or on its own).
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'self'"
)
_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def relative_root(route_path: str) -> str:
    """The relative URL from a page at ``route_path`` (``/ui/batches/{batch_id}``) to the page's root
    (``../``): links stay right under any ``[api] base_url`` path and behind proxies."""
    depth = route_path.removeprefix(PREFIX + "/").count("/")
    return "../" * depth or "./"


def html(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code, headers=_HEADERS)


class HtmlRoute(APIRoute):
    """A route whose errors (those of its dependencies included: the app's ``get_user``) are HTML pages
    with the API's message, not JSON: a person reads them in the Airflow UI."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        ui = relative_root(self.path)

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as err:
                return _error_page(ui, err)

        return route


_TITLES = {
    401: "Log in to see the clickstream",
    403: "Not allowed",
    404: "Not found",
    409: "Not available",
    422: "Invalid request",
    503: "Session store unavailable",
}
_HINTS = {
    401: ["The page uses your Airflow login: it opens inside the Airflow UI once you are logged in."],
    403: ["Your login is not valid (any more): log in to Airflow again."],
    503: ["The clickstream's database cannot be reached or is not configured; try again in a few seconds."],
}


def _error_page(ui: str, err: Exception) -> HTMLResponse:
    answer = error_answer(err, where="page")
    status = answer.status
    page = pages.error_page(
        ui=ui, status=status, title=_TITLES.get(status, "Error"), detail=answer.detail, hints=_HINTS.get(status, ())
    )
    response = html(page, status_code=status)
    response.headers.update(answer.headers)
    return response


def analytics_selection(last: str | None, batch_id: str | None, *, default: int) -> tuple[str | None, int | None]:
    """The batch selection of a Searches page from its form's fields (blank fields are absent): one batch
    (``batch_id``, which wins over ``last``), else the ``last`` N released batches (``default`` when blank).

    :raises InvalidInput: ``last`` is not a number from 1 to :data:`MAX_ANALYTICS_BATCHES` (named).
    """
    batch_id = (batch_id or "").strip() or None
    if batch_id is not None:
        return batch_id, None
    text = (last or "").strip()
    if not text:
        return None, default
    if not text.isdigit() or not 1 <= int(text) <= MAX_ANALYTICS_BATCHES:
        raise InvalidInput.field("last", f"must be a number from 1 to {MAX_ANALYTICS_BATCHES}, got {text!r}")
    return None, int(text)


def page_router(config: StoreConfig) -> APIRouter:
    """The page's routes; ``config`` bounds the sessions and events asked for (``max_page``, ``max_events``).
    Handlers call the store holder's ``get()`` once the request is valid, so bad input answers 422 even
    while the store is down."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=HtmlRoute)
    page_max = min(100, config.max_page)
    page_default = min(20, page_max)
    batch_events = min(50, config.max_events)
    session_events = min(500, config.max_events)
    page_analytics = 50

    def _batch_page(
        s: SessionStore, summary: BatchSummary, after_number: int, limit: int, *, ui: str, **shown: str
    ) -> HTMLResponse:
        """A batch's page (the ``batch`` route, and a release run's tab): its summary, its position curve
        (the one kept with its metrics, if any), its examination curve (when the labels are kept), one page of
        its sessions."""
        return html(
            pages.batch_page(
                ui=ui,
                summary=summary,
                positions=s.batch_positions(summary.batch_id, max_position=KEPT_POSITIONS),
                sessions=s.get_batch_sessions(
                    summary.batch_id, after_number=after_number, limit=limit, events_limit=batch_events
                ),
                after_number=after_number,
                limit=limit,
                events_limit=batch_events,
                **{**shown, **_labels(s, summary)},
            )
        )

    def _labels(s: SessionStore, summary: BatchSummary) -> dict[str, Any]:
        """The batch's kept examination curve and the queries to link to their judgments (the most searched
        of its kept analytics), or the message saying why there is no curve."""
        if summary.status != "released":
            return {"labels_message": "Still collecting: the labels are fitted when it is released."}
        try:
            labels = s.batch_propensities(summary.batch_id)
        except Conflict:
            return {
                "labels_message": "Labels not fitted yet: the release DAG's labels task fits the click model "
                "(position bias and debiased relevance) of each released batch."
            }
        top = s.top_searches(batch_id=summary.batch_id, limit=LABEL_QUERIES).searches
        return {"labels": labels, "label_queries": [row.query for row in top]}

    @router.get("/", response_class=HTMLResponse)
    def overview(
        store: StoreDep,
        before: str | None = Query(None, min_length=1, max_length=128, description="older than this batch"),
        limit: int = Query(20, ge=1, le=100, description="batches per page"),
        points: int = Query(100, ge=1, le=1000, description="released batches on the plots"),
    ) -> HTMLResponse:
        s = store.get()
        batches = s.list_batches_page(limit=limit, before=before)
        series = s.metrics_series(limit=points)
        return html(pages.overview_page(ui="./", batches=batches, series=series, before=before, limit=limit))

    @router.get("/batches/{batch_id}", response_class=HTMLResponse)
    def batch(
        batch_id: str,
        store: StoreDep,
        after_number: int = Query(0, ge=0, le=MAX_BIGINT, description="sessions numbered above this"),
        limit: int = Query(page_default, ge=1, le=page_max, description="sessions per page"),
    ) -> HTMLResponse:
        s = store.get()
        return _batch_page(s, s.get_batch_summary(batch_id), after_number, limit, ui="../")

    @router.get("/batches/{batch_id}/judgments", response_class=HTMLResponse)
    def judgments(
        batch_id: str,
        store: StoreDep,
        query: str | None = Query(None, max_length=1024, description="the query whose judgments to show"),
        limit: int = Query(JUDGMENTS_PAGE, ge=1, le=1000, description="judgments per page"),
        after: str | None = Query(None, min_length=1, max_length=4096, description="the previous page's next"),
    ) -> HTMLResponse:
        asked = query if query and query.strip() else None
        page = store.get().batch_judgments(batch_id, asked, limit, after)
        return html(
            pages.judgments_page(ui="../../", batch_id=batch_id, query=asked, page=page, limit=limit, after=after)
        )

    @router.get("/sessions", response_class=HTMLResponse)
    def session(
        store: StoreDep,
        session_id: str | None = Query(None, min_length=1, max_length=128, description="the session to show"),
    ) -> HTMLResponse:
        if session_id is None:
            return html(pages.session_page(ui="./", session_id=None, session=None))
        try:
            found = store.get().get_session(session_id, events_limit=session_events)
        except NotFound:
            message = f"No session with session_id {session_id!r}: it was never registered, or it was erased."
            return html(pages.session_page(ui="./", session_id=session_id, session=None, message=message), 404)
        return html(pages.session_page(ui="./", session_id=session_id, session=found))

    @router.get("/dag_run", response_class=HTMLResponse)
    def dag_run(
        store: StoreDep,
        dag_id: str = Query(min_length=1, max_length=250, description="the DAG of the run"),
        run_id: str = Query(min_length=1, max_length=250, description="the run"),
        after_number: int = Query(0, ge=0, le=MAX_BIGINT, description="sessions numbered above this"),
        limit: int = Query(page_default, ge=1, le=page_max, description="sessions per page"),
    ) -> HTMLResponse:
        release_id = f"{dag_id}/{run_id}"
        s = store.get()
        found = s.list_batches_page(limit=1, release_id=release_id).batches
        if not found:
            if dag_id == RELEASE_DAG_ID:
                message = (
                    "This run has not released a batch under its own release id (yet): its release task has "
                    "not run, or it was skipped because no batch was collecting. A run triggered with its own "
                    "release_id param released under that id instead: find its batch in the batch table "
                    "(the release id column)."
                )
            else:
                message = (
                    f"This run is not a clickstream release: no batch was released under its release id. "
                    f"This tab shows the batch a {RELEASE_DAG_ID} run released."
                )
            return html(
                pages.dag_run_page(ui="./", dag_id=dag_id, run_id=run_id, release_id=release_id, message=message)
            )
        base = f"./dag_run?dag_id={pages.quote_segment(dag_id)}&run_id={pages.quote_segment(run_id)}"
        heading = f"Run {run_id} of {dag_id} released this batch (release id {release_id})."
        return _batch_page(s, found[0], after_number, limit, ui="./", heading=heading, base=base)

    @router.get("/searches", response_class=HTMLResponse)
    def searches(
        store: StoreDep,
        tab: Literal["top", "no-clicks", "no-results", "hits"] = Query("top", description="the list shown"),
        last: str | None = Query(None, max_length=20, description="the last N released batches (blank: 1)"),
        batch_id: str | None = Query(None, max_length=128, description="one released batch (wins over last)"),
        order_by: str | None = Query(None, min_length=1, max_length=40, description="the sort column"),
        direction: Literal["asc", "desc"] = Query("desc", description="asc or desc"),
        after: str | None = Query(None, min_length=1, max_length=1024, description="the previous page's cursor"),
        limit: int = Query(page_analytics, ge=1, le=200, description="rows per page"),
    ) -> HTMLResponse:
        batch_id, n = analytics_selection(last, batch_id, default=1)
        order = order_by or pages.SEARCH_TABS[tab].default_order
        s = store.get()
        answer: models.SearchesPage | models.HitsPage
        if tab == "top":
            answer = s.top_searches(order, direction, limit, after, batch_id=batch_id, last=n)
        elif tab == "no-clicks":
            answer = s.searches_without_clicks(
                limit, after, batch_id=batch_id, last=n, order_by=order, direction=direction
            )
        elif tab == "no-results":
            answer = s.searches_without_results(
                limit, after, batch_id=batch_id, last=n, order_by=order, direction=direction
            )
        else:
            answer = s.top_hits(order, direction, limit, after, batch_id=batch_id, last=n)
        return html(
            pages.searches_page(ui="./", tab=tab, answer=answer, last=n, batch_id=batch_id, after=after, limit=limit)
        )

    @router.get("/searches/query", response_class=HTMLResponse)
    def search_query(
        store: StoreDep,
        q: str = Query(min_length=1, max_length=1024, description="the query (normalized before the look-up)"),
        last: str | None = Query(None, max_length=20, description="the last N released batches (blank: 1)"),
        batch_id: str | None = Query(None, max_length=128, description="one released batch (wins over last)"),
    ) -> HTMLResponse:
        batch_id, n = analytics_selection(last, batch_id, default=10)
        found = store.get().query_analytics(q, batch_id=batch_id, last=n)
        return html(pages.query_page(ui="../", text=q, analytics=found, last=n, batch_id=batch_id))

    @router.get("/static/clickstream.css")
    async def stylesheet() -> Response:
        css = await run_in_threadpool(pages.STYLESHEET.read_bytes)
        return Response(
            css,
            media_type="text/css",
            headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    return router


__all__ = ["PREFIX", "RELEASE_DAG_ID", "page_router", "relative_root"]
