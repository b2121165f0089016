"""Applies the versioned SQL migrations of ``include/sql/migrations`` and records them."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import text

from clickstream.store import sql
from clickstream.store.db import Database

log = logging.getLogger(__name__)


def _statements(script: str) -> list[str]:
    """Split a migration script on lines ending in ``;`` (our migrations hold no procedural bodies)."""
    statements: list[str] = []
    current: list[str] = []
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


def migration_status(db: Database) -> tuple[list[int], list[tuple[int, str]]]:
    """The versions applied, and the ``(version, name)`` still pending. Reads only: a store never migrated
    (no migrations table yet) has every migration pending."""
    from sqlalchemy import inspect

    from clickstream.store.db import translate_errors

    known = [(version, name) for version, name, _ in sql.migrations(db.dialect)]
    with translate_errors(db.dialect):
        has_table = inspect(db.engine).has_table("cs_schema_migrations")
    applied: set[int] = set()
    if has_table:
        with db.transaction(write=False) as conn:
            applied = set(db.run(conn, "applied_migrations").scalars())
    return sorted(applied), [(version, name) for version, name in known if version not in applied]


def apply_migrations(db: Database, clock: Callable[[], int]) -> list[int]:
    """Apply every pending migration in one transaction; returns the versions applied now."""
    applied_now = []
    with db.transaction(write=True) as conn:
        if db.has("lock_migrations"):
            db.run(conn, "lock_migrations")
        db.run(conn, "create_migrations_table")
        done = set(db.run(conn, "applied_migrations").scalars())
        for version, name, script in sql.migrations(db.dialect):
            if version in done:
                continue
            log.info("applying session-store migration %04d_%s (%s)", version, name, db.dialect)
            for statement in _statements(script):
                conn.execute(text(statement))
            db.run(conn, "record_migration", version=version, name=name, now=clock())
            applied_now.append(version)
    return applied_now
