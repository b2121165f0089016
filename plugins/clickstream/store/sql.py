"""Finds and loads the SQL files: migrations and named queries, per dialect.

The files live in ``include/sql`` of a checkout; a wheel carries the same files as ``clickstream/sql``.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.(\w+)\.sql$")
#: Named-query files besides ``queries*.sql``: ``<stem>.sql`` (shared) and ``<stem>.<dialect>.sql``.
_EXTRA_QUERY_FILES = ("import",)


@cache
def sql_dir() -> Path:
    """The folder holding ``queries.sql`` and ``migrations/``: the wheel's copy, else the checkout's."""
    here = Path(__file__).resolve().parent.parent  # .../clickstream
    for candidate in (here / "sql", here.parent.parent / "include" / "sql"):
        if (candidate / "queries.sql").is_file():
            return candidate
    raise FileNotFoundError(f"clickstream SQL files not found next to {here} nor in the checkout's include/sql")


def _parse(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def queries(dialect: str) -> dict[str, str]:
    """All named queries for ``dialect`` ("postgresql" or "sqlite"), fragments substituted."""
    folder = sql_dir()
    merged = _parse((folder / "queries.sql").read_text())
    dialect_file = folder / f"queries.{dialect}.sql"
    if not dialect_file.is_file():
        raise ValueError(f"unsupported database dialect {dialect!r}: use PostgreSQL or SQLite")
    merged.update(_parse(dialect_file.read_text()))
    # Query files of one concern (e.g. import.<dialect>.sql), after the main ones; names must be new.
    for stem in _EXTRA_QUERY_FILES:
        for path in (folder / f"{stem}.sql", folder / f"{stem}.{dialect}.sql"):
            if path.is_file():
                merged.update(_parse(path.read_text()))
    fragments = {name: body for name, body in merged.items() if name.startswith("__")}
    resolved = {}
    for name, body in merged.items():
        if name in fragments:
            continue
        for fragment, text in fragments.items():
            body = body.replace(fragment, text)
        resolved[name] = body
    return resolved


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration for ``dialect``, in version order."""
    found = []
    for path in (sql_dir() / "migrations").iterdir():
        match = _MIGRATION.match(path.name)
        if match and match.group(3) == dialect:
            found.append((int(match.group(1)), match.group(2), path.read_text()))
    return sorted(found)
