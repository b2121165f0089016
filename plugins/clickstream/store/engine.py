"""SQLAlchemy engines for the session store, tuned per backend.

PostgreSQL uses the psycopg 3 driver. SQLite runs in WAL mode with a busy timeout so that a standalone
Airflow's parallel tasks and its API server can share one file; write transactions start with
``BEGIN IMMEDIATE`` (writers queue up front instead of failing half-way on a lock upgrade) and read
transactions with a plain ``BEGIN`` (readers never wait for writers under WAL).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
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
    :param connect_timeout_s: PostgreSQL connect timeout, so an outage fails fast instead of hanging (a
        ``connect_timeout`` in the URL's query wins, as do the URL's keepalive settings over
        :data:`TCP_KEEPALIVE`).
    :param engine_kwargs: passed to :func:`sqlalchemy.create_engine` (e.g. ``poolclass``).
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        # A connect_timeout in the URL (a Connection's extra) wins over the default: connect_args would
        # override the URL's query.
        # TCP keepalives and a user timeout: a query on a pooled connection to a server that stopped
        # answering (dead host, network partition) fails in about 10 s (503) instead of hanging.
        defaults = {"connect_timeout": connect_timeout_s, **TCP_KEEPALIVE}
        connect_args = {
            **{k: v for k, v in defaults.items() if k not in parsed.query},
            **engine_kwargs.pop("connect_args", {}),
        }
        engine = create_engine(parsed, connect_args=connect_args, **engine_kwargs)
        if not engine_kwargs.get("pool_pre_ping"):
            _ping_when_idle(engine, PING_AFTER_IDLE_S)
        return engine
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": sqlite_busy_timeout_s, "check_same_thread": False}
        connect_args.update(engine_kwargs.pop("connect_args", {}))
        engine = create_engine(parsed, connect_args=connect_args, **engine_kwargs)
        _configure_sqlite(engine, sqlite_busy_timeout_s)
        return engine
    raise ValueError(f"unsupported session store URL {parsed.render_as_string()!r}: use postgresql:// or sqlite:///")


#: libpq settings of every PostgreSQL store connection unless its URL (a Connection's extras) sets them.
TCP_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

#: A pooled PostgreSQL connection idle longer than this is pinged before it is used again. One used more
#: recently is trusted: a ping on every checkout was a round trip per operation, half of ingestion's.
#: Should the server have gone away meanwhile, that one call fails as StoreUnavailable (503) and SQLAlchemy
#: drops the pool's connections.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """``pool_pre_ping``, but only for connections idle longer than ``idle_s`` seconds."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        record.info["clickstream_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):
        since = record.info.get("clickstream_idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return  # brand new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as err:  # a dead connection: the pool replaces it and retries the checkout
            raise exc.DisconnectionError(f"pooled connection is gone: {err}") from err


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
