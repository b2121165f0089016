"""The Airflow plugin ``clickstream``: mounts the clickstream REST API in Airflow's API server.

Registered through the ``airflow.plugins`` entry point (``pyproject.toml``). Every Airflow component
imports plugins, so this module is cheap and has no side effects: the FastAPI app is built only when
``fastapi_apps`` is first read, which happens in the API server (and in ``airflow plugins``), never in the
scheduler, the DAG processor or a task. The store's engine is created later still, in the app's lifespan.

The API is served at ``<[api] base_url>/clickstream/...``, its OpenAPI document at
``/clickstream/openapi.json`` and its interactive docs at ``/clickstream/docs`` (also linked from the
Airflow UI's *Docs* menu). The Clickstream page (:mod:`clickstream.web.routes.page`, ``/clickstream/ui/``) is a
top-level entry of the UI's navigation, shown inside the UI at ``/plugin/clickstream``, and a tab of DAG runs.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk.plugins_manager import AirflowPlugin

#: Where the API is mounted, below ``[api] base_url``.
URL_PREFIX = "/clickstream"

_lock = threading.Lock()
_built: dict[str, list[dict[str, Any]]] = {}


def base_url_path(path: str) -> str:
    """``path`` below the path of ``[api] base_url`` (``/clickstream/docs`` or ``/airflow/clickstream/docs``)."""
    from airflow.sdk import conf

    base_url = conf.get("api", "base_url", fallback="/") or "/"
    base_path = urlsplit(base_url).path if base_url.startswith(("http://", "https://")) else base_url
    return base_path.rstrip("/") + path


def _fastapi_apps() -> list[dict[str, Any]]:
    from clickstream.web.app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Clickstream API"}]


#: Route of the Clickstream page inside the Airflow UI (``/plugin/clickstream``).
UI_ROUTE = "clickstream"


def _external_views() -> list[dict[str, Any]]:
    # The page (clickstream.web.routes.page) opens inside the UI, in an iframe at /plugin/<url_route>: as a top-level
    # navigation entry, and as a tab of every DAG run (Airflow 3.3 cannot limit a tab to one DAG; the tab
    # says when a run released no batch). The UI fills in {DAG_ID} and {RUN_ID}, URL-encoded.
    return [
        {
            "name": "Clickstream",
            "href": base_url_path(f"{URL_PREFIX}/ui/"),
            "url_route": UI_ROUTE,
            "destination": "nav",
            "nav_top_level": True,
        },
        {
            "name": "Clickstream batch",
            "href": base_url_path(f"{URL_PREFIX}/ui/dag_run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}"),
            "url_route": f"{UI_ROUTE}-dag-run",
            "destination": "dag_run",
        },
        {
            "name": "Clickstream API",
            "href": base_url_path(f"{URL_PREFIX}/docs"),
            "destination": "nav",
            "category": "docs",
        },
    ]


class _Lazy:
    """A class attribute computed on first read, once per process (Airflow reads it on plugin instances)."""

    def __init__(self, factory):
        self.factory = factory

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        with _lock:
            if self.name not in _built:
                _built[self.name] = self.factory()
            return _built[self.name]


class ClickstreamPlugin(AirflowPlugin):
    """Serves the clickstream app (:mod:`clickstream.web`: the REST API and the page) at ``/clickstream`` in the
    API server."""

    name = "clickstream"
    fastapi_apps = _Lazy(_fastapi_apps)
    external_views = _Lazy(_external_views)
