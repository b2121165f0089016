"""Fixtures of the fault-injection tests: a private PostgreSQL (crashed and restarted on purpose, so never the
session's shared ``pg_server``) and a real ``airflow api-server`` on it, both shared by the folder's tests
because an api-server takes 15 to 30 s to start on a 2-core machine.

``fault_pg``          a :class:`~tests.support.pgcluster.ThrowawayPostgres` with ``synchronous_commit = on``
                      (:data:`tests.support.faults.CRASH_SAFE_SETTINGS`). Before each test it is brought back
                      if an earlier test left it halted; at the end of the folder it is stopped and deleted.
``fault_store_url``   its database ``clickstream_faults``, migrated; tests tell their data apart by id prefixes.
``fault_api_server``  an :class:`~tests.support.apiserver.ApiServer` on that store, started again before a test
                      if an earlier one left it dead; stopped at the end, also after a SIGKILL (whatever is
                      left of its process group is killed too).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from clickstream.store import SessionStore
from tests.support.apiserver import ApiServer
from tests.support.faults import fault_postgres
from tests.support.pgcluster import PostgresNotFound, ThrowawayPostgres


@pytest.fixture(scope="package")
def _fault_pg() -> Iterator[ThrowawayPostgres]:
    try:
        with fault_postgres() as pg:
            yield pg
    except PostgresNotFound as err:
        if os.environ.get("CLICKSTREAM_TEST_PG_URL"):  # an external server only: nothing we may crash
            pytest.skip(f"fault tests start (and crash) their own PostgreSQL: {err}")
        raise


@pytest.fixture
def fault_pg(_fault_pg: ThrowawayPostgres) -> ThrowawayPostgres:
    if _fault_pg.postmaster_pid() is None:  # an earlier test failed while it was down
        _fault_pg.resume()
    return _fault_pg


@pytest.fixture(scope="package")
def _fault_store_url(_fault_pg: ThrowawayPostgres) -> str:
    store = SessionStore.from_url(_fault_pg.url)
    try:
        store.migrate()
    finally:
        store.dispose()
    return _fault_pg.url


@pytest.fixture
def fault_store_url(fault_pg: ThrowawayPostgres, _fault_store_url: str) -> str:
    return _fault_store_url


def _kill_leftovers(server: ApiServer) -> None:
    """``ApiServer.stop()`` returns at once when the main process is dead: kill what may be left of its group."""
    if server.process is not None and server.process.poll() is not None:
        try:
            os.killpg(server.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="package")
def _fault_api_server(
    airflow_db: None, _fault_store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    server = ApiServer(_fault_store_url, tmp_path_factory.mktemp("fault-api-server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _kill_leftovers(server)


@pytest.fixture
def fault_api_server(fault_store_url: str, _fault_api_server: ApiServer) -> ApiServer:
    if not _fault_api_server.running:  # an earlier test failed while it was killed
        _kill_leftovers(_fault_api_server)
        _fault_api_server.start()
    return _fault_api_server
