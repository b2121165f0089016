"""The layering rules of docs/architecture.md that a machine can check, over the package under plugins/.

* no import cycle between the package's modules (counting every import: module level, inside functions,
  and under ``TYPE_CHECKING``), so each module can be read and loaded on its own;
* no module uses another module's private name (``_name``): not ``from m import _name``, not ``m._name``,
  not ``obj._name`` unless ``_name`` is defined in the same module;
* the store imports neither Airflow nor FastAPI, and the adapters (API routes, operators) hold no SQL.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import cast

import pytest

from tests.support import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "plugins"
MODULES = {
    ".".join(path.relative_to(PACKAGE_ROOT).with_suffix("").parts).removesuffix(".__init__"): path
    for path in sorted((PACKAGE_ROOT / "clickstream").rglob("*.py"))
}


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        package = package.rsplit(".", 1)[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports (a ``from pkg import sub`` counts as ``pkg.sub``)."""
    found = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
                elif base in MODULES:
                    found.add(base)
    found.discard(module)
    return found


def _cycles() -> list[list[str]]:
    graph = {m: _imports(m) for m in MODULES}
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(module: str) -> list[str]:
    tree = _tree(module)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    defined |= {
        t.id
        for n in ast.walk(tree)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    }
    defined |= {
        t.attr
        for n in ast.walk(tree)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Attribute)
    }
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _resolve(module, node).startswith("clickstream"):
            uses += [
                f"line {node.lineno}: from {_resolve(module, node)} import {a.name}"
                for a in node.names
                if _private(a.name)
            ]
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in defined
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            uses.append(f"line {node.lineno}: {ast.unparse(node)}")
    return uses


class TestModuleStructure:
    def test_there_are_modules_to_check(self) -> None:
        assert {"clickstream.store.session_store", "clickstream.store.db", "clickstream.hooks"} <= set(MODULES)

    def test_no_import_cycle_under_plugins(self) -> None:
        assert _cycles() == []

    @pytest.mark.parametrize("module", sorted(MODULES))
    def test_no_private_name_of_another_module_is_used(self, module: str) -> None:
        assert _private_uses(module) == [], f"{MODULES[module].relative_to(REPO_ROOT)} uses private names"

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("clickstream.store")))
    def test_the_store_imports_neither_airflow_nor_fastapi(self, module: str) -> None:
        imported = {a.name for n in ast.walk(_tree(module)) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(_tree(module)) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m.split(".")[0] in ("airflow", "fastapi", "starlette")}

    @pytest.mark.parametrize(
        "module", sorted(m for m in MODULES if m.startswith(("clickstream.web", "clickstream.operators")))
    )
    def test_adapters_hold_no_sql(self, module: str) -> None:
        sql = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.I)
        strings = [n.value for n in ast.walk(_tree(module)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert [s for s in strings if sql.search(s)] == []


class TestTheChecksCatchViolations:
    """The checks above would see a violation (so a green run means something)."""

    def test_a_cycle_is_found(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = _imports
        monkeypatch.setitem(
            globals(), "_imports", lambda m: real(m) | ({"clickstream.hooks"} if m == "clickstream.store.db" else set())
        )
        assert any("clickstream.store.db" in c and "clickstream.hooks" in c for c in _cycles())

    def test_a_private_import_and_attribute_are_found(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bad = tmp_path / "bad.py"
        bad.write_text("from clickstream.store.db import _first_line\nimport os\nos._exit\n")
        monkeypatch.setitem(MODULES, "clickstream.bad", bad)
        assert [u.split(":")[0] for u in _private_uses("clickstream.bad")] == ["line 1", "line 3"]


# ------------------------------------------------------------------------ the database layer, the history import

#: The modules that own the database driver: :class:`clickstream.store.db.Database` and the engines it runs on.
DATABASE_LAYER = {"clickstream.store.db", "clickstream.store.engine"}
#: The database drivers (PostgreSQL's and SQLite's DB-API modules, and ADBC's PostgreSQL driver).
DRIVERS = {"psycopg", "psycopg2", "psycopg_pool", "sqlite3", "adbc_driver_manager", "adbc_driver_postgresql"}
#: The history import's package; its load is the store's (``clickstream.store.history_load``).
HISTORY = "clickstream.history"
#: Kept for the Python interface the docs show; the package itself never imports it.
FORMER_IMPORT_MODULES = {"clickstream.importing", "clickstream.import_fast"}


def _imported_names(module: str) -> set[str]:
    """Every module ``module`` imports (absolute names; relative imports resolved), inside functions too."""
    tree = _tree(module)
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {_resolve(module, n) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return names


def _driver_uses(module: str) -> list[str]:
    """Where ``module`` touches the database driver or an engine itself: imports a driver, reaches for the
    driver's connection (``.driver_connection``, ``.raw_connection()``), or connects or begins on an engine
    (``engine.connect()``, ``x.engine.begin()``) instead of going through ``Database``."""
    found = [f"imports {m}" for m in sorted(_imported_names(module)) if m.split(".")[0] in DRIVERS]
    for node in ast.walk(_tree(module)):
        raw = isinstance(node, ast.Attribute) and node.attr in (
            "driver_connection",
            "raw_connection",
            "dbapi_connection",
        )
        on_engine = (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("connect", "begin")
            and (
                (isinstance(node.func.value, ast.Name) and node.func.value.id == "engine")
                or (isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "engine")
            )
        )
        if raw or on_engine:
            found.append(f"line {getattr(node, 'lineno', 0)}: {ast.unparse(node)}")
    return found


def _history_violations(module: str) -> list[str]:
    """What a module of the history import must not do: import the database (SQLAlchemy, a driver), Airflow or
    FastAPI, hold SQL, or import the database layer past the store's operations and load."""
    found = [
        f"imports {m}"
        for m in sorted(_imported_names(module))
        if m.split(".")[0] in {"sqlalchemy", "airflow", "fastapi", "starlette", *DRIVERS} or m in DATABASE_LAYER
    ]
    sql = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|COPY\s+\w+)\b", re.I)
    found += [
        f"line {n.lineno}: SQL {n.value[:40]!r}"
        for n in ast.walk(_tree(module))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and sql.search(n.value)
    ]
    return found


class TestDatabaseLayerAndHistoryImport:
    def test_the_history_import_is_one_package(self) -> None:
        assert {
            f"{HISTORY}.importer",
            f"{HISTORY}.checks",
            f"{HISTORY}.readers",
            "clickstream.store.history_load",
        } <= set(MODULES)

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in DATABASE_LAYER))
    def test_only_the_database_layer_uses_the_driver(self, module: str) -> None:
        assert _driver_uses(module) == [], f"{MODULES[module].relative_to(REPO_ROOT)}: go through Database"

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if m == HISTORY or m.startswith(HISTORY + ".")))
    def test_the_history_import_reaches_the_database_only_through_the_store(self, module: str) -> None:
        assert _history_violations(module) == [], f"{MODULES[module].relative_to(REPO_ROOT)}"

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in FORMER_IMPORT_MODULES))
    def test_nothing_in_the_package_imports_the_former_import_modules(self, module: str) -> None:
        assert not _imported_names(module) & FORMER_IMPORT_MODULES


