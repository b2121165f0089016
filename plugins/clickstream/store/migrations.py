"""Applies the versioned SQL migrations of ``include/sql/migrations`` and records them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import text

from clickstream.store import sql

if TYPE_CHECKING:
    from clickstream.store.store import SessionStore

log = logging.getLogger(__name__)


def _statements(script: str) -> list[str]:
    """Split a migration script on lines ending in ``;`` (our migrations hold no procedural bodies)."""
    statements, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--") and not current:
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def apply_migrations(store: SessionStore) -> list[int]:
    """Apply every pending migration in one transaction; returns the versions applied now."""
    applied_now = []
    with store._tx(write=True) as conn:
        if "lock_migrations" in store._q:
            store._run(conn, "lock_migrations")
        store._run(conn, "create_migrations_table")
        done = set(store._run(conn, "applied_migrations").scalars())
        for version, name, script in sql.migrations(store.dialect):
            if version in done:
                continue
            log.info("applying session-store migration %04d_%s (%s)", version, name, store.dialect)
            for statement in _statements(script):
                conn.execute(text(statement))
            store._run(conn, "record_migration", version=version, name=name, now=store.clock())
            applied_now.append(version)
    return applied_now
