"""Smoke tests for the test infrastructure itself (tests/conftest.py, tests/support/pgcluster.py)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

_seen_pg_databases: list[str | None] = []


def _user_tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("run", [1, 2])
def test_pg_url_is_a_fresh_empty_database(pg_url: str, run: int) -> None:
    url = make_url(pg_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.database not in _seen_pg_databases, "two tests got the same database"
    _seen_pg_databases.append(url.database)

    assert _user_tables(pg_url) == []  # empty, whatever the other run left behind in its own database
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            assert conn.execute(sa.text("select current_database()")).scalar_one() == url.database
            conn.execute(sa.text("create table leftover (id int)"))  # must not be visible to the other run
    finally:
        engine.dispose()


def test_pg_url_is_dropped_afterwards(pg_server) -> None:
    # Runs after the parametrised test above (file order): its databases are gone.
    if not _seen_pg_databases:
        pytest.skip("ran without test_pg_url_is_a_fresh_empty_database")
    engine = sa.create_engine(pg_server.admin_url)
    try:
        with engine.connect() as conn:
            names = set(conn.execute(sa.text("select datname from pg_database")).scalars())
    finally:
        engine.dispose()
    assert not names & set(_seen_pg_databases)


def test_sqlite_url_is_writable(sqlite_url: str, tmp_path) -> None:
    path = make_url(sqlite_url).database
    assert path and os.path.dirname(path) == str(tmp_path)
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (x int)"))
            conn.execute(sa.text("insert into t values (42)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select x from t")).scalar_one() == 42
    finally:
        engine.dispose()
    assert os.path.getsize(path) > 0


def test_store_url_runs_on_both_backends(store_url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["store_url"]
    assert make_url(store_url).get_backend_name() == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    assert ("postgres" in request.node.keywords) == (backend == "postgres")
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_airflow_env_is_isolated() -> None:
    # conftest.py points Airflow at a temp home and the repo's dags/ before airflow is imported.
    from airflow.configuration import conf

    home = os.environ["AIRFLOW_HOME"]
    assert "clickstream-airflow-home-" in home
    assert conf.get("database", "sql_alchemy_conn") == f"sqlite:///{home}/airflow.db"
    assert conf.getboolean("core", "load_examples") is False
    assert conf.get("core", "dags_folder").endswith("/dags")