class TestTheNewChecksCatchViolations:
    """The rules above would see a violation (so a green run means something)."""

    def _module(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
        path = tmp_path / f"{name.rsplit('.', 1)[-1]}.py"
        path.write_text(source)
        monkeypatch.setitem(MODULES, name, path)
        return name

    def test_a_driver_import_and_a_raw_connection_are_found(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        module = self._module(
            tmp_path,
            monkeypatch,
            "clickstream.store.bad",
            "import psycopg\n"
            "from psycopg import errors\n"
            "def f(store, conn):\n"
            "    with store.engine.connect() as c:\n"
            "        conn.connection.driver_connection.cursor()\n",
        )
        found = sorted(u.split(":")[0] for u in _driver_uses(module))
        assert found == ["imports psycopg", "line 4", "line 5"]

    def test_database_access_and_sql_in_the_history_import_are_found(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        module = self._module(
            tmp_path,
            monkeypatch,
            f"{HISTORY}.bad",
            "from sqlalchemy import text\n"
            "from clickstream.store.db import Database\n"
            "from airflow.sdk import ObjectStoragePath\n"
            "Q = 'SELECT session_id FROM cs_session'\n",
        )
        found = _history_violations(module)
        assert {"imports sqlalchemy", "imports clickstream.store.db", "imports airflow.sdk"} <= set(found)
        assert any(u.startswith("line 4: SQL") for u in found)

    def test_an_import_of_the_former_module_is_found(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        module = self._module(
            tmp_path, monkeypatch, "clickstream.bad", "def f():\n    from clickstream.importing import import_history\n"
        )
        assert _imported_names(module) & FORMER_IMPORT_MODULES == {"clickstream.importing"}


# ------------------------------------------------------------------------------- one web package

#: The HTTP frameworks: FastAPI, Starlette under it, and Airflow's FastAPI layer (its security helpers).
WEB_FRAMEWORKS = ("fastapi", "starlette", "airflow.api_fastapi")


def _in_web_package(module: str) -> bool:
    return module == "clickstream.web" or module.startswith("clickstream.web.")


def _web_framework_imports(module: str) -> list[str]:
    """The imports of ``module`` (anywhere in it) that name an HTTP framework of :data:`WEB_FRAMEWORKS`."""
    found = []
    for node in ast.walk(_tree(module)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        found += [
            f"line {cast(ast.stmt, node).lineno}: {name}"
            for name in names
            if any(name == f or name.startswith(f + ".") for f in WEB_FRAMEWORKS)
        ]
    return found


class TestOneWebPackage:
    """Only :mod:`clickstream.web` speaks HTTP: the app, its routes (JSON and the page's), its error mapping;
    the store, the hooks, the operators and the plugin module stay free of FastAPI."""

    @pytest.mark.parametrize("module", sorted(m for m in MODULES if not _in_web_package(m)))
    def test_only_clickstream_web_imports_fastapi_or_starlette(self, module: str) -> None:
        assert _web_framework_imports(module) == [], f"{MODULES[module].relative_to(REPO_ROOT)} imports a web framework"

    def test_the_web_package_is_where_they_are_imported(self) -> None:
        assert _web_framework_imports("clickstream.web.app") != []

    def test_a_web_framework_import_outside_the_web_package_is_found(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bad = tmp_path / "bad.py"
        bad.write_text(
            "import os\nfrom fastapi import Depends\n\n\ndef f():\n    import starlette.requests\n"
            "    from airflow.api_fastapi.core_api import security\n    from airflow.sdk import conf\n"
        )
        monkeypatch.setitem(MODULES, "clickstream.operators.bad", bad)
        assert not _in_web_package("clickstream.operators.bad") and _in_web_package("clickstream.web.routes.page")
        assert _web_framework_imports("clickstream.operators.bad") == [
            "line 2: fastapi",
            "line 6: starlette.requests",
            "line 7: airflow.api_fastapi.core_api",
        ]
