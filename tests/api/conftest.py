"""Fixtures of the API tests: Airflow's API server app in process, with real JWTs, on a fresh store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.connections import airflow_conn_uri
from tests.support.inprocess import ROLES, Api, airflow_api_app, mint_token

# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def airflow_app(airflow_db: None) -> Iterator[Any]:
    """Airflow's API server app with SimpleAuthManager and every plugin found by entry point."""
    with airflow_api_app() as app:
        yield app


@pytest.fixture
def api(airflow_app: Any, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """The API on a fresh store: the app's lifespan opens (and migrates) it, and disposes of it after."""
    from fastapi.testclient import TestClient

    from clickstream.store import SessionStore

    monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", airflow_conn_uri(store_url))
    with TestClient(airflow_app) as client:
        store = SessionStore.from_url(store_url)
        try:
            yield Api(client, store, {role: mint_token(airflow_app, role) for role in ROLES})
        finally:
            store.dispose()
