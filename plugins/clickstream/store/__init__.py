"""The session store: every clickstream operation on a SQLAlchemy engine. No Airflow imports here.

Modules, by layer (docs/architecture.md):

* :mod:`~clickstream.store.engine`, :mod:`~clickstream.store.db`, :mod:`~clickstream.store.sql`: engines,
  the connection layer (transactions, named queries, JSON, error translation) and the SQL files;
* :mod:`~clickstream.store.config`, :mod:`~clickstream.store.checks`, :mod:`~clickstream.store.rows`,
  :mod:`~clickstream.store.errors`: tunables and the page's fixed limits, input checks, row mapping, typed
  errors;
* :mod:`~clickstream.store.base` and the operations, one concern each: :mod:`~clickstream.store.sessions`
  (register, events, bulk ingest), :mod:`~clickstream.store.batches` (the batch lifecycle: open, page,
  release, batch rows, dataset), :mod:`~clickstream.store.metrics` (compute and keep batch metrics, the
  position curve, the series), :mod:`~clickstream.store.overview` (the Clickstream page's read model of
  batches), :mod:`~clickstream.store.improvement`, :mod:`~clickstream.store.erasure`,
  :mod:`~clickstream.store.retention`; combined by :class:`~clickstream.store.session_store.SessionStore`;
* :mod:`~clickstream.store.migrations`, :mod:`~clickstream.store.history_load`: schema migrations and the
  history import's load.
"""

from __future__ import annotations

from clickstream.store.checks import validate
from clickstream.store.config import StoreConfig, now_ms
from clickstream.store.engine import create_store_engine, normalize_url
from clickstream.store.errors import Conflict, InvalidInput, NotFound, StoreError, StoreUnavailable
from clickstream.store.rows import ExtractPage
from clickstream.store.session_store import SessionStore

__all__ = [
    "Conflict",
    "ExtractPage",
    "InvalidInput",
    "NotFound",
    "SessionStore",
    "StoreConfig",
    "StoreError",
    "StoreUnavailable",
    "create_store_engine",
    "normalize_url",
    "now_ms",
    "validate",
]
