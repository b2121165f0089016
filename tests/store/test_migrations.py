"""Schema migrations: idempotent, recorded, and shipped inside the wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from clickstream.store import SessionStore, StoreConfig, create_store_engine, sql
from tests.support import REPO_ROOT

T0 = 1_750_000_000_000
TABLES = {"cs_batch", "cs_session", "cs_event", "cs_improvement_mark", "cs_erased_session", "cs_schema_migrations"}


@pytest.fixture
def store(store_url: str):
    store = SessionStore(create_store_engine(store_url), StoreConfig(), clock=lambda: T0)
    yield store
    store.dispose()


class TestMigrate:
    def test_first_migrate_creates_the_schema_and_records_each_version(self, store: SessionStore) -> None:
        expected = [(v, name) for v, name, _ in sql.migrations(store.dialect)]
        assert expected, "no migration found for this dialect"
        assert store.migrate() == [v for v, _ in expected]
        assert set(sa.inspect(store.engine).get_table_names()) >= TABLES
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT version, name, applied_at FROM cs_schema_migrations ORDER BY version")
            ).all()
        assert [(r.version, r.name) for r in rows] == expected
        assert all(r.applied_at == T0 for r in rows)

    def test_migrate_again_applies_nothing_and_keeps_data(self, store: SessionStore) -> None:
        store.migrate()
        registered = store.register_session({"session_id": "s1", "created_at": T0})
        assert store.migrate() == []
        assert store.migrate() == []
        assert store.get_session("s1").session_number == registered.session_number
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM cs_schema_migrations")).scalar_one() == len(
                sql.migrations(store.dialect)
            )

    def test_a_new_store_on_a_migrated_database_is_up_to_date(self, store: SessionStore, store_url: str) -> None:
        store.migrate()
        other = SessionStore.from_url(store_url)
        try:
            assert other.migrate() == []
        finally:
            other.dispose()


class TestMigrationFiles:
    def test_every_dialect_has_the_same_migration_versions(self) -> None:
        postgres = [(v, name) for v, name, _ in sql.migrations("postgresql")]
        sqlite = [(v, name) for v, name, _ in sql.migrations("sqlite")]
        assert postgres == sqlite
        assert [v for v, _ in postgres] == list(range(1, len(postgres) + 1)), "versions must be 1, 2, 3, ..."

    @pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
    def test_every_named_query_of_a_dialect_resolves_its_fragments(self, dialect: str) -> None:
        queries = sql.queries(dialect)
        assert {"insert_session", "release_collecting", "batch_page", "claim_marks"} <= set(queries)
        unresolved = {name: re.findall(r"__[A-Z_]+__", body) for name, body in queries.items()}
        assert {name: found for name, found in unresolved.items() if found} == {}

    def test_unknown_dialect_is_a_clear_error(self) -> None:
        with pytest.raises(ValueError, match="unsupported database dialect 'mysql'"):
            sql.queries("mysql")


# ------------------------------------------------------------------------------------------------------ wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from this checkout (hatchling from the venv, no network; a fresh
    `./dev setup` venv has no hatchling, then pip builds in isolation and fetches it from the index)."""
    import importlib.util

    out = tmp_path_factory.mktemp("wheel")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [built] = out.glob("clickstream-*.whl")
    return built


class TestWheel:
    def test_wheel_carries_the_sql_files(self, wheel: Path) -> None:
        names = set(zipfile.ZipFile(wheel).namelist())
        expected = {
            "clickstream/sql/queries.sql",
            "clickstream/sql/queries.postgresql.sql",
            "clickstream/sql/queries.sqlite.sql",
        }
        expected |= {
            f"clickstream/sql/migrations/{p.name}" for p in (REPO_ROOT / "include" / "sql" / "migrations").glob("*.sql")
        }
        assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"

    def test_installed_wheel_finds_its_own_sql_files(self, wheel: Path, tmp_path: Path) -> None:
        site = tmp_path / "site"
        zipfile.ZipFile(wheel).extractall(site)
        probe = (
            "import json, sys\n"
            f"sys.path.insert(0, {str(site)!r})\n"
            "from clickstream.store import SessionStore, sql\n"
            "import clickstream\n"
            f"store = SessionStore.from_url('sqlite:///{tmp_path}/probe.db')\n"
            "print(json.dumps({'package': clickstream.__file__, 'sql_dir': str(sql.sql_dir()),\n"
            "                  'migrations': [v for v, _, _ in sql.migrations('postgresql')],\n"
            "                  'applied': store.migrate()}))\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout.strip().splitlines()[-1])
        assert Path(found["package"]).is_relative_to(site)
        assert Path(found["sql_dir"]) == site / "clickstream" / "sql"
        assert found["migrations"] == [v for v, _, _ in sql.migrations("postgresql")]
        assert found["applied"] == found["migrations"]
