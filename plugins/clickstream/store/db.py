"""The store's connection layer: transactions, named queries, JSON encoding and error translation.

Everything that talks to the database goes through :class:`Database`: the operations
(:mod:`clickstream.store.session_store` and its concern modules), the migrations and the history import
load. It knows nothing of sessions or batches.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Engine, TextClause, exc, text

from clickstream.store import sql
from clickstream.store.engine import WRITE_OPTION
from clickstream.store.errors import InvalidInput, StoreUnavailable

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: A named query's bind parameter (``:name``), as :func:`sqlalchemy.text` finds them (not ``::`` casts).
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


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
        self._arrow_warned = False  # whether arrow_reader logged why it has no reader
        self._names: dict[str, list[str]] = {}  # run_one's result column names, per query

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
        (no BEGIN/COMMIT round trips), skipping SQLAlchemy's execution layer and its Connection (the pool's
        raw checkout), which cost about as much client time as the statement itself. Errors are SQLAlchemy's,
        translated as for :meth:`transaction`, and a connection the driver found dead is dropped from the pool.
        SQLite: :meth:`transaction` and :meth:`run`.
        """
        if self.dialect != "postgresql":
            with self.transaction(write=True, single_statement=True) as conn:
                row = self.run(conn, query, **params).mappings().first()
            return dict(row) if row is not None else None
        import psycopg  # PostgreSQL's driver (psycopg 3)

        statement = self._driver_sql.get(query)
        if statement is None:  # the query in the driver's paramstyle (%(name)s), as SQLAlchemy compiles it
            statement = self._driver_sql[query] = str(self.clause(query).compile(dialect=self.engine.dialect))
        # The pool's checkout (and its idle ping) without a SQLAlchemy Connection around it; a failure to
        # connect is raised as SQLAlchemy raises it on its own path (then translated: StoreUnavailable).
        with translate_errors(self.dialect):
            try:
                pooled = self.engine.raw_connection()
            except psycopg.Error as err:
                raise exc.DBAPIError.instance(
                    None,
                    None,
                    err,
                    psycopg.Error,
                    connection_invalidated=self.engine.dialect.is_disconnect(cast(Any, err), None, None),
                ) from err
            try:
                driver: Any = pooled.driver_connection
                try:
                    driver.autocommit = True
                    try:
                        with driver.cursor() as cursor:
                            cursor.execute(statement, params)
                            row = cursor.fetchone() if cursor.pgresult.nfields else None
                            names = self._names.get(query) if row is not None else []
                            if names is None:  # a statement's result columns are fixed: read them once
                                names = self._names[query] = [c.name for c in cursor.description]
                    finally:
                        if not driver.closed:
                            driver.autocommit = False
                except psycopg.Error as err:
                    invalidated = self.engine.dialect.is_disconnect(cast(Any, err), driver, None)
                    if invalidated:  # dropped from the pool, as SQLAlchemy does on its own path
                        pooled.invalidate(err)
                    raise exc.DBAPIError.instance(
                        statement, params, err, psycopg.Error, connection_invalidated=invalidated
                    ) from err
            finally:
                pooled.close()  # back to the pool (or discarded, when invalidated)
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

    def arrow_reader(self) -> ArrowReader | None:
        """A reader of named queries' results as Arrow tables (:class:`ArrowReader`), on PostgreSQL through
        ADBC's libpq driver (``adbc-driver-postgresql``: ``COPY ... TO STDOUT (FORMAT binary)`` decoded
        straight into Arrow, in C++), connected with the libpq settings of the engine's own connections.

        None where there is none: on SQLite, when the driver is not installed, or when it cannot connect
        (e.g. a libpq setting of the engine's that ADBC's libpq does not know; the first time logged as a
        warning). Callers then take their row path. The caller closes the reader.
        """
        if self.dialect != "postgresql":
            return None
        try:
            import adbc_driver_postgresql  # noqa: F401  (only to know it is there)
        except ImportError as err:
            self._arrow_unavailable(f"adbc-driver-postgresql is not installed ({err})")
            return None
        conninfo = self.libpq_conninfo()
        reader: ArrowReader | None = None
        try:
            reader = ArrowReader(self, conninfo)
            reader.check_in(reader.connect())  # one connection now: a failure to connect is known here
        except Exception as err:  # any failure to connect: the row path still works
            if reader is not None:
                reader.close()
            self._arrow_unavailable(f"ADBC could not connect: {_first_line(err)}")
            return None
        return reader

    def _arrow_unavailable(self, reason: str) -> None:
        if not self._arrow_warned:
            self._arrow_warned = True
            log.warning("columnar reads unavailable, using the row path instead: %s", reason)

    def libpq_conninfo(self) -> str:
        """The libpq settings a pooled connection of the engine was opened with (URL, ``connect_args``,
        environment), those that differ from libpq's defaults, as a connection string."""
        from psycopg.conninfo import make_conninfo

        with translate_errors(self.dialect), self.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            options = {
                o.keyword.decode(): o.val.decode()
                for o in driver.pgconn.info
                if o.val is not None and o.val != o.compiled
            }
        return make_conninfo(**options)

    def is_write_collision(self, err: exc.DBAPIError) -> bool:
        """Whether a write failed on a concurrent write of the same keys, so that a retry may succeed: a unique
        violation (the other write committed after this one's reads) or a deadlock (PostgreSQL aborted this side
        of a lock cycle)."""
        from psycopg import errors as pg_errors

        return isinstance(err.orig, (pg_errors.UniqueViolation, pg_errors.DeadlockDetected))


