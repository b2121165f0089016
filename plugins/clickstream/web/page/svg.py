"""Line plots drawn server-side as inline SVG: no chart library, nothing loaded from anywhere.

:func:`line_plot` draws one or more series over the same categories (released batches, result positions):
axes with ticks, axis titles, a legend, and **one marker per category and series** carrying its data as
attributes (``data-series``, ``data-value`` and whatever the caller adds, e.g. ``data-batch-id``) and a
``<title>`` (the browser's tooltip). A missing value (``None``: a rate of an empty batch, a position where
nothing was shown) still gets a marker, a cross on the x axis with class ``missing``, so every category is
visible. Every text and attribute value is escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

#: Size of a plot (the SVG scales to its container's width; see clickstream.css).
WIDTH = 560
HEIGHT = 230
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 14, 30, 46
#: Space between the frame and the first and last markers.
_PAD = 18
#: Steps of the y axis (with tops of 1, 2, 2.5 or 5 x 10^k every tick is a round number).
Y_STEPS = 5
#: At most this many labels on the x axis (evenly picked, first and last included).
MAX_X_LABELS = 8

_ATTR_NAME = re.compile(r"^data-[a-z0-9-]+$")


@dataclass(frozen=True)
class Series:
    """One line of a plot.

    :param name: its legend entry ("CTR", "sessions").
    :param key: a short identifier (``data-series`` of its markers and its CSS class ``series-<index>``).
    :param values: one value per category; None where there is no value.
    """

    name: str
    key: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Category:
    """A position on the x axis.

    :param label: its tick label (shown for at most :data:`MAX_X_LABELS` categories).
    :param title: what the tooltip of its markers says about it (the batch id and release time, ...).
    :param attrs: ``data-*`` attributes of its markers (e.g. ``{"data-batch-id": "b1..."}``).
    """

    label: str
    title: str
    attrs: Mapping[str, str] = field(default_factory=dict)


def _fmt_default(value: float) -> str:
    return f"{value:g}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``value`` (1 for 0 or less): a readable top of an axis."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exponent
        if top >= value * (1 - 1e-12):
            return float(top)
    return float(10 ** (exponent + 1))  # pragma: no cover - the loop ends at 10 x 10^k


def _label_indexes(n: int, most: int) -> list[int]:
    if n <= most:
        return list(range(n))
    step = (n - 1) / (most - 1)
    return sorted({round(i * step) for i in range(most)})


def line_plot(
    *,
    plot_id: str,
    title: str,
    categories: Sequence[Category],
    series: Sequence[Series],
    x_title: str,
    y_title: str,
    y_max: float | None = None,
    y_format: Callable[[float], str] = _fmt_default,
    empty_message: str = "nothing to plot yet",
    max_x_labels: int = MAX_X_LABELS,
) -> Markup:
    """An inline ``<svg>`` with the series drawn over the categories, in order.

    :param plot_id: ``data-plot`` of the ``<svg>`` (tests and CSS find the plot by it).
    :param y_max: top of the y axis; default the :func:`nice_ceiling` of the largest value (the axis
        always starts at 0, so plots are never exaggerated).
    :param y_format: formats tick labels and values in tooltips.
    :param empty_message: shown inside the frame when there is no category.
    :param max_x_labels: label at most this many categories (evenly picked, first and last included).
    """
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(f"series {s.key!r} has {len(s.values)} values for {len(categories)} categories")
    for c in categories:
        bad = [name for name in c.attrs if not _ATTR_NAME.match(name)]
        if bad:
            raise ValueError(f"marker attributes must be data-* names, got {bad}")

    values = [v for s in series for v in s.values if v is not None]
    top = y_max if y_max is not None else nice_ceiling(max(values, default=0.0))
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    n = len(categories)

    def x(i: int) -> float:
        inner = plot_w - 2 * _PAD
        return _LEFT + _PAD + (inner / 2 if n == 1 else inner * i / (n - 1))

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - min(max(v / top, 0.0), 1.0))

    parts: list[Markup] = [
        Markup(
            '<svg class="plot" data-plot="{}" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title" '
            'xmlns="http://www.w3.org/2000/svg">'
        ).format(plot_id, WIDTH, HEIGHT, plot_id),
        Markup('<title id="{}-title">{}</title>').format(plot_id, title),
        Markup('<text class="plot-title" x="{}" y="16">{}</text>').format(_LEFT, title),
    ]
    # y grid, ticks and labels: 0, top / Y_STEPS, ..., top
    for k in range(Y_STEPS + 1):
        value = top * k / Y_STEPS
        yy = y(value)
        parts.append(
            Markup('<line class="grid" x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}"/>').format(_LEFT, yy, WIDTH - _RIGHT, yy)
        )
        parts.append(
            Markup('<text class="tick y" x="{}" y="{:.1f}">{}</text>').format(_LEFT - 6, yy + 4, y_format(value))
        )
    # axes
    parts.append(
        Markup(
            '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
            '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        ).format(l=_LEFT, r=WIDTH - _RIGHT, t=_TOP, b=_TOP + plot_h)
    )
    parts.append(
        Markup('<text class="axis-title x" x="{:.1f}" y="{}">{}</text>').format(_LEFT + plot_w / 2, HEIGHT - 4, x_title)
    )
    parts.append(
        Markup('<text class="axis-title y" transform="translate(12 {:.1f}) rotate(-90)">{}</text>').format(
            _TOP + plot_h / 2, y_title
        )
    )
    for i in _label_indexes(n, max(2, max_x_labels)):
        parts.append(
            Markup('<text class="tick x" x="{:.1f}" y="{}">{}</text>').format(
                x(i), _TOP + plot_h + 16, categories[i].label
            )
        )
    if not n:
        parts.append(
            Markup('<text class="empty" x="{:.1f}" y="{:.1f}">{}</text>').format(
                _LEFT + plot_w / 2, _TOP + plot_h / 2, empty_message
            )
        )
    # series: a polyline through the known values, then one marker per category
    for index, s in enumerate(series):
        cls = f"series series-{index}"
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) > 1:
                parts.append(Markup('<polyline class="{} line" points="{}"/>').format(cls, " ".join(run)))
        for i, (category, v) in enumerate(zip(categories, s.values, strict=True)):
            attrs = Markup("").join(Markup(' {}="{}"').format(k, val) for k, val in category.attrs.items())
            shown = "no value" if v is None else y_format(v)
            tooltip = f"{category.title}\n{s.name}: {shown}"
            if v is None:
                xx, yy = x(i), _TOP + plot_h
                parts.append(
                    Markup(
                        '<g class="{} point missing" data-series="{}" data-value=""{}><title>{}</title>'
                        '<path d="M{:.1f} {:.1f}l8 8m0 -8l-8 8"/></g>'
                    ).format(cls, s.key, attrs, tooltip, xx - 4, yy - 4)
                )
            else:
                parts.append(
                    Markup(
                        '<circle class="{} point" data-series="{}" data-value="{}"{} cx="{:.1f}" cy="{:.1f}" r="4">'
                        "<title>{}</title></circle>"
                    ).format(cls, s.key, repr(float(v)), attrs, x(i), y(v), tooltip)
                )
    # legend (only when there is more than one series)
    if len(series) > 1:
        lx = WIDTH - _RIGHT
        for index, s in reversed(list(enumerate(series))):
            lx -= 12 + 7 * len(s.name)
            parts.append(
                Markup(
                    '<circle class="series series-{} legend-mark" cx="{}" cy="12" r="4"/>'
                    '<text class="legend" x="{}" y="16">{}</text>'
                ).format(index, lx, lx + 7, s.name)
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
