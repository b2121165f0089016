"""The Clickstream page in the Airflow UI: HTML served by the plugin's app at ``/clickstream/ui/``.

Server-rendered: Jinja2 templates (autoescaped) and plots drawn as inline SVG in Python
(:mod:`clickstream.ui.svg`), one stylesheet, no script; every asset is in this package, so the page works
offline. :mod:`clickstream.plugin` shows it in Airflow's navigation (``/plugin/clickstream``) and as a tab
of DAG runs; :func:`ui_router` is included in the app by :func:`clickstream.api.create_app`.
"""

from __future__ import annotations

from clickstream.ui.routes import ui_router

__all__ = ["ui_router"]
