"""One real ``airflow api-server`` (SQLite store) for the light client's tests, with a small
``max_bulk_items`` and a ``max_request_bytes`` (2 MiB) over the compressed size of a 1 GiB gzip bomb."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clickstream.store import SessionStore
from tests.support.apiserver import ApiServer

MAX_BULK_ITEMS = 100
MAX_REQUEST_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('light-client-store') / 'store.db'}"


@pytest.fixture(scope="module")
def server(airflow_db: None, store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    env = {
        "AIRFLOW__CLICKSTREAM__MAX_BULK_ITEMS": str(MAX_BULK_ITEMS),
        "AIRFLOW__CLICKSTREAM__MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    }
    with ApiServer(store_url, tmp_path_factory.mktemp("api-server"), extra_env=env) as api_server:
        yield api_server


@pytest.fixture(scope="module")
def store(server: ApiServer, store_url: str) -> Iterator[SessionStore]:
    """The store behind the server, read directly (the server migrated it)."""
    s = SessionStore.from_url(store_url)
    yield s
    s.dispose()
