"""The store's connection layer: transactions, named queries, JSON encoding and error translation.

Everything that talks to the database goes through :class:`Database`: the operations
(:mod:`clickstream.store.session_store` and its concern modules), the migrations and the history import
load. It knows nothing of sessions or batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Engine, TextClause, exc, text

from clickstream.store import sql
from clickstream.store.engine import WRITE_OPTION
from clickstream.store.errors import InvalidInput, StoreUnavailable


def dumps(value: Any) -> str | None:
    """JSON text as the store writes it (compact, UTF-8 kept); ``None`` stays ``None`` (SQL NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(value: Any) -> Any:
    """A JSON column's value as Python: SQLite returns text, PostgreSQL's driver already decoded JSON."""
    return json.loads(value) if isinstance(value, str) else value


class Database:
    """An engine with the named queries of its dialect (``include/sql``).

    :param engine: a SQLAlchemy engine, best made by :func:`clickstream.store.create_store_engine`.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect: str = engine.dialect.name
        self.queries: dict[str, str] = sql.queries(self.dialect)
        self._clauses: dict[str, TextClause] = {}  # built once per query: text() re-parses the SQL
        self._driver_sql: dict[str, str] = {}  # run_one's statements in the driver's parameter style

    def has(self, query: str) -> bool:
        """Whether this dialect has ``query``: dialect differences are told by a query's presence
        (e.g. PostgreSQL's explicit locks, which SQLite's write lock makes unnecessary)."""
        return query in self.queries

    @contextmanager
    def transaction(self, *, write: bool, single_statement: bool = False) -> Iterator[Connection]:
        """A connection in a transaction that commits on exit (rolls back on an exception), with database
        errors translated (:func:`translate_errors`).

        :param write: a write transaction (SQLite: ``BEGIN IMMEDIATE``, so writers queue up front).
        :param single_statement: the block runs one statement; on PostgreSQL it then runs in autocommit, with
            no BEGIN and COMMIT round trips (half of ingestion's time before this).
        """
        with translate_errors(self.dialect), self.engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            if single_statement and self.dialect == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                yield conn

    def run(self, conn: Connection, query: str, /, **params: Any) -> CursorResult[Any]:
        """Execute the named ``query`` on ``conn`` with bind ``params``."""
        return conn.execute(self.clause(query), params)

    def stream(self, conn: Connection, query: str, /, fetch: int = 10_000, **params: Any) -> Iterator[Any]:
        """The rows of the named ``query`` on ``conn``, fetched ``fetch`` at a time (PostgreSQL: a server-side
        cursor), so the client never holds a large statement's whole result."""
        result = conn.execute(self.clause(query), params, execution_options={"yield_per": fetch})
        return chain.from_iterable(result.partitions(fetch))

    def run_one(self, query: str, /, **params: Any) -> dict[str, Any] | None:
        """Run the named single-statement ``query`` as a write transaction of its own; its first row as a dict
        (None: no row). The live ingestion's path (a registration, a push of events), so it is lean: on
        PostgreSQL the statement goes straight to the psycopg connection under a pooled one, in autocommit
        (no BEGIN/COMMIT round trips), skipping SQLAlchemy's execution layer, which cost about as much client
        time as the statement itself. Errors are SQLAlchemy's, translated as for :meth:`transaction`, and a
        connection the driver found dead is dropped from the pool. SQLite: :meth:`transaction` and :meth:`run`.
        """
        if self.dialect != "postgresql":
            with self.transaction(write=True, single_statement=True) as conn:
                row = self.run(conn, query, **params).mappings().first()
            return dict(row) if row is not None else None
        import psycopg  # PostgreSQL's driver (psycopg 3)

        statement = self._driver_sql.get(query)
        if statement is None:  # the query in the driver's paramstyle (%(name)s), as SQLAlchemy compiles it
            statement = self._driver_sql[query] = str(self.clause(query).compile(dialect=self.engine.dialect))
        # engine.connect(): the pool's checkout (and its idle ping), a failure to connect raised as SQLAlchemy's
        with translate_errors(self.dialect), self.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            try:
                driver.autocommit = True
                try:
                    with driver.cursor() as cursor:
                        cursor.execute(statement, params)
                        row = cursor.fetchone() if cursor.description is not None else None
                        names = [c.name for c in cursor.description] if row is not None else []
                finally:
                    if not driver.closed:
                        driver.autocommit = False
            except psycopg.Error as err:
                invalidated = self.engine.dialect.is_disconnect(cast(Any, err), driver, None)
                if invalidated:  # dropped from the pool, as SQLAlchemy does on its own path
                    conn.invalidate(err)
                raise exc.DBAPIError.instance(
                    statement, params, err, psycopg.Error, connection_invalidated=invalidated
                ) from err
        return dict(zip(names, row, strict=True)) if row is not None else None

    def clause(self, query: str) -> TextClause:
        """The named ``query`` as a :func:`sqlalchemy.text` clause (built once)."""
        clause = self._clauses.get(query)
        if clause is None:
            clause = self._clauses[query] = text(self.queries[query])
        return clause

    def dispose(self) -> None:
        self.engine.dispose()

    def connect(self) -> Connection:
        """A connection outside any transaction, for work that runs several transactions (or one long one) on
        the same connection: the history import's load, whose temp tables and load transaction live on it. The
        caller begins its transactions and closes it; a failure to connect is translated (:func:`translate_errors`).
        """
        with translate_errors(self.dialect):
            return self.engine.connect()

    def copy_rows(self, conn: Connection, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """``COPY ... FROM STDIN`` (the named ``query``, PostgreSQL's) of ``rows`` (tuples in the query's column
        order), through the psycopg 3 connection under ``conn``, in ``conn``'s transaction. The driver's errors
        are raised as SQLAlchemy's (``exc.DBAPIError`` subclasses), as for every other statement."""
        import psycopg  # COPY is PostgreSQL's: psycopg 3 is its driver

        sql_text = self.queries[query]
        driver: Any = conn.connection.driver_connection
        try:
            with driver.cursor() as cursor, cursor.copy(sql_text) as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
        except psycopg.Error as err:
            raise exc.DBAPIError.instance(sql_text, None, err, psycopg.Error) from err

    def is_write_collision(self, err: exc.DBAPIError) -> bool:
        """Whether a write failed on a concurrent write of the same keys, so that a retry may succeed: a unique
        violation (the other write committed after this one's reads) or a deadlock (PostgreSQL aborted this side
        of a lock cycle)."""
        from psycopg import errors as pg_errors

        return isinstance(err.orig, (pg_errors.UniqueViolation, pg_errors.DeadlockDetected))


@contextmanager
def translate_errors(dialect: str) -> Iterator[None]:
    """Database errors as store errors, for every path that talks to the database.

    A value the database cannot store (PostgreSQL: a NUL character in text or JSON, a number out of BIGINT
    range) is bad input, not a server fault: :class:`InvalidInput`. Connection failures, lock time-outs,
    deadlocks and an exhausted connection pool (no free pooled connection within the pool's timeout) are
    outages: :class:`StoreUnavailable`. Anything else propagates unchanged.
    """
    try:
        yield
    except exc.TimeoutError as err:  # the engine's pool had no free connection in time
        raise StoreUnavailable("session store busy: no free database connection; retry later") from err
    except exc.DataError as err:
        raise InvalidInput(f"invalid value for the {dialect} store: {_first_line(err)}") from err
    except exc.OperationalError as err:
        if _is_unavailable(err):
            raise StoreUnavailable(f"session store unavailable: {_first_line(err)}") from err
        raise


def _is_unavailable(err: exc.OperationalError) -> bool:
    """Connection failures, lock time-outs and deadlocks (PostgreSQL aborts one of the transactions in a lock
    cycle: a retry succeeds) are outages (503); other operational errors are bugs."""
    if err.connection_invalidated:
        return True
    message = str(err.orig).lower()
    return any(
        s in message
        for s in (
            "connection",
            "could not connect",
            "database is locked",
            "timeout",
            "server closed",
            "terminating",
            "deadlock detected",
        )
    )


def _first_line(err: BaseException) -> str:
    return str(getattr(err, "orig", err)).strip().splitlines()[0]
