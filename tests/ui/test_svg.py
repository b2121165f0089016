"""The page's plots and HTML without a server: one marker per batch, escaping, empty data, missing values."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from clickstream import models
from clickstream.web.page import pages
from clickstream.web.page.svg import Category, Series, line_plot, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


def _plot(values: list[float | None], **kwargs) -> ET.Element:
    categories = [
        Category(label=f"c{i}", title=f"batch {i}", attrs={"data-batch-id": f"b{i}"}) for i in range(len(values))
    ]
    svg = line_plot(
        plot_id="p",
        title="T",
        categories=categories,
        series=[Series("CTR", "ctr", values)],
        x_title="x",
        y_title="y",
        **kwargs,
    )
    return ET.fromstring(str(svg))  # well-formed XML, or this raises


def _markers(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if "point" in e.get("class", "").split()]


def _point(batch_id: str, released_at: int, ctr: float | None, sessions: int = 10) -> models.MetricsPoint:
    return models.MetricsPoint(
        batch_id=batch_id,
        released_at=released_at,
        sessions=sessions,
        events=2 * sessions,
        ctr=ctr,
        mrr=ctr,
        no_click_rate=None if ctr is None else 1 - ctr,
        irrelevant_rate=None if ctr is None else 0.0,
        late_events=0,
    )


class TestLinePlot:
    def test_one_marker_per_category_carrying_its_batch_id_and_value(self) -> None:
        root = _plot([0.2, 0.5, 0.9])
        markers = _markers(root)
        assert [m.get("data-batch-id") for m in markers] == ["b0", "b1", "b2"]
        assert [float(m.get("data-value", "")) for m in markers] == [0.2, 0.5, 0.9]
        assert [m.findtext(f"{SVG}title", "") for m in markers][0] == "batch 0\nCTR: 0.2"

    def test_a_higher_value_is_drawn_higher_and_the_axis_starts_at_zero(self) -> None:
        root = _plot([0.2, 0.5, 0.9], y_max=1.0)
        ys = [float(m.get("cy", "")) for m in _markers(root)]
        assert ys[0] > ys[1] > ys[2]  # SVG's y grows downwards
        ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick y"]
        assert ticks[0] == "0" and ticks[-1] == "1"

    def test_a_missing_value_still_has_a_marker(self) -> None:
        markers = _markers(_plot([0.5, None, 0.7]))
        assert [m.get("data-batch-id") for m in markers] == ["b0", "b1", "b2"]
        assert "missing" in markers[1].get("class", "") and markers[1].get("data-value") == ""
        assert "no value" in markers[1].findtext(f"{SVG}title", "")

    def test_no_data_says_so_and_draws_no_marker(self) -> None:
        root = _plot([], empty_message="no released batch yet")
        assert _markers(root) == []
        assert "no released batch yet" in [t.text for t in root.iter(f"{SVG}text")]

    def test_text_and_attributes_are_escaped(self) -> None:
        evil = '"><script>alert(1)</script>'
        svg = str(
            line_plot(
                plot_id="p",
                title=evil,
                categories=[Category(label=evil, title=evil, attrs={"data-batch-id": evil})],
                series=[Series(evil, "k", [0.5])],
                x_title=evil,
                y_title=evil,
            )
        )
        assert "<script>" not in svg
        root = ET.fromstring(svg)
        assert _markers(root)[0].get("data-batch-id") == evil  # the value survives, escaped

    def test_values_and_categories_must_match(self) -> None:
        with pytest.raises(ValueError, match="2 values for 3 categories"):
            line_plot(
                plot_id="p",
                title="T",
                categories=[Category("a", "a"), Category("b", "b"), Category("c", "c")],
                series=[Series("s", "s", [1.0, 2.0])],
                x_title="x",
                y_title="y",
            )

    def test_only_data_attributes_are_accepted(self) -> None:
        with pytest.raises(ValueError, match="data-"):
            line_plot(
                plot_id="p",
                title="T",
                categories=[Category("a", "a", {"onclick": "x"})],
                series=[Series("s", "s", [1.0])],
                x_title="x",
                y_title="y",
            )

    @pytest.mark.parametrize(("value", "top"), [(0, 1), (0.043, 0.05), (0.726, 1), (3, 5), (1200, 2000), (0.2, 0.2)])
    def test_nice_ceiling(self, value: float, top: float) -> None:
        assert nice_ceiling(value) == pytest.approx(top)


class TestPages:
    def test_overview_plots_have_one_point_per_released_batch(self) -> None:
        series = models.MetricsSeries(
            metrics=[_point("b1", 1_800_000_000_000, 0.5), _point("b2", 1_800_000_100_000, None, sessions=0)]
        )
        plots = pages.metrics_plots(series)
        assert [re.search(r'data-plot="(\w+)"', str(p)).group(1) for p in plots] == [  # type: ignore[union-attr]
            "ctr",
            "mrr",
            "no_click_rate",
            "irrelevant_rate",
            "volume",
        ]
        for plot in plots[:4]:
            assert [m.get("data-batch-id") for m in _markers(ET.fromstring(str(plot)))] == ["b1", "b2"]
        volume = _markers(ET.fromstring(str(plots[4])))
        assert [(m.get("data-series"), m.get("data-batch-id")) for m in volume] == [
            ("sessions", "b1"),
            ("sessions", "b2"),
            ("events", "b1"),
            ("events", "b2"),
        ]

    def test_the_overview_escapes_what_the_store_holds(self) -> None:
        batch = models.BatchSummary(
            batch_id="b1",
            status="released",
            created_at=1_800_000_000_000,
            released_at=1_800_000_000_001,
            release_id="<script>alert(1)</script>",
            sessions=1,
            events=0,
            metrics=models.BatchQuality(ctr=0, mrr=0, no_click_rate=1, irrelevant_rate=0, late_events=0),
            dataset="file:///data/<x>&y",
        )
        page = pages.overview_page(
            ui="./",
            batches=models.BatchList(batches=[batch], next_before=None),
            series=models.MetricsSeries(metrics=[]),
            before=None,
            limit=20,
        )
        assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "file:///data/&lt;x&gt;&amp;y" in page
        assert 'href="./static/clickstream.css"' in page

    def test_times_are_shown_in_utc(self) -> None:
        assert pages.millis(1_800_000_000_000) == "2027-01-15 08:00:00 UTC"
        assert pages.millis(None) == "–"
