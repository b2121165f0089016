"""Shared pytest fixtures.

Backends
    ``pg_server`` (session)  a PostgreSQL server: ``$CLICKSTREAM_TEST_PG_URL`` if set, else a private
                             :class:`~tests.support.pgcluster.ThrowawayPostgres` started on first use
                             (~1.5 s) and stopped at the end.
    ``pg_url``               a fresh, empty PostgreSQL database for one test (~20 ms), dropped afterwards.
    ``sqlite_url``           ``sqlite:///<tmp_path>/store.db`` for one test.
    ``store_url``            parametrised ``[sqlite]`` / ``[postgres]``: write a store contract test once,
                             run it on both.
                             The postgres case carries the ``postgres`` marker (``-m "not postgres"`` skips it).

Airflow
    The Airflow environment below is set before anything imports airflow (its config is read at import time).
    The metadata DB is *not* created by default; request ``airflow_db`` in tests that need it
    (``dag.test()``, ``airflow.api_fastapi.app.create_app()``).
"""

from __future__ import annotations

# --- Airflow environment: must run before the first `import airflow` anywhere ---------------------------
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

if "airflow" in sys.modules:  # pragma: no cover - a plugin or earlier conftest imported airflow first
    raise RuntimeError("airflow was imported before tests/conftest.py could configure it; check pytest plugins")

AIRFLOW_HOME = tempfile.mkdtemp(prefix="clickstream-airflow-home-")
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
        # A key long enough for HS512, so token minting in API tests does not warn on every request.
        "AIRFLOW__API_AUTH__JWT_SECRET": "clickstream-tests-" + "k" * 64,
    }
)
# ---------------------------------------------------------------------------------------------------------

import re
import uuid
from collections.abc import Iterator

import pytest

from clickstream.store import SessionStore
from tests.support import report
from tests.support.connections import airflow_conn_json
from tests.support.pgcluster import ExistingPostgres, PostgresServer, ThrowawayPostgres

PG_URL_ENV = "CLICKSTREAM_TEST_PG_URL"


# ------------------------------------------------------------------------------------------ report lines
# Tests may add lines to the end-of-run terminal summary (tests.support.report). They may run in
# pytest-xdist workers, whose own terminal summary is never shown, so the lines go to a file this (main)
# process creates, whose path the workers inherit through the environment, and which is printed here.


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the main process (with or without xdist)
        report.start()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    for title, lines in report.collect().items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that take a PostgreSQL fixture directly are `postgres` tests too, so `-m "not postgres"` works
    # on a machine without PostgreSQL. (store_url[postgres] is marked by its pytest.param.)
    for item in items:
        if {"pg_server", "pg_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


# --------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server for this test session.

    ``$CLICKSTREAM_TEST_PG_URL`` (a SQLAlchemy URL whose user may CREATE DATABASE) selects an existing server;
    otherwise a throwaway server is started (PostgreSQL 15 here: ~1.3-1.5 s for initdb + start) and stopped
    at the end of the session. Exposes ``.url``, ``.admin_url``, ``.url_for(db)``, ``.create_database(name)``,
    ``.drop_database(name)``.
    """
    existing = os.environ.get(PG_URL_ENV)
    if existing:
        yield ExistingPostgres(existing)
        return
    server = ThrowawayPostgres(dbname="clickstream_session").start()
    try:
        yield server
    finally:
        server.stop()


def _db_name(request: pytest.FixtureRequest) -> str:
    # t_<test name>_<random>; readable in pg_stat_activity, unique across concurrent runs, <= 63 chars.
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of a new, empty database used by this test only.

    Created from ``template0`` with ``STRATEGY FILE_COPY`` (~20 ms on the throwaway server) and dropped
    ``WITH (FORCE)`` afterwards, which also kills connections the test left open. Drop errors are ignored.
    """
    name = _db_name(request)
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        try:
            pg_server.drop_database(name)
        except Exception:
            pass


# --------------------------------------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a (not yet existing) SQLite file in this test's ``tmp_path``."""
    return f"sqlite:///{tmp_path / 'store.db'}"


# --------------------------------------------------------------------------------------------- both


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh session-store database URL; the test runs once per backend (ids ``sqlite`` and ``postgres``).

    ``request.param`` is the backend name; tests can read it via ``request.node.callspec.params["store_url"]``.
    """
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture
def store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SessionStore]:
    """A migrated :class:`SessionStore` on ``store_url``, which is also the ``clickstream_default``
    Connection (``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``, URI form) for hooks, operators and DAGs."""
    s = SessionStore.from_url(store_url)
    s.migrate()
    monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", store_url)
    yield s
    s.dispose()


@pytest.fixture
def clickstream_conn(store_url: str, store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> SessionStore:
    """Like ``store``, with the Connection in Airflow's JSON form (``conn_type`` postgres or sqlite)."""
    monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", airflow_conn_json(store_url))
    return store


# --------------------------------------------------------------------------------------------- Airflow


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """An initialised Airflow metadata DB (SQLite in the temp AIRFLOW_HOME), created once per session.

    Needed by ``dag.test()`` and ``airflow.api_fastapi.app.create_app()``; plain hook/operator tests don't need it.
    Measured here (Airflow 3.3.2, SQLite): ``resetdb()`` itself takes 2.0-2.3 s (drop + create all tables
    from the ORM + stamp alembic head); the fixture's first use costs ~5 s in all, because importing
    ``airflow.utils.db`` pulls in most of Airflow (~3 s). That is why it is not autouse.
    """
    from airflow.utils import db

    db.resetdb()
    yield