class ArrowReader:
    """Named queries' results as Arrow tables over ADBC connections (see :meth:`Database.arrow_reader`).

    ADBC's low-level API (``adbc_driver_manager``): its DB-API module imports ``pyarrow.dataset`` and with it
    pandas, a second of CPU on a worker's first extraction. Thread-safe: each :meth:`table` call uses a
    connection of its own, opened when none is free and kept for the next call until :meth:`close`, so there
    are as many connections as calls at once. Each statement runs in autocommit: one statement, one snapshot.
    """

    def __init__(self, db: Database, conninfo: str):
        import adbc_driver_postgresql

        self.db = db
        self._database = adbc_driver_postgresql.connect(conninfo)  # ADBC's shared settings, no connection yet
        self._free: list[Any] = []
        self._open: list[Any] = []
        self._lock = threading.Lock()
        self._statements: dict[str, tuple[str, list[str]]] = {}

    def table(self, query: str, /, **params: Any) -> pa.Table:
        """The rows of the named ``query`` with bind ``params`` (ints and texts) as one Arrow table (the
        driver's types: ``text`` a string, ``bigint`` an int64, arrays lists, ...). Errors are SQLAlchemy's,
        translated as for :meth:`Database.transaction`."""
        import adbc_driver_manager as adbc
        import pyarrow as pa

        statement, names = self._statement(query)
        values = [_arrow_value(query, n, params[n]) for n in names]
        with translate_errors(self.db.dialect):
            try:
                conn = self._checkout()
                try:
                    with adbc.AdbcStatement(conn) as stmt:
                        stmt.set_sql_query(statement)
                        if values:  # one row of values: bound once (no row: the statement would not run)
                            stmt.bind(pa.RecordBatch.from_arrays(values, names=names))
                        stream, _ = stmt.execute_query()
                        return pa.RecordBatchReader.from_stream(stream).read_all()
                finally:
                    self.check_in(conn)
            except adbc.Error as err:
                raise exc.DBAPIError.instance(statement, params, err, adbc.Error) from err

    def _statement(self, query: str) -> tuple[str, list[str]]:
        """The named query with ``$1, $2, ...`` for its ``:name`` parameters, and the names in that order."""
        found = self._statements.get(query)
        if found is None:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            found = self._statements[query] = (_BIND.sub(number, self.db.queries[query]), names)
        return found

    def connect(self) -> Any:
        """A new connection (autocommit, ADBC's default), closed by :meth:`close`."""
        import adbc_driver_manager as adbc

        conn = adbc.AdbcConnection(self._database)
        with self._lock:
            self._open.append(conn)
        return conn

    def _checkout(self) -> Any:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self.connect()

    def check_in(self, conn: Any) -> None:
        with self._lock:
            self._free.append(conn)

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            conns, self._open, self._free = self._open, [], []
        for handle in [*conns, self._database]:
            try:
                handle.close()
            except Exception:  # closing a broken connection: nothing left to do
                pass


def _arrow_value(query: str, name: str, value: Any) -> pa.Array:
    """A bind parameter as a one-value Arrow array, from its bytes (``pyarrow.array`` would import pandas, a
    second of CPU the first time)."""
    import pyarrow as pa

    if isinstance(value, int) and not isinstance(value, bool):
        return pa.Array.from_buffers(pa.int64(), 1, [None, pa.py_buffer(struct.pack("<q", value))])
    if isinstance(value, str):
        data = value.encode()
        offsets = pa.py_buffer(struct.pack("<ii", 0, len(data)))
        return pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(data)])
    raise TypeError(f"{query}: parameter {name} must be an int or a str, got {type(value).__name__}")


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
