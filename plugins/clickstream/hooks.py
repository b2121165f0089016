"""ClickstreamHook: an Airflow Connection -> a SQLAlchemy engine -> the session store."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from clickstream.store import SessionStore, StoreConfig, create_store_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from airflow.sdk import Connection

#: Store operations the hook exposes as its own public methods (same names, signatures and docs).
STORE_OPERATIONS = (
    "migrate",
    "register_session",
    "push_events",
    "ingest_bulk",
    "mark_irrelevant",
    "get_session",
    "use_for_improvement",
    "mark_sessions_for_improvement",
    "mark_batch_for_improvement",
    "claim_improvement_marks",
    "complete_improvement_mark",
    "fail_improvement_mark",
    "get_improvement_mark",
    "get_batch_sessions",
    "iter_batch_pages",
    "iter_extract_pages",
    "release_batch",
    "get_batch",
    "list_batches",
    "batch_metrics",
    "erase_user",
)


def store_config_from_airflow() -> StoreConfig:
    """:class:`StoreConfig` from the ``[clickstream]`` config section (env ``AIRFLOW__CLICKSTREAM__*``)."""
    from airflow.sdk import conf

    defaults = StoreConfig()
    return StoreConfig(**{
        name: conf.getint("clickstream", name, fallback=getattr(defaults, name))
        for name in StoreConfig.__dataclass_fields__
    })


def connection_url(conn: Connection) -> URL:
    """The store's SQLAlchemy URL for an Airflow Connection.

    ``postgres`` connections use the psycopg 3 driver (host, port, login, password, schema = database;
    extras such as ``sslmode`` become query parameters). ``sqlite`` connections name the database file
    in ``host`` (Airflow's SQLite convention) or, from a ``sqlite:////abs/path.db`` URI, in ``schema``.
    """
    from sqlalchemy.engine import URL

    # "postgresql+psycopg" (a SQLAlchemy URL pasted as the connection URI) names the same backend.
    conn_type = (conn.conn_type or "").split("+", 1)[0].replace("postgresql", "postgres")
    if conn_type == "postgres":
        extra = {k: str(v) for k, v in conn.extra_dejson.items() if isinstance(v, (str, int, float))}
        return URL.create("postgresql+psycopg", username=conn.login or None, password=conn.password or None,
                          host=conn.host or None, port=conn.port, database=conn.schema or None, query=extra)
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError(f"connection {conn.conn_id!r}: a sqlite connection needs the database file path in host")
        return URL.create("sqlite", database=path)
    raise ValueError(f"connection {conn.conn_id!r} has conn_type {conn.conn_type!r}; use postgres or sqlite")


class ClickstreamHook(BaseHook):
    """Interact with the clickstream session store (PostgreSQL or SQLite) through an Airflow Connection.

    Every public operation of :class:`clickstream.store.SessionStore` is a method of this hook with the
    same name, signature and docstring (see ``STORE_OPERATIONS``). The engine is created on first use and
    released by :meth:`close` (or by using the hook as a context manager). The hook never touches Airflow's
    metadata database.

    Subclassing: override :attr:`conn_name_attr` / :attr:`default_conn_name` to use another connection
    attribute, or :meth:`get_store_config` to source the tunables elsewhere.

    :param clickstream_conn_id: the Airflow Connection of the store (``postgres`` or ``sqlite``).
    :param engine_kwargs: extra arguments for :func:`sqlalchemy.create_engine`.
    """

    conn_name_attr = "clickstream_conn_id"
    default_conn_name = "clickstream_default"
    conn_type = "postgres"
    hook_name = "Clickstream session store"

    def __init__(self, clickstream_conn_id: str = default_conn_name, engine_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.clickstream_conn_id = clickstream_conn_id
        self.engine_kwargs = engine_kwargs or {}
        self._store: SessionStore | None = None

    @property
    def sqlalchemy_url(self) -> URL:
        return connection_url(self.get_connection(self.clickstream_conn_id))

    def get_store_config(self) -> StoreConfig:
        return store_config_from_airflow()

    def get_conn(self) -> SessionStore:
        """The :class:`SessionStore` on this hook's engine (created once per hook)."""
        if self._store is None:
            engine = create_store_engine(self.sqlalchemy_url, **self.engine_kwargs)
            self._store = SessionStore(engine, self.get_store_config())
        return self._store

    store = property(get_conn)

    def close(self) -> None:
        """Dispose of the engine's connections."""
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def __enter__(self) -> ClickstreamHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """Reach the store and report its backend (used by the Airflow UI's *Test* button)."""
        try:
            batches = self.list_batches(limit=1)
        except Exception as err:  # the UI wants the message, whatever went wrong
            return False, str(err)
        return True, f"connected to {self.store.dialect} store; {len(batches)} batch(es) visible"

    def import_history(self, path: str, format: str = "jsonl", invalid_threshold: float = 0.01,
                       max_errors: int = 100, chunk_rows: int = 5000, *, logger: Any = None) -> Any:
        """Import history files read through :class:`~airflow.sdk.ObjectStoragePath` (see
        :func:`clickstream.importing.import_history`, which does the work and returns its report).

        :param path: a file, or a folder whose files ending in the format's suffixes are imported in name
            order (``/local/path``, ``file:///...``, ``s3://conn_id@bucket/prefix/``, ...).
        :param format: ``jsonl`` or ``parquet``.
        :param invalid_threshold: largest share of invalid rows (0..1) that still loads the valid rows.
        :param max_errors: at most this many invalid rows are listed in the report.
        :param chunk_rows: rows read and staged at a time.
        :param logger: where progress goes (an operator passes its ``self.log``).
        :returns: a :class:`clickstream.importing.ImportReport`.
        """
        from airflow.sdk import ObjectStoragePath

        from clickstream import importing
        from clickstream.store import InvalidInput

        importing.check_options(format, invalid_threshold, max_errors, chunk_rows)
        root = ObjectStoragePath(path)
        if root.is_dir():
            files = sorted((p for p in root.iterdir()
                            if p.is_file() and p.name.endswith(importing.FILE_SUFFIXES[format])), key=str)
            if not files:
                raise InvalidInput.field("path", f"no {'/'.join(importing.FILE_SUFFIXES[format])} file in {path}")
        elif root.is_file():
            files = [root]
        else:
            raise InvalidInput.field("path", f"{path} does not exist")
        sources = [(str(p), (lambda p=p: p.open("rb"))) for p in files]
        return importing.import_history(self.get_conn(), sources, format, invalid_threshold=invalid_threshold,
                                        max_errors=max_errors, chunk_rows=chunk_rows, logger=logger)


def _delegate(name: str):
    target = getattr(SessionStore, name)

    @functools.wraps(target)
    def method(self: ClickstreamHook, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.get_conn(), name)(*args, **kwargs)

    return method


for _name in STORE_OPERATIONS:
    setattr(ClickstreamHook, _name, _delegate(_name))
del _name
