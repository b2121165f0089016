"""The named-query files of ``include/sql`` (``queries*.sql``, ``import*.sql``), checked as text.

Every ``-- name:`` has a one-line description, no name is defined twice in one dialect's set of files (the
loader would silently let the later one win), every query the store's Python code names exists, every
fragment a query uses is defined, and no query uses a ``::`` cast. No database is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from clickstream.store import sql

#: The loader's ``-- name:`` line (``clickstream.store.sql._NAME``), matched one line at a time.
NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$")
#: Stems of the named-query files, in load order: ``<stem>.sql`` (shared), then ``<stem>.<dialect>.sql``.
STEMS = ("queries", "import")
#: Names a later file of a dialect's set may redefine on purpose: ``{name: {file that redefines it}}``.
#: None today: a query that differs per dialect lives in each dialect file, never in ``queries.sql``.
ALLOWED_OVERRIDES: dict[str, set[str]] = {}
#: Where the Python code names a query: ``db.run(conn, "x"``, ``db.has("x")``, ``db.clause("x")``,
#: ``self._run("x"`` / ``self._copy("x"`` (history_load) and ``self._finish_mark("x"`` (improvement).
PY_REFERENCE = re.compile(
    r"""(?:\bdb\.run\(\s*conn\s*,|\bdb\.has\(|\bdb\.clause\(|\bself\._run\(|\bself\._copy\(|\bself\._finish_mark\()"""
    r"""\s*["'](\w+)["']"""
)
#: ``for query in ("a", "b"): self._run(query)`` (history_load's staging-table set-up).
PY_QUERY_LOOP = re.compile(r"\bfor\s+query\s+in\s+\(([^)]*)\)")
FRAGMENT = re.compile(r"__[A-Z][A-Z0-9_]*__")

SQL_DIR = sql.sql_dir()
STORE_DIR = Path(sql.__file__).resolve().parent
DIALECTS = sorted(p.name.split(".")[1] for p in SQL_DIR.glob("queries.*.sql"))
SQL_FILES = sorted(p.name for p in SQL_DIR.glob("*.sql"))


@dataclass(frozen=True)
class Definition:
    file: str
    name: str
    line: int  #: 1-based line of the ``-- name:`` line
    lines: tuple[str, ...]  #: the raw lines after it, up to the next ``-- name:`` line


def definitions(file: str) -> list[Definition]:
    """Every named query of ``file``, in file order, from the raw text (comments kept)."""
    lines = (SQL_DIR / file).read_text().splitlines()
    starts = [(i, m.group(1)) for i, line in enumerate(lines) if (m := NAME_LINE.match(line))]
    ends = [i for i, _ in starts[1:]] + [len(lines)] if starts else []
    return [
        Definition(file, name, i + 1, tuple(lines[i + 1 : end])) for (i, name), end in zip(starts, ends, strict=True)
    ]


def dialect_files(dialect: str) -> list[str]:
    """The files of ``dialect``'s set, in the order :func:`clickstream.store.sql.queries` loads them."""
    return [f for stem in STEMS for f in (f"{stem}.sql", f"{stem}.{dialect}.sql") if (SQL_DIR / f).is_file()]


def test_every_sql_file_is_known():
    assert DIALECTS == ["postgresql", "sqlite"], f"dialect files queries.<dialect>.sql in {SQL_DIR}: {DIALECTS}"
    known = {f for d in DIALECTS for f in dialect_files(d)}
    for file in SQL_FILES:
        assert file in known, (
            f"{file}: not loaded by clickstream.store.sql (known: {sorted(known)}); "
            "add its stem to sql._EXTRA_QUERY_FILES and to STEMS here"
        )
        assert definitions(file), f"{file}: holds no '-- name:' query"


@pytest.mark.parametrize("file", SQL_FILES)
def test_every_query_has_a_description(file):
    for d in definitions(file):
        first = d.lines[0] if d.lines else ""
        text = first.strip().removeprefix("--").strip()
        assert first.startswith("--") and text and not NAME_LINE.match(first), (
            f"{file}:{d.line}: query {d.name!r} has no description: the line right after '-- name: {d.name}' "
            f"must be a comment saying what the query does or returns (found {first!r})"
        )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_name_defined_twice_in_a_dialect(dialect):
    first: dict[str, Definition] = {}
    overridden: set[tuple[str, str]] = set()
    for file in dialect_files(dialect):
        for d in definitions(file):
            if d.name not in first:
                first[d.name] = d
                continue
            earlier = first[d.name]
            assert file != earlier.file and file in ALLOWED_OVERRIDES.get(d.name, set()), (
                f"{file}:{d.line}: query {d.name!r} is already defined in {earlier.file}:{earlier.line} "
                f"({dialect}): the later definition silently wins. Rename one, or list an intended override "
                "in ALLOWED_OVERRIDES"
            )
            overridden.add((d.name, file))
    for name, files in ALLOWED_OVERRIDES.items():
        for file in files:
            if dialect in file.split(".") and (SQL_DIR / file).is_file():
                assert (name, file) in overridden, (
                    f"{file}: ALLOWED_OVERRIDES lists query {name!r} as redefined here, but it is not: drop the entry"
                )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_parse_matches_the_loader(dialect):
    """The raw-text parse above sees the same queries as :func:`clickstream.store.sql.queries`."""
    parsed = {d.name: d.file for f in dialect_files(dialect) for d in definitions(f)}
    loaded = sql.queries(dialect)
    for name, file in parsed.items():
        if not FRAGMENT.fullmatch(name):
            assert name in loaded, f"{file}: query {name!r} is not loaded for {dialect} by clickstream.store.sql"
    for name in loaded:
        assert name in parsed, f"query {name!r} is loaded for {dialect} but found in no '-- name:' line"


def python_references() -> list[tuple[str, int, str]]:
    """``(file, line, query)`` of every query name the store's Python code passes to the database layer."""
    found = []
    for path in sorted(STORE_DIR.glob("*.py")):
        text = path.read_text()
        hits = [(m.start(1), m.group(1)) for m in PY_REFERENCE.finditer(text)]
        for loop in PY_QUERY_LOOP.finditer(text):
            hits += [(loop.start(1) + m.start(1), m.group(1)) for m in re.finditer(r"""["'](\w+)["']""", loop.group(1))]
        found += [(path.name, text.count("\n", 0, at) + 1, name) for at, name in hits]
    return found


def test_every_query_named_in_python_exists():
    references = python_references()
    assert len({name for _, _, name in references}) >= 20, (
        f"only {len(references)} query references found in {STORE_DIR}/*.py: has the calling convention changed? "
        "update PY_REFERENCE"
    )
    defined = {name: [d for d in DIALECTS if name in sql.queries(d)] for _, _, name in references}
    for file, line, name in references:
        assert defined[name], (
            f"plugins/clickstream/store/{file}:{line}: query {name!r} is defined in no dialect's SQL files "
            f"({', '.join(SQL_FILES)})"
        )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_fragment_used_is_defined(dialect):
    where = {d.name: d for f in dialect_files(dialect) for d in definitions(f)}
    for name, body in sql.queries(dialect).items():
        leftover = FRAGMENT.findall(body)
        d = where[name]
        assert not leftover, (
            f"{d.file}:{d.line}: query {name!r} uses fragment(s) {leftover} that no file of the {dialect} set defines"
        )


@pytest.mark.parametrize("file", SQL_FILES)
def test_no_double_colon_casts(file):
    for d in definitions(file):
        for offset, line in enumerate(d.lines, start=1):
            if not line.lstrip().startswith("--"):
                assert "::" not in line, (
                    f"{file}:{d.line + offset}: query {d.name!r} has a '::' cast, which clashes with :name "
                    "bind parameters: write CAST(x AS t)"
                )
