"""The Clickstream page's HTML: Jinja2 templates (autoescaped) plus the SVG plots of :mod:`clickstream.web.page.svg`.

Every function takes what the store answered (the models of :mod:`clickstream.models`) and ``ui``, the
relative URL of the page's root (``./`` on the overview, ``../`` one level down): every link and the
stylesheet are relative, so the page works under any ``[api] base_url`` path and behind any proxy without
knowing its own address. Nothing here reads the store or the request.
"""

from __future__ import annotations

from collections.abc import Sequence
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
