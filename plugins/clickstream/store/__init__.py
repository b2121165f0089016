"""The session store: every clickstream operation on a SQLAlchemy engine. No Airflow imports here."""

from __future__ import annotations

from clickstream.store.engine import create_store_engine, normalize_url
from clickstream.store.errors import Conflict, InvalidInput, NotFound, StoreError, StoreUnavailable
from clickstream.store.store import SessionStore, StoreConfig, now_ms, validate

__all__ = [
    "Conflict",
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
