"""The session store: every clickstream operation, once, on a SQLAlchemy 2 engine.

No Airflow and no HTTP here. The SQL lives in ``include/sql`` (named queries, per dialect where they must
differ); the operations decide which queries run in which transaction and turn rows into models. Each
concern has its module (:mod:`~clickstream.store.sessions`, :mod:`~clickstream.store.batches`,
:mod:`~clickstream.store.metrics`, :mod:`~clickstream.store.overview`, :mod:`~clickstream.store.improvement`,
:mod:`~clickstream.store.erasure`, :mod:`~clickstream.store.retention`, :mod:`~clickstream.store.analytics`,
:mod:`~clickstream.store.labels`); :class:`SessionStore` combines them.
The locking that upholds the invariants of docs/store.md is in the SQL, where a reviewer expects it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from clickstream.store.analytics import AnalyticsOperations
from clickstream.store.batches import BatchOperations
from clickstream.store.checks import Checks
from clickstream.store.config import StoreConfig, now_ms
from clickstream.store.db import Database
from clickstream.store.engine import create_store_engine
from clickstream.store.erasure import ErasureOperations
from clickstream.store.improvement import ImprovementOperations
from clickstream.store.labels import LabelOperations
from clickstream.store.metrics import MetricsOperations
from clickstream.store.migrations import apply_migrations, migration_status
from clickstream.store.overview import OverviewOperations
from clickstream.store.retention import RetentionOperations
from clickstream.store.sessions import SessionOperations


class SessionStore(
    SessionOperations,
    BatchOperations,
    OverviewOperations,
    MetricsOperations,
    ImprovementOperations,
    ErasureOperations,
    RetentionOperations,
    AnalyticsOperations,
    LabelOperations,
):
    """The clickstream session store on PostgreSQL or SQLite.

    Every public method is one operation of docs/store.md and, unless its docstring says otherwise, runs in
    one transaction: it commits whole or changes nothing. Inputs may be the pydantic models of
    :mod:`clickstream.models` or plain mappings (validated here, so bad input raises
    :class:`~clickstream.store.InvalidInput` before anything is written).

    :param engine: a SQLAlchemy engine, best made by :func:`~clickstream.store.create_store_engine`.
    :param config: tunables; see :class:`~clickstream.store.StoreConfig`.
    :param clock: milliseconds since epoch; injectable for tests.
    """

    def __init__(self, engine: Engine, config: StoreConfig | None = None, clock: Callable[[], int] = now_ms):
        self.db = Database(engine)
        self.engine = engine
        self.dialect = self.db.dialect
        self.config = config or StoreConfig()
        self.checks = Checks(self.config)
        self.clock = clock

    @classmethod
    def from_url(cls, url: str, config: StoreConfig | None = None, **engine_kwargs: Any) -> SessionStore:
        """A store on a new engine for ``url``; call :meth:`dispose` when done."""
        return cls(create_store_engine(url, **engine_kwargs), config)

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.db.dispose()

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now (empty when up to date).

        Idempotent, and safe when two processes run it at once: PostgreSQL serialises them on an advisory
        lock, SQLite on its write lock.
        """
        return apply_migrations(self.db, self.clock)

    def migration_status(self) -> tuple[list[int], list[tuple[int, str]]]:
        """The schema migrations applied (versions) and still pending (``(version, name)``); reads only."""
        return migration_status(self.db)
