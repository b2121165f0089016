"""ClickstreamHook: an Airflow Connection -> a SQLAlchemy engine -> the session store."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from clickstream import models
from clickstream.store import ExtractPage, SessionStore, StoreConfig, create_store_engine

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from sqlalchemy.engine import URL

    from clickstream.history import ImportReport
    from clickstream.store.fastrows import JsonText
    from clickstream.store.labels import LabelSessionsPage, LabelsFit

log = logging.getLogger(__name__)


def store_config_from_airflow() -> StoreConfig:
    """:class:`StoreConfig` from the ``[clickstream]`` config section (env ``AIRFLOW__CLICKSTREAM__*``)."""
    from airflow.sdk import conf

    defaults = StoreConfig()
    return StoreConfig(
        **{  # ints, floats (max_ips_weight), and the text keys (label_event_types)
            name: _getter(conf, getattr(defaults, name))("clickstream", name, fallback=getattr(defaults, name))
            for name in StoreConfig.__dataclass_fields__
        }
    )


def _getter(conf: Any, default: object) -> Any:
    """The ``conf`` reader of a key whose default is ``default``: text, float or integer."""
    if isinstance(default, str):
        return conf.get
    return conf.getfloat if isinstance(default, float) else conf.getint


#: libpq connection parameters a Connection's extras may set (host, port, user, password and database come
#: from the Connection's own fields). Other extras, e.g. PostgresHook's ``cursor`` or ``iam``, are ignored.
LIBPQ_EXTRAS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "sslcertmode",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "requirepeer",
        "require_auth",
        "channel_binding",
        "gssencmode",
        "gsslib",
        "gssdelegation",
        "krbsrvname",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "target_session_attrs",
        "load_balance_hosts",
        "hostaddr",
        "passfile",
        "service",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
    }
)

#: Connection types whose Connection is a PostgreSQL store (``clickstream`` is this package's own type).
POSTGRES_CONN_TYPES = ("clickstream", "postgres")


def libpq_params(conn: Connection) -> dict[str, str]:
    """The libpq parameters among a Connection's extras (:data:`LIBPQ_EXTRAS`), as strings.

    Keys the Airflow 2 form wrote with a prefix (``extra__clickstream__sslmode``) count as the plain key.
    Empty values, lists and objects are dropped, booleans become ``1`` / ``0``; other keys are ignored and
    logged once per call at debug level, so a PostgresHook's extras on the same Connection do no harm.
    """
    params: dict[str, str] = {}
    ignored = []
    for key, value in conn.extra_dejson.items():
        name = key.split("__", 2)[2] if key.startswith("extra__") and key.count("__") >= 2 else key
        if name not in LIBPQ_EXTRAS:
            ignored.append(key)
        elif isinstance(value, bool):
            params[name] = "1" if value else "0"
        elif isinstance(value, (str, int, float)) and str(value).strip():
            params[name] = str(value).strip()
    if ignored:
        log.debug("connection %r: extras not passed to libpq: %s", conn.conn_id, ", ".join(sorted(ignored)))
    return params


def connection_url(conn: Connection) -> URL:
    """The store's SQLAlchemy URL for an Airflow Connection.

    ``clickstream`` and ``postgres`` connections are PostgreSQL, through the psycopg 3 driver: host, port,
    login, password, schema = database, and the libpq parameters among the extras (:func:`libpq_params`:
    ``sslmode``, ``sslrootcert``, ``connect_timeout``, ``keepalives*``, ...) as query parameters.
    ``sqlite`` connections name the database file in ``host`` (Airflow's SQLite convention) or, from a
    ``sqlite:////abs/path.db`` URI, in ``schema``.
    """
    from sqlalchemy.engine import URL

    # "postgresql+psycopg" (a SQLAlchemy URL pasted as the connection URI) names the same backend.
    conn_type = (conn.conn_type or "").split("+", 1)[0].replace("postgresql", "postgres")
    if conn_type in POSTGRES_CONN_TYPES:
        return URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port,
            database=conn.schema or None,
            query=libpq_params(conn),
        )
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError(f"connection {conn.conn_id!r}: a sqlite connection needs the database file path in host")
        return URL.create("sqlite", database=path)
    raise ValueError(
        f"connection {conn.conn_id!r} has conn_type {conn.conn_type!r}; use clickstream or postgres (PostgreSQL), "
        "or sqlite"
    )


def _versions(versions: Sequence[int]) -> str:
    return ", ".join(f"{v:04d}" for v in versions) or "none"


class ClickstreamHook(BaseHook):
    """Interact with the clickstream session store (PostgreSQL or SQLite) through an Airflow Connection.

    Every public operation of :class:`clickstream.store.SessionStore` is a method of this hook with the
    same name and signature, delegating to the store (a test keeps the two lists equal). The engine is
    created on first use and
    released by :meth:`close` (or by using the hook as a context manager). The hook never touches Airflow's
    metadata database.

    Subclassing: override :attr:`conn_name_attr` / :attr:`default_conn_name` to use another connection
    attribute, or :meth:`get_store_config` to source the tunables elsewhere.

    :param clickstream_conn_id: the Airflow Connection of the store: type ``clickstream`` or ``postgres``
        (PostgreSQL, e.g. ``clickstream://user:password@host:5432/database``) or ``sqlite``.
    :param engine_kwargs: extra arguments for :func:`sqlalchemy.create_engine`.
    """

    conn_name_attr = "clickstream_conn_id"
    default_conn_name = "clickstream_default"
    #: The connection type this package registers (``clickstream/provider.py``); its Connections are the
    #: PostgreSQL store. ``postgres`` and ``sqlite`` Connections work as well.
    conn_type = "clickstream"
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
        """Connect to the store and check that its schema is up to date: the Airflow UI's *Test* button and
        ``airflow connections test`` (when ``[core] test_connection`` is enabled) call it.

        :returns: ``(True, message)`` naming the backend and the migrations applied; ``(False, reason)`` when
            the store cannot be reached or read, or when migrations are pending (named with their versions):
            the operators need them, so the store is not ready yet. ``migrate()`` applies them, and so does
            the API server when it starts (unless ``[clickstream] api_migrate`` is False).
        """
        try:
            store = self.get_conn()
            applied, pending = store.migration_status()
        except Exception as err:  # the UI wants the message, whatever went wrong
            return False, (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = f"the {store.dialect} store"
        if not pending:
            return True, f"Connected to {where}; its schema is up to date (migrations {_versions(applied)})."
        names = ", ".join(f"{version:04d}_{name}" for version, name in pending)
        state = f"migrations {_versions(applied)} applied" if applied else "no migration applied yet"
        return False, (
            f"Connected to {where}, but its schema is not up to date: {state}, {len(pending)} pending "
            f"({names}). Apply them with ClickstreamHook({self.clickstream_conn_id!r}).migrate(); the API server "
            "applies them when it starts, unless [clickstream] api_migrate is False."
        )

    # ---------------------------------------------------------------------------------------- schema

    def migrate(self) -> list[int]:
        """Apply pending schema migrations; the versions applied now.

        Delegates to :meth:`clickstream.store.SessionStore.migrate`.
        """
        return self.get_conn().migrate()

    def migration_status(self) -> tuple[list[int], list[tuple[int, str]]]:
        """The schema migrations applied and still pending (reads only).

        Delegates to :meth:`clickstream.store.SessionStore.migration_status`.
        """
        return self.get_conn().migration_status()

    # --------------------------------------------------------------------------- sessions and events

    def register_session(
        self,
        session: models.SessionIn | Mapping[str, Any],
        *,
        check_window: bool = True,
    ) -> models.RegisterResult:
        """Register a session in the collecting batch.

        Delegates to :meth:`clickstream.store.SessionStore.register_session`.
        """
        return self.get_conn().register_session(session, check_window=check_window)

    def push_events(
        self,
        session_id: str,
        events: Sequence[models.EventIn | Mapping[str, Any]],
        *,
        check_window: bool = True,
    ) -> models.PushEventsResult:
        """Store events of a session (registered or not yet).

        Delegates to :meth:`clickstream.store.SessionStore.push_events`.
        """
        return self.get_conn().push_events(session_id, events, check_window=check_window)

    def ingest_bulk(
        self,
        sessions: Sequence[models.SessionIn | Mapping[str, Any] | JsonText] = (),
        events: Sequence[models.BulkEventIn | Mapping[str, Any] | JsonText] = (),
        *,
        check_window: bool = True,
    ) -> models.BulkResult:
        """Register many sessions and store many events; every item accounted for.

        Delegates to :meth:`clickstream.store.SessionStore.ingest_bulk`.
        """
        return self.get_conn().ingest_bulk(sessions, events, check_window=check_window)

    def mark_irrelevant(self, session_id: str) -> models.IrrelevantResult:
        """Flag a session as irrelevant.

        Delegates to :meth:`clickstream.store.SessionStore.mark_irrelevant`.
        """
        return self.get_conn().mark_irrelevant(session_id)

    def get_session(self, session_id: str, events_limit: int | None = None) -> models.SessionOut:
        """A session with its events, earliest first.

        Delegates to :meth:`clickstream.store.SessionStore.get_session`.
        """
        return self.get_conn().get_session(session_id, events_limit)

    # ----------------------------------------------------------------------------- improvement queue

    def use_for_improvement(self, session_id: str) -> models.UseForImprovementResult:
        """Queue a session for model improvement if it is eligible.

        Delegates to :meth:`clickstream.store.SessionStore.use_for_improvement`.
        """
        return self.get_conn().use_for_improvement(session_id)

    def mark_sessions_for_improvement(self, session_ids: Sequence[str]) -> tuple[models.MarkCounts, list]:
        """``use_for_improvement`` for each id; unknown ids counted.

        Delegates to :meth:`clickstream.store.SessionStore.mark_sessions_for_improvement`.
        """
        return self.get_conn().mark_sessions_for_improvement(session_ids)

    def mark_batch_for_improvement(self, batch_id: str) -> models.MarkCounts:
        """Mark every eligible session of a batch.

        Delegates to :meth:`clickstream.store.SessionStore.mark_batch_for_improvement`.
        """
        return self.get_conn().mark_batch_for_improvement(batch_id)

    def claim_improvement_marks(self, limit: int = 10) -> list[models.ImprovementMark]:
        """Hand pending improvement marks to a worker.

        Delegates to :meth:`clickstream.store.SessionStore.claim_improvement_marks`.
        """
        return self.get_conn().claim_improvement_marks(limit)

    def complete_improvement_mark(self, session_id: str, attempt: int | None = None) -> models.ImprovementMark:
        """A claimed improvement mark is done.

        Delegates to :meth:`clickstream.store.SessionStore.complete_improvement_mark`.
        """
        return self.get_conn().complete_improvement_mark(session_id, attempt)

    def fail_improvement_mark(
        self,
        session_id: str,
        error: str,
        attempt: int | None = None,
    ) -> models.ImprovementMark:
        """A claimed improvement mark failed.

        Delegates to :meth:`clickstream.store.SessionStore.fail_improvement_mark`.
        """
        return self.get_conn().fail_improvement_mark(session_id, error, attempt)

    def get_improvement_mark(self, session_id: str) -> models.ImprovementMark:
        """The improvement mark of a session.

        Delegates to :meth:`clickstream.store.SessionStore.get_improvement_mark`.
        """
        return self.get_conn().get_improvement_mark(session_id)

    # --------------------------------------------------------------------------------------- batches

    def get_batch_sessions(
        self,
        batch_id: str,
        after_number: int = 0,
        limit: int = 10,
        events_limit: int = 100,
    ) -> models.BatchSessionsPage:
        """One keyset page of a batch.

        Delegates to :meth:`clickstream.store.SessionStore.get_batch_sessions`.
        """
        return self.get_conn().get_batch_sessions(batch_id, after_number, limit, events_limit)

    def get_batch_sessions_json(
        self,
        batch_id: str,
        after_number: int = 0,
        limit: int = 10,
        events_limit: int = 100,
    ) -> bytes:
        """One keyset page of a batch as the JSON document ``GET /batch/sessions`` answers (UTF-8 bytes).

        Delegates to :meth:`clickstream.store.SessionStore.get_batch_sessions_json`.
        """
        return self.get_conn().get_batch_sessions_json(batch_id, after_number, limit, events_limit)

    def iter_batch_pages(
        self,
        batch_id: str,
        *,
        page_size: int = 1000,
        after_number: int = 0,
        until_number: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every session of a batch, page by page, as plain dicts.

        Delegates to :meth:`clickstream.store.SessionStore.iter_batch_pages`.
        """
        return self.get_conn().iter_batch_pages(
            batch_id, page_size=page_size, after_number=after_number, until_number=until_number
        )

    def iter_extract_pages(
        self,
        batch_id: str,
        *,
        page_size: int = 1000,
        after_number: int = 0,
        until_number: int | None = None,
        columns: bool = False,
    ) -> Iterator[ExtractPage]:
        """Every session of a batch, page by page, in the dataset's layout (``columns``: as Arrow columns
        where the store can, PostgreSQL with ADBC; else JSON lines).

        Delegates to :meth:`clickstream.store.SessionStore.iter_extract_pages`.
        """
        return self.get_conn().iter_extract_pages(
            batch_id, page_size=page_size, after_number=after_number, until_number=until_number, columns=columns
        )

    def release_batch(self, release_id: str) -> models.ReleaseResult:
        """Release the collecting batch under an idempotent ``release_id``.

        Delegates to :meth:`clickstream.store.SessionStore.release_batch`.
        """
        return self.get_conn().release_batch(release_id)

    def get_batch(self, batch_id: str) -> models.BatchInfo:
        """The batch's own row: status, release, and the count and range of its session numbers (the page's
        view, with counts, metrics and dataset, is :meth:`get_batch_summary`).

        Delegates to :meth:`clickstream.store.SessionStore.get_batch`.
        """
        return self.get_conn().get_batch(batch_id)

    def list_batches(self, status: str | None = None, limit: int = 100) -> list[models.BatchInfo]:
        """Batch rows, newest first, optionally of one status (the page's keyset-paged list, with counts,
        metrics and dataset, is :meth:`list_batches_page`).

        Delegates to :meth:`clickstream.store.SessionStore.list_batches`.
        """
        return self.get_conn().list_batches(status, limit)

    def batch_metrics(self, batch_id: str) -> models.BatchMetrics:
        """Search-quality metrics of a batch.

        Delegates to :meth:`clickstream.store.SessionStore.batch_metrics`.
        """
        return self.get_conn().batch_metrics(batch_id)

    def compute_missing_metrics(self, limit: int = 10) -> models.MetricsBackfill:
        """Compute and keep the metrics of released batches that have none kept, newest first.

        Delegates to :meth:`clickstream.store.SessionStore.compute_missing_metrics`.
        """
        return self.get_conn().compute_missing_metrics(limit)

    def list_batches_page(
        self, limit: int = 20, before: str | None = None, release_id: str | None = None
    ) -> models.BatchList:
        """Batches newest first, keyset-paged, with their counts, kept metrics and dataset.

        Delegates to :meth:`clickstream.store.SessionStore.list_batches_page`.
        """
        return self.get_conn().list_batches_page(limit, before, release_id)

    def get_batch_summary(self, batch_id: str) -> models.BatchSummary:
        """One batch as :meth:`list_batches_page` shows it: counts, kept metrics, dataset (the plain batch row
        is :meth:`get_batch`).

        Delegates to :meth:`clickstream.store.SessionStore.get_batch_summary`.
        """
        return self.get_conn().get_batch_summary(batch_id)

    def batch_positions(self, batch_id: str, max_position: int = 20) -> models.BatchPositions:
        """Click-through rate by result position.

        Delegates to :meth:`clickstream.store.SessionStore.batch_positions`.
        """
        return self.get_conn().batch_positions(batch_id, max_position)

    def metrics_series(self, limit: int = 100) -> models.MetricsSeries:
        """The kept metrics of the last released batches, oldest first.

        Delegates to :meth:`clickstream.store.SessionStore.metrics_series`.
        """
        return self.get_conn().metrics_series(limit)

    def record_dataset(self, batch_id: str, manifest_path: str) -> None:
        """Record the dataset manifest (path or URI) of a released batch.

        Delegates to :meth:`clickstream.store.SessionStore.record_dataset`.
        """
        return self.get_conn().record_dataset(batch_id, manifest_path)

    # ------------------------------------------------------------------------------------- retention

    def list_purgeable_batches(self, released_before: int, limit: int = 1000) -> list[models.BatchInfo]:
        """Released batches released before ``released_before`` (ms), oldest first.

        Delegates to :meth:`clickstream.store.SessionStore.list_purgeable_batches`.
        """
        return self.get_conn().list_purgeable_batches(released_before, limit)

    def purge_batch(self, batch_id: str, *, chunk_sessions: int = 1000, duty_cycle: float = 0.5) -> models.PurgeResult:
        """Purge a released batch with its sessions, events and marks, chunk by chunk.

        Delegates to :meth:`clickstream.store.SessionStore.purge_batch`.
        """
        return self.get_conn().purge_batch(batch_id, chunk_sessions=chunk_sessions, duty_cycle=duty_cycle)

    # --------------------------------------------------------------------------------------- erasure

    def erase_user(self, user_id: str) -> models.EraseResult:
        """Remove every session, event and improvement mark of a user.

        Delegates to :meth:`clickstream.store.SessionStore.erase_user`.
        """
        return self.get_conn().erase_user(user_id)

    # -------------------------------------------------------------------------------- history import

    def import_history(
        self,
        path: str,
        format: str = "jsonl",
        invalid_threshold: float = 0.01,
        max_errors: int = 100,
        chunk_rows: int = 5000,
        *,
        logger: Any = None,
    ) -> ImportReport:
        """Import history files read through :class:`~airflow.sdk.ObjectStoragePath`, all or nothing.

        Delegates to :func:`clickstream.history.import_path`, which does the work and returns its report.

        :param path: a file, or a folder whose files ending in the format's suffixes are imported in name
            order (``/local/path``, ``file:///...``, ``s3://conn_id@bucket/prefix/``, ...).
        :param format: ``jsonl`` or ``parquet``.
        :param invalid_threshold: largest share of invalid rows (0..1) that still loads the valid rows.
        :param max_errors: at most this many invalid rows are listed in the report.
        :param chunk_rows: rows read, validated and loaded at a time (bounds memory).
        :param logger: where progress goes (an operator passes its ``self.log``).
        """
        from airflow.sdk import ObjectStoragePath

        from clickstream.history import import_path

        return import_path(
            self.get_conn(),
            path,
            format,
            invalid_threshold,
            max_errors,
            chunk_rows,
            logger=logger,
            open_uri=ObjectStoragePath,
        )

    # ------------------------------------------------------------------------------- search analytics

    def compute_batch_analytics(self, batch_id: str) -> models.AnalyticsComputed:
        """Compute and keep the search analytics of a released batch.

        Delegates to :meth:`clickstream.store.SessionStore.compute_batch_analytics`.
        """
        return self.get_conn().compute_batch_analytics(batch_id)

    def metrics_step(self, batch_id: str) -> models.MetricsStep:
        """The metrics step: a batch's metrics and, for a released batch, its search analytics, from one pass.

        Delegates to :meth:`clickstream.store.SessionStore.metrics_step`.
        """
        return self.get_conn().metrics_step(batch_id)

    def compute_missing_analytics(self, limit: int = 10) -> models.AnalyticsBackfill:
        """Compute and keep the analytics of released batches that have none kept, newest first.

        Delegates to :meth:`clickstream.store.SessionStore.compute_missing_analytics`.
        """
        return self.get_conn().compute_missing_analytics(limit)

    def top_searches(
        self,
        order_by: str = "count",
        direction: str = "desc",
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.SearchesPage:
        """The queries of the selected released batches, merged and ordered, a page at a time.

        Delegates to :meth:`clickstream.store.SessionStore.top_searches`.
        """
        return self.get_conn().top_searches(
            order_by, direction, limit, after, batch_id=batch_id, from_ms=from_ms, to_ms=to_ms, last=last
        )

    def searches_without_results(
        self,
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
        order_by: str = "no_result_sessions",
        direction: str = "desc",
    ) -> models.SearchesPage:
        """The queries with sessions without results, most such sessions first.

        Delegates to :meth:`clickstream.store.SessionStore.searches_without_results`.
        """
        return self.get_conn().searches_without_results(
            limit,
            after,
            batch_id=batch_id,
            from_ms=from_ms,
            to_ms=to_ms,
            last=last,
            order_by=order_by,
            direction=direction,
        )

    def searches_without_clicks(
        self,
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
        order_by: str = "no_click_sessions",
        direction: str = "desc",
    ) -> models.SearchesPage:
        """The queries with sessions without a click, most such sessions first.

        Delegates to :meth:`clickstream.store.SessionStore.searches_without_clicks`.
        """
        return self.get_conn().searches_without_clicks(
            limit,
            after,
            batch_id=batch_id,
            from_ms=from_ms,
            to_ms=to_ms,
            last=last,
            order_by=order_by,
            direction=direction,
        )

    def top_hits(
        self,
        order_by: str = "impressions",
        direction: str = "desc",
        limit: int = 100,
        after: str | None = None,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.HitsPage:
        """The objects shown in the selected released batches, merged and ordered, a page at a time.

        Delegates to :meth:`clickstream.store.SessionStore.top_hits`.
        """
        return self.get_conn().top_hits(
            order_by, direction, limit, after, batch_id=batch_id, from_ms=from_ms, to_ms=to_ms, last=last
        )

    def query_analytics(
        self,
        query: str,
        *,
        batch_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        last: int | None = None,
    ) -> models.QueryAnalytics:
        """One normalized query over the selected released batches.

        Delegates to :meth:`clickstream.store.SessionStore.query_analytics`.
        """
        return self.get_conn().query_analytics(query, batch_id=batch_id, from_ms=from_ms, to_ms=to_ms, last=last)

    # ------------------------------------------------------------------ training-signal labels (issue 22)

    def fit_batch_labels(self, batch_id: str) -> LabelsFit:
        """Fit the click model on a released batch and keep its curve and judgments.

        Delegates to :meth:`clickstream.store.SessionStore.fit_batch_labels`.
        """
        return self.get_conn().fit_batch_labels(batch_id)

    def iter_label_sessions(
        self, batch_id: str, *, page_size: int = 1000, after_number: int = 0, until_number: int | None = None
    ) -> Iterator[LabelSessionsPage]:
        """The keyword, non-irrelevant sessions of a batch with their results and label clicks, page by page.

        Delegates to :meth:`clickstream.store.SessionStore.iter_label_sessions`.
        """
        return self.get_conn().iter_label_sessions(
            batch_id, page_size=page_size, after_number=after_number, until_number=until_number
        )

    def batch_propensities(self, batch_id: str) -> models.BatchPropensities:
        """The kept examination curve of a released batch.

        Delegates to :meth:`clickstream.store.SessionStore.batch_propensities`.
        """
        return self.get_conn().batch_propensities(batch_id)

    def batch_judgments(
        self, batch_id: str, query: str | None = None, limit: int = 100, after: str | None = None
    ) -> models.JudgmentsPage:
        """A keyset page of the kept judgments of a released batch.

        Delegates to :meth:`clickstream.store.SessionStore.batch_judgments`.
        """
        return self.get_conn().batch_judgments(batch_id, query, limit, after)
