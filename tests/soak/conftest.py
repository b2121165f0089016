"""Fixtures of the soak test: its own PostgreSQL (restarted on purpose, so never the session's shared
``pg_server``) and a real ``airflow api-server`` with 2 workers on it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from clickstream.store import SessionStore
from tests.support.apiserver import ApiServer
from tests.support.faults import fault_postgres
from tests.support.pgcluster import PostgresNotFound, ThrowawayPostgres


@pytest.fixture(scope="module")
def soak_pg() -> Iterator[ThrowawayPostgres]:
    try:
        with fault_postgres(dbname="clickstream_soak") as pg:
            store = SessionStore.from_url(pg.url)
            try:
                store.migrate()
            finally:
                store.dispose()
            yield pg
    except PostgresNotFound as err:
        if os.environ.get("CLICKSTREAM_TEST_PG_URL"):  # an external server only: nothing we may restart
            pytest.skip(f"the soak test starts (and restarts) its own PostgreSQL: {err}")
        raise


@pytest.fixture(scope="module")
def soak_server(
    airflow_db: None, soak_pg: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    server = ApiServer(soak_pg.url, tmp_path_factory.mktemp("soak-api-server"), workers=2)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.process is not None and server.process.poll() is not None:
            try:  # whatever is left of its process group
                os.killpg(server.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
