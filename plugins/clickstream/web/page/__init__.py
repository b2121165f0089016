"""The Clickstream page's rendering: Jinja2 templates (autoescaped) and plots drawn as inline SVG in Python
(:mod:`clickstream.web.page.svg`), one stylesheet, no script; every asset is in this package, so the page
works offline. Its routes are :mod:`clickstream.web.routes.page`; :mod:`clickstream.plugin` shows it in
Airflow's navigation (``/plugin/clickstream``) and as a tab of DAG runs."""
