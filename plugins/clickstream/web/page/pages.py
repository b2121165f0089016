"""The Clickstream page's HTML: Jinja2 templates (autoescaped) plus the SVG plots of :mod:`clickstream.web.page.svg`.

Every function takes what the store answered (the models of :mod:`clickstream.models`) and ``ui``, the
relative URL of the page's root (``./`` on the overview, ``../`` one level down): every link and the
stylesheet are relative, so the page works under any ``[api] base_url`` path and behind any proxy without
knowing its own address. Nothing here reads the store or the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from clickstream import models
from clickstream.web.page.svg import Category, Series, line_plot, nice_ceiling

#: Where the templates and the stylesheet live (inside the package: nothing comes from outside).
HERE = Path(__file__).resolve().parent
STYLESHEET = HERE / "static" / "clickstream.css"

#: The plots of search quality on the overview: (key of MetricsPoint, plot title, y-axis title).
QUALITY_PLOTS = (
    ("ctr", "Click-through rate", "sessions with a click"),
    ("mrr", "MRR of the first click", "mean reciprocal rank"),
    ("no_click_rate", "No-click rate", "sessions without a click"),
    ("irrelevant_rate", "Irrelevant rate", "sessions marked irrelevant"),
)


def millis(value: int | None) -> str:
    """Epoch milliseconds as ``2026-11-25 23:57:11 UTC`` ("–" for None)."""
    if value is None:
        return "–"
    return datetime.fromtimestamp(value / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def tick_format(first: int, last: int) -> str:
    """The ``strftime`` format of time tick labels for a span from ``first`` to ``last`` (epoch ms): the time
    of day within a day, then month-day and time, then the date."""
    span = last - first
    if span < 86_400_000:
        return "%H:%M:%S"
    if span < 180 * 86_400_000:
        return "%m-%d %H:%M"
    return "%Y-%m-%d"


def utc(value: int, fmt: str) -> str:
    """Epoch milliseconds formatted in UTC."""
    return datetime.fromtimestamp(value / 1000, tz=UTC).strftime(fmt)


def rate(value: float | None) -> str:
    """A rate with three decimals ("–" for None: an empty batch has no rate)."""
    return "–" if value is None else f"{value:.3f}"


def count(value: int | None) -> str:
    """An integer with thousands separators ("–" for None)."""
    return "–" if value is None else f"{value:,}"


def quote_segment(value: Any) -> str:
    """``value`` quoted for a URL path segment or query value (``/``, ``?``, ``&``, ``#`` included)."""
    return quote(str(value), safe="")


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(millis=millis, rate=rate, count=count, q=quote_segment)


def _render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


# ---------------------------------------------------------------------------------------------- plots


def _two_decimals(value: float) -> str:
    return f"{value:.2f}"


def _integer(value: float) -> str:
    return f"{value:,.0f}"


def metrics_plots(series: models.MetricsSeries) -> list[Markup]:
    """The overview's plots: one per quality metric, then sessions and events; one marker per released batch
    (``data-batch-id``), oldest first."""
    points = series.metrics
    fmt = tick_format(points[0].released_at, points[-1].released_at) if points else "%H:%M:%S"
    categories = [
        Category(
            label=utc(p.released_at, fmt),
            title=f"{p.batch_id}\nreleased {millis(p.released_at)}\n{p.sessions:,} sessions, {p.events:,} events",
            attrs={"data-batch-id": p.batch_id},
        )
        for p in points
    ]
    x_title = "released batches, oldest to newest (release time, UTC)"
    empty = "no released batch yet"
    plots = []
    for key, title, y_title in QUALITY_PLOTS:
        values: list[float | None] = [getattr(p, key) for p in points]
        top = min(1.0, nice_ceiling(max((v for v in values if v is not None), default=0.0)))
        plots.append(
            line_plot(
                plot_id=key,
                title=title,
                categories=categories,
                series=[Series(title, key, values)],
                x_title=x_title,
                y_title=y_title,
                y_max=top,
                y_format=_two_decimals,
                empty_message=empty,
            )
        )
    plots.append(
        line_plot(
            plot_id="volume",
            title="Sessions and events per batch",
            categories=categories,
            series=[
                Series("sessions", "sessions", [float(p.sessions) for p in points]),
                Series("events", "events", [float(p.events) for p in points]),
            ],
            x_title=x_title,
            y_title="count",
            y_format=_integer,
            empty_message=empty,
        )
    )
    return plots


def positions_plot(positions: models.BatchPositions) -> Markup:
    """The position-bias curve: click-through rate by result position, one marker per position
    (``data-position``; a cross where nothing was shown)."""
    entries = positions.positions
    categories = [
        Category(
            label=str(p.position),
            title=f"position {p.position}\n{p.clicks:,} of {p.shown:,} sessions clicked the result there",
            attrs={"data-position": str(p.position)},
        )
        for p in entries
    ]
    values = [p.ctr for p in entries]
    top = min(1.0, nice_ceiling(max((v for v in values if v is not None), default=0.0)))
    return line_plot(
        plot_id="positions",
        title="Click-through rate by result position",
        categories=categories,
        series=[Series("CTR", "ctr", values)],
        x_title="position of the result",
        y_title="sessions clicking there / shown",
        y_max=top,
        y_format=_two_decimals,
        empty_message="no position",
        max_x_labels=len(categories),
    )


# ---------------------------------------------------------------------------------------------- sessions


def session_view_model(session: models.BatchSession, events_limit: int | None = None) -> dict[str, Any]:
    """A session as the templates show it: its results with their position and whether they were clicked,
    its events with the position of their object in the results (None: not among the results).
    ``events_limit``: how many events were asked for (the view then says when it shows only the first ones)."""
    first_position: dict[str, int] = {}
    for position, result in enumerate(session.search_results, start=1):
        first_position.setdefault(result.object_id, position)
    clicked = {e.object_id for e in session.events if e.event_type == "click"}
    return {
        "session": session,
        "results": [
            {"position": i, "result": r, "clicked": r.object_id in clicked}
            for i, r in enumerate(session.search_results, start=1)
        ],
        "events": [{"event": e, "position": first_position.get(e.object_id)} for e in session.events],
        "events_limited": events_limit is not None and len(session.events) >= events_limit,
        "batch_id": getattr(session, "batch_id", None),
        "is_payload_search": getattr(session, "is_payload_search", None),
    }


# ---------------------------------------------------------------------------------------------- pages


def overview_page(
    *,
    ui: str,
    batches: models.BatchList,
    series: models.MetricsSeries,
    before: str | None,
    limit: int,
) -> str:
    """The overview: the plots, the batch table (one page, newest first), the session lookup."""
    return _render(
        "overview.html",
        ui=ui,
        title="Clickstream",
        plots=metrics_plots(series),
        points=len(series.metrics),
        batches=batches.batches,
        next_before=batches.next_before,
        before=before,
        limit=limit,
    )


def batch_page(
    *,
    ui: str,
    summary: models.BatchSummary,
    positions: models.BatchPositions,
    sessions: models.BatchSessionsPage,
    after_number: int,
    limit: int,
    events_limit: int,
    heading: str | None = None,
    base: str | None = None,
    labels: models.BatchPropensities | None = None,
    labels_message: str | None = None,
    label_queries: Sequence[str] = (),
) -> str:
    """One batch: its summary and metrics, the position-bias curve, one page of its sessions; when the labels
    step kept its labels, the examination curve beside the raw CTR curve and links to ``label_queries``'
    judgments (else ``labels_message`` says why there is none).

    :param base: URL of this view for the paging links (default ``<ui>batches/<batch_id>``).
    """
    extra: dict[str, Any] = {}
    if labels is not None or labels_message is not None:
        extra = {
            "labels": labels,
            "labels_svg": propensities_plot(labels) if labels is not None else None,
            "labels_message": labels_message,
            "label_queries": list(label_queries),
        }
    return _render(
        "batch.html",
        ui=ui,
        title=f"Batch {summary.batch_id}",
        heading=heading,
        batch=summary,
        positions=positions.positions,
        positions_svg=positions_plot(positions),
        sessions=[session_view_model(s, events_limit) for s in sessions.sessions],
        last_number=sessions.last_number,
        after_number=after_number,
        limit=limit,
        events_limit=events_limit,
        base=base or f"{ui}batches/{quote_segment(summary.batch_id)}",
        sep="&" if base and "?" in base else "?",
        **extra,
    )


def session_page(
    *, ui: str, session_id: str | None, session: models.SessionOut | None, message: str | None = None
) -> str:
    """The session lookup: the form, and the session found (or ``message`` saying why there is none)."""
    return _render(
        "session.html",
        ui=ui,
        title=f"Session {session_id}" if session_id else "Find a session",
        session_id=session_id,
        view=session_view_model(session) if session is not None else None,
        message=message,
    )


def dag_run_page(
    *,
    ui: str,
    dag_id: str,
    run_id: str,
    release_id: str,
    message: str,
) -> str:
    """The DAG-run tab without a batch to show: ``message`` says why."""
    return _render(
        "dag_run.html",
        ui=ui,
        title=f"Run {run_id}",
        dag_id=dag_id,
        run_id=run_id,
        release_id=release_id,
        message=message,
    )


def error_page(*, ui: str, status: int, title: str, detail: str, hints: Sequence[str] = ()) -> str:
    """A page for an error: what happened (``detail``, the API's own message) and what to do."""
    return _render(
        "error.html",
        ui=ui,
        title=title,
        status=status,
        detail=detail,
        hints=list(hints),
        airflow=f"{ui}../../",
    )


# ---------------------------------------------------------------------------------------------- searches


@dataclass(frozen=True)
class Column:
    """A column of a Searches table: its heading, the row field it shows, how (``kind``), and the store's
    ``order_by`` that sorts by it (None: not sortable)."""

    label: str
    field: str
    kind: str = "count"  # count (a lower bound when the row says so), rate, position, query, object
    order: str | None = None


@dataclass(frozen=True)
class SearchTab:
    """A tab of the Searches view: its title, its default order, its columns."""

    title: str
    default_order: str
    columns: tuple[Column, ...]
    empty: str


_SEARCH_COLUMNS = (
    Column("query", "query", "query"),
    Column("sessions", "sessions", order="count"),
    Column("CTR", "click_through_rate", "rate", order="ctr"),
    Column("no-click", "no_click_sessions"),
    Column("no-click rate", "no_click_rate", "rate", order="no_click_rate"),
    Column("clicks", "clicks"),
    Column("avg click position", "avg_click_position", "position", order="avg_click_position"),
    Column("MRR", "mean_reciprocal_rank", "rate"),
    Column("no results", "no_result_sessions"),
)


def _with_order(columns: tuple[Column, ...], field: str, order: str) -> tuple[Column, ...]:
    return tuple(Column(c.label, c.field, c.kind, order) if c.field == field else c for c in columns)


#: The tabs of the Searches view (the ``tab`` query parameter).
SEARCH_TABS = {
    "top": SearchTab("Top searches", "count", _SEARCH_COLUMNS, "No search in the selected batches."),
    "no-clicks": SearchTab(
        "Searches without clicks",
        "no_click_sessions",
        _with_order(_SEARCH_COLUMNS, "no_click_sessions", "no_click_sessions"),
        "Every search of the selected batches got a click.",
    ),
    "no-results": SearchTab(
        "Searches without results",
        "no_result_sessions",
        _with_order(_SEARCH_COLUMNS, "no_result_sessions", "no_result_sessions"),
        "Every search of the selected batches had results.",
    ),
    "hits": SearchTab(
        "Top hits",
        "impressions",
        (
            Column("object", "object_id", "object"),
            Column("impressions", "impressions", order="impressions"),
            Column("clicks", "clicks", order="clicks"),
            Column("CTR", "click_through_rate", "rate", order="ctr"),
            Column("mean position", "mean_position", "position", order="mean_position"),
        ),
        "No result was shown in the selected batches.",
    ),
}


def bound(value: int | None, lower_bound: bool) -> str:
    """A count, as ``≥ 1,234`` when it is a lower bound (the key fell outside a batch's kept top N)."""
    return f"≥ {count(value)}" if lower_bound and value is not None else count(value)


def position(value: float | None) -> str:
    """A mean position with two decimals ("–" for None)."""
    return "–" if value is None else f"{value:.2f}"


_env.filters.update(bound=bound, position=position)


def selection_query(*, last: int | None, batch_id: str | None, **more: Any) -> str:
    """The query string of a Searches link: the batch selection and ``more`` (None values left out)."""
    params = {"batch_id": batch_id, "last": None if batch_id is not None else last, **more}
    return "&".join(f"{k}={quote_segment(v)}" for k, v in params.items() if v is not None)


def searches_page(
    *,
    ui: str,
    tab: str,
    answer: models.SearchesPage | models.HitsPage,
    last: int | None,
    batch_id: str | None,
    after: str | None,
    limit: int,
) -> str:
    """The Searches view: the selection (last N released batches or one), the tabs, one page of the tab's
    rows with sortable headings (a heading sorts by it; again: the other direction), the totals."""
    spec = SEARCH_TABS[tab]

    def link(**more: Any) -> str:
        return f"{ui}searches?{selection_query(last=last, batch_id=batch_id, **more)}"

    headings = []
    for c in spec.columns:
        active = c.order is not None and c.order == answer.order_by
        flip = "asc" if active and answer.direction == "desc" else "desc"
        headings.append(
            {
                "column": c,
                "active": active,
                "arrow": ("▼" if answer.direction == "desc" else "▲") if active else "",
                "href": link(tab=tab, order_by=c.order, direction=flip, limit=limit) if c.order else None,
            }
        )
    rows = answer.hits if isinstance(answer, models.HitsPage) else answer.searches
    return _render(
        "searches.html",
        ui=ui,
        title=spec.title,
        tab=tab,
        tabs=[(key, t.title, link(tab=key, limit=limit)) for key, t in SEARCH_TABS.items()],
        spec=spec,
        headings=headings,
        rows=[r.model_dump() for r in rows],
        range=answer.range,
        total=answer.total,
        last=last,
        batch_id=batch_id,
        limit=limit,
        after=after,
        lower_bounds=any(r.lower_bound for r in rows),
        first_href=link(tab=tab, order_by=answer.order_by, direction=answer.direction, limit=limit),
        next_href=(
            link(tab=tab, order_by=answer.order_by, direction=answer.direction, limit=limit, after=answer.next_after)
            if answer.next_after
            else None
        ),
        query_link=lambda query: f"{ui}searches/query?{selection_query(last=last, batch_id=batch_id, q=query)}",
    )


def query_plots(analytics: models.QueryAnalytics) -> list[Markup]:
    """A query's plots: its sessions and its click-through rate per batch (oldest first; a lower bound
    says so in the tooltip), and its click-through rate by result position."""
    points = analytics.batches
    fmt = tick_format(points[0].released_at, points[-1].released_at) if points else "%H:%M:%S"
    categories = [
        Category(
            label=utc(p.released_at, fmt),
            title=f"{p.batch_id}\nreleased {millis(p.released_at)}\n"
            + (f"{bound(p.sessions, p.lower_bound)} sessions" if p.kept or p.lower_bound else "not searched"),
            attrs={"data-batch-id": p.batch_id},
        )
        for p in points
    ]
    x_title = "released batches, oldest to newest (release time, UTC)"
    empty = "no released batch with search analytics"
    ctr = [p.click_through_rate for p in points]
    entries = analytics.positions
    pos_values = [p.ctr for p in entries]
    return [
        line_plot(
            plot_id="query-sessions",
            title="Sessions per batch",
            categories=categories,
            series=[Series("sessions", "sessions", [float(p.sessions) for p in points])],
            x_title=x_title,
            y_title="sessions",
            y_format=_integer,
            empty_message=empty,
        ),
        line_plot(
            plot_id="query-ctr",
            title="Click-through rate per batch",
            categories=categories,
            series=[Series("CTR", "ctr", ctr)],
            x_title=x_title,
            y_title="sessions with a click",
            y_max=min(1.0, nice_ceiling(max((v for v in ctr if v is not None), default=0.0))),
            y_format=_two_decimals,
            empty_message=empty,
        ),
        line_plot(
            plot_id="query-positions",
            title="Click-through rate by result position",
            categories=[
                Category(
                    label=str(p.position),
                    title=f"position {p.position}\n{p.clicks:,} of {p.shown:,} impressions clicked",
                    attrs={"data-position": str(p.position)},
                )
                for p in entries
            ],
            series=[Series("CTR", "ctr", pos_values)],
            x_title="position of the result",
            y_title="clicked / shown there",
            y_max=min(1.0, nice_ceiling(max((v for v in pos_values if v is not None), default=0.0))),
            y_format=_two_decimals,
            empty_message="no position",
            max_x_labels=len(entries),
        ),
    ]


def label_columns(labels: Sequence[Mapping[str, Any]]) -> list[str]:
    """The columns of the labels table: every key of the labels, ``object_id`` first, in first-seen order."""
    keys: dict[str, None] = {"object_id": None} if any("object_id" in r for r in labels) else {}
    for r in labels:
        keys.update(dict.fromkeys(r))
    return list(keys)


def label_cell(value: Any) -> str:
    """A label value: a float with four decimals, a count with separators, anything else as text."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def query_page(*, ui: str, text: str, analytics: models.QueryAnalytics, last: int | None, batch_id: str | None) -> str:
    """One query over the selection: its summary, trend and position plots, top objects, debiased labels."""
    labels = analytics.labels
    return _render(
        "query.html",
        ui=ui,
        title=f"Search {analytics.query}",
        text=text,
        a=analytics,
        s=analytics.summary,
        plots=query_plots(analytics),
        range=analytics.range,
        last=last,
        batch_id=batch_id,
        back=f"{ui}searches?{selection_query(last=last, batch_id=batch_id)}",
        labels=labels,
        label_columns=label_columns(labels) if labels else [],
        label_cell=label_cell,
    )


# ---------------------------------------------------------------------------------------------- training-signal labels


def propensities_plot(labels: models.BatchPropensities) -> Markup:
    """The estimated examination curve ``θ`` by position (``θ_1 = 1``), beside the raw CTR relative to position
    1 (what ``θ`` would be if every position showed equally attractive results): one marker per position
    (``data-position``), a cross where the batch cannot identify ``θ``; the tooltip gives ``± 1.96·se``."""
    entries = labels.propensities
    top_ctr = entries[0].raw_ctr if entries and entries[0].raw_ctr else None

    def title(p: models.Propensity) -> str:
        if p.theta is None:
            theta = f"θ unidentified: {p.reason}"
        else:
            se = f" ± {1.96 * p.theta_se:.3f} (95 %)" if p.theta_se is not None else ""
            theta = f"θ = {p.theta:.3f}{se}"
        return f"position {p.position}\n{theta}\nraw CTR {rate(p.raw_ctr)} ({p.clicks:,} of {p.impressions:,})"

    categories = [
        Category(label=str(p.position), title=title(p), attrs={"data-position": str(p.position)}) for p in entries
    ]
    theta = [p.theta for p in entries]
    naive = [
        round(p.raw_ctr / top_ctr, 6) if top_ctr and p.raw_ctr is not None and p.impressions else None for p in entries
    ]
    values = [v for v in theta + naive if v is not None]
    return line_plot(
        plot_id="propensities",
        title="Examination probability θ by position",
        categories=categories,
        series=[Series("θ", "theta", theta), Series("CTR ÷ CTR at 1", "naive", naive)],
        x_title="position of the result",
        y_title="relative to position 1",
        y_max=nice_ceiling(max(values, default=1.0)),
        y_format=_two_decimals,
        empty_message="no position",
        max_x_labels=len(categories),
    )


def judgments_plot(judgments: Sequence[models.Judgment]) -> Markup:
    """Raw CTR vs debiased ``γ`` of a query's objects (``data-object-id``), in the order given."""
    categories = [
        Category(
            label=str(i),
            title=f"{j.object_id}\nshown {j.impressions:,}× (mean position {j.mean_position:.1f}), "
            f"clicked {j.clicks:,}×; effective sample {j.effective_sample_size:.1f}",
            attrs={"data-object-id": j.object_id},
        )
        for i, j in enumerate(judgments, start=1)
    ]
    return line_plot(
        plot_id="judgments",
        title="Raw CTR vs debiased relevance γ",
        categories=categories,
        series=[
            Series("γ (debiased)", "gamma", [j.gamma for j in judgments]),
            Series("raw CTR", "raw", [j.raw_ctr for j in judgments]),
        ],
        x_title="object (by γ)",
        y_title="click probability at position 1",
        y_max=1.0,
        y_format=_two_decimals,
        empty_message="no judgment kept for this query",
    )


def judgments_page(
    *, ui: str, batch_id: str, query: str | None, page: models.JudgmentsPage, limit: int, after: str | None
) -> str:
    """A batch's judgments (one query's, when ``query`` is given): raw CTR vs debiased ``γ``, by ``γ``."""
    rows = sorted(page.judgments, key=lambda j: (j.gamma is None, -(j.gamma or 0.0), j.query, j.object_id))
    base = f"{ui}batches/{quote_segment(batch_id)}/judgments?limit={limit}"
    if page.query:
        base += f"&query={quote_segment(page.query)}"
    return _render(
        "judgments.html",
        ui=ui,
        title=f"Judgments of batch {batch_id}",
        batch_id=batch_id,
        query=page.query,
        asked=query,
        judgments=rows,
        judgments_svg=judgments_plot(rows) if page.query else None,
        page=page,
        after=after,
        next_href=f"{base}&after={quote_segment(page.next_after)}" if page.next_after else None,
        first_href=base if after else None,
    )
