"""SQLAlchemy engines for the session store, tuned per backend.

PostgreSQL uses the psycopg 3 driver. SQLite runs in WAL mode with a busy timeout so that a standalone
Airflow's parallel tasks and its API server can share one file; write transactions start with
``BEGIN IMMEDIATE`` (writers queue up front instead of failing half-way on a lock upgrade) and read
transactions with a plain ``BEGIN`` (readers never wait for writers under WAL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

#: Execution option that marks a connection's next transaction as a write.
WRITE_OPTION = "clickstream_write"


def normalize_url(url: str | URL) -> URL:
    """Pin the driver: ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``."""
    parsed = make_url(str(url).replace("postgres://", "postgresql://", 1) if isinstance(url, str) else url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_store_engine(
    url: str | URL,
    *,
    sqlite_busy_timeout_s: float = 30.0,
    connect_timeout_s: int = 5,
    **engine_kwargs: Any,
) -> Engine:
    """Create the engine for a store URL (``postgresql[+psycopg]://...`` or ``sqlite:///path``).

    :param url: SQLAlchemy URL of the session store.
    :param sqlite_busy_timeout_s: how long a SQLite writer waits for the lock before giving up.
    :param connect_timeout_s: PostgreSQL connect timeout, so an outage fails fast instead of hanging.
    :param engine_kwargs: passed to :func:`sqlalchemy.create_engine` (e.g. ``poolclass``).
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        connect_args = {"connect_timeout": connect_timeout_s, **engine_kwargs.pop("connect_args", {})}
        engine_kwargs.setdefault("pool_pre_ping", True)
        return create_engine(parsed, connect_args=connect_args, **engine_kwargs)
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": sqlite_busy_timeout_s, "check_same_thread": False}
        connect_args.update(engine_kwargs.pop("connect_args", {}))
        engine = create_engine(parsed, connect_args=connect_args, **engine_kwargs)
        _configure_sqlite(engine, sqlite_busy_timeout_s)
        return engine
    raise ValueError(f"unsupported session store URL {parsed.render_as_string()!r}: use postgresql:// or sqlite:///")


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every SQLite test
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised by every SQLite test
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")
