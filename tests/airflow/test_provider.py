"""The package as an Airflow provider: the ``clickstream`` connection type, the ``[clickstream]`` config
section, the connection Test button, and which connection extras reach libpq."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from clickstream.hooks import ClickstreamHook, connection_url
from clickstream.provider import CONFIG_OPTIONS, CONN_FIELDS, get_provider_info
from tests.support import REPO_ROOT

CONN_ENV = "AIRFLOW_CONN_CLICKSTREAM_DEFAULT"


def _clickstream_uri(pg_url: str) -> str:
    """The store's PostgreSQL URL as a ``clickstream://`` Connection URI."""
    return make_url(pg_url).set(drivername="clickstream").render_as_string(hide_password=False)


def _conn(conn_type: str = "clickstream", **fields):
    from airflow.sdk import Connection

    extra = fields.pop("extra", None)
    return Connection(
        conn_id="c", conn_type=conn_type, extra=json.dumps(extra) if extra is not None else None, **fields
    )


def _airflow(*args: str, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` CLI of this venv in a fresh Airflow home (no airflow.cfg entry of ours)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh installation: a new AIRFLOW_HOME whose airflow.cfg is empty (so a value
    can only come from the provider's defaults), no AIRFLOW__* setting of the tests."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "airflow.cfg").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'home' / 'airflow.db'}",
        }
    )
    return env


# ---------------------------------------------------------------------------------------------- metadata


class TestProviderInfo:
    def test_matches_airflows_provider_info_schema(self) -> None:
        import jsonschema
        from airflow import providers_manager

        schema = json.loads((Path(providers_manager.__file__).parent / "provider_info.schema.json").read_text())
        jsonschema.validate(get_provider_info(), schema)

    def test_is_registered_by_the_distribution_next_to_the_plugin(self) -> None:
        eps = metadata.distribution("clickstream").entry_points
        provider = [ep for ep in eps if ep.group == "apache_airflow_provider"]
        plugins = [ep for ep in eps if ep.group == "airflow.plugins"]
        assert [ep.value for ep in provider] == ["clickstream.provider:get_provider_info"]
        assert [ep.value for ep in plugins] == ["clickstream.plugin:ClickstreamPlugin"]
        info = provider[0].load()()
        assert info["package-name"] == "clickstream" and "plugins" not in info  # the plugin is registered once

    def test_the_connection_type_is_the_hooks(self) -> None:
        (conn_type,) = get_provider_info()["connection-types"]
        assert conn_type["connection-type"] == ClickstreamHook.conn_type == "clickstream"
        assert conn_type["hook-class-name"] == "clickstream.hooks.ClickstreamHook"
        assert conn_type["hook-name"] == ClickstreamHook.hook_name

    def test_the_form_is_declared_and_the_hook_has_no_deprecated_form_methods(self) -> None:
        assert "get_connection_form_widgets" not in vars(ClickstreamHook)
        assert "get_ui_field_behaviour" not in vars(ClickstreamHook)
        (conn_type,) = get_provider_info()["connection-types"]
        assert conn_type["conn-fields"] == CONN_FIELDS
        assert conn_type["ui-field-behaviour"]["relabeling"] == {"schema": "Database"}

    def test_every_form_field_is_a_libpq_parameter_the_hook_passes(self) -> None:
        from clickstream.hooks import LIBPQ_EXTRAS

        assert set(CONN_FIELDS) <= LIBPQ_EXTRAS

    def test_default_conn_id_of_the_operators_is_the_hooks(self) -> None:
        from clickstream.operators.base import DEFAULT_CONN_ID

        assert DEFAULT_CONN_ID == ClickstreamHook.default_conn_name == CONFIG_OPTIONS["conn_id"][1]


class TestProvidersManager:
    def test_lists_the_hook_with_its_form_without_deprecation_warnings(self) -> None:
        from airflow.providers_manager import ProvidersManager

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            manager = ProvidersManager()
            assert "clickstream" in manager.providers
            hook = manager.hooks["clickstream"]
            widgets = manager.connection_form_widgets
            behaviour = manager.field_behaviours["clickstream"]
        assert hook is not None
        assert (hook.hook_class_name, hook.connection_id_attribute_name, hook.connection_testable) == (
            "clickstream.hooks.ClickstreamHook",
            "clickstream_conn_id",
            True,
        )
        assert {f"extra__clickstream__{name}" for name in CONN_FIELDS} <= set(widgets)
        assert widgets["extra__clickstream__sslmode"].field["schema"]["title"] == "SSL mode"
        assert behaviour["relabeling"] == {"schema": "Database"}
        ours = [str(w.message) for w in caught if "clickstream" in str(w.message).lower()]
        assert ours == []

    def test_a_clickstream_connection_gets_our_hook(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow.sdk import Connection

        monkeypatch.setenv(CONN_ENV, "clickstream://postgres@127.0.0.1:5432/clickstream")
        hook = Connection.get("clickstream_default").get_hook()
        assert isinstance(hook, ClickstreamHook) and hook.clickstream_conn_id == "clickstream_default"
        url = hook.sqlalchemy_url
        assert (url.drivername, url.host, url.port, url.database, url.username) == (
            "postgresql+psycopg",
            "127.0.0.1",
            5432,
            "clickstream",
            "postgres",
        )


# ---------------------------------------------------------------------------------------------- config


def _keys_the_code_reads() -> set[str]:
    pattern = re.compile(r"""conf\.get\w*\(\s*["']clickstream["']\s*,\s*["'](\w+)["']""")
    sources = [*(REPO_ROOT / "plugins" / "clickstream").rglob("*.py"), *(REPO_ROOT / "dags").glob("*.py")]
    return {key for path in sources for key in pattern.findall(path.read_text())}


class TestConfigSection:
    def test_every_key_the_code_reads_is_declared_and_nothing_else(self) -> None:
        from clickstream.store import StoreConfig

        assert set(CONFIG_OPTIONS) == _keys_the_code_reads() | set(StoreConfig.__dataclass_fields__)

    def test_defaults_are_the_codes_defaults(self) -> None:
        from clickstream.store import StoreConfig
        from clickstream.web.limits import DEFAULT_MAX_REQUEST_BYTES

        for name, default in vars(StoreConfig()).items():
            assert CONFIG_OPTIONS[name][1] == str(default), name
        assert CONFIG_OPTIONS["max_request_bytes"][1] == str(DEFAULT_MAX_REQUEST_BYTES)
        assert CONFIG_OPTIONS["release_schedule"][1] == "@daily"
        assert CONFIG_OPTIONS["api_migrate"][1] == "True"
        assert CONFIG_OPTIONS["dataset_base_path"][1] == CONFIG_OPTIONS["retention_days"][1] == ""

    def test_every_key_has_a_description(self) -> None:
        section = get_provider_info()["config"]["clickstream"]["options"]
        assert all(len(option["description"]) > 20 for option in section.values())

    def test_conf_answers_the_defaults_without_any_setting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow.sdk import conf

        for key in CONFIG_OPTIONS:
            monkeypatch.delenv(f"AIRFLOW__CLICKSTREAM__{key.upper()}", raising=False)
        assert conf.get("clickstream", "max_page") == "1000"
        assert conf.getint("clickstream", "max_request_bytes") == 8 * 1024 * 1024
        assert conf.get("clickstream", "retention_days") == ""
        assert conf.getboolean("clickstream", "api_migrate") is True


@pytest.mark.slow
class TestCommandLine:
    """What a user checks after ``pip install``, in a fresh Airflow home."""

    def test_providers_list_hooks_and_config_defaults(self, fresh_env: dict[str, str]) -> None:
        listed = _airflow("providers", "list", "--output", "json", env=fresh_env)
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert {"package_name": "clickstream", "version": "0.1.0"}.items() <= next(
            p for p in json.loads(listed.stdout) if p["package_name"] == "clickstream"
        ).items()
        hooks = _airflow("providers", "hooks", "--output", "json", env=fresh_env)
        assert hooks.returncode == 0, hooks.stderr[-2000:]
        ours = [h for h in json.loads(hooks.stdout) if h.get("connection_type") == "clickstream"]
        assert ours and ours[0]["class"] == "clickstream.hooks.ClickstreamHook"
        value = _airflow("config", "get-value", "clickstream", "max_page", env=fresh_env)
        assert (value.returncode, value.stdout.strip()) == (0, "1000"), value.stderr[-2000:]
        assert (Path(fresh_env["AIRFLOW_HOME"]) / "airflow.cfg").read_text() == ""  # not from the file

    def test_connections_test_reports_the_pending_migrations(self, fresh_env: dict[str, str], pg_url: str) -> None:
        env = {**fresh_env, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled", CONN_ENV: _clickstream_uri(pg_url)}
        before = _airflow("connections", "test", "clickstream_default", env=env)
        assert before.returncode == 1
        assert "0001_initial" in before.stdout and "pending" in before.stdout
        os.environ[CONN_ENV] = env[CONN_ENV]
        try:
            with ClickstreamHook() as hook:
                hook.migrate()
        finally:
            del os.environ[CONN_ENV]
        after = _airflow("connections", "test", "clickstream_default", env=env)
        assert after.returncode == 0 and "Connection success" in after.stdout, after.stdout + after.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- test button


@pytest.fixture
def clickstream_pg(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``clickstream_default`` as a ``clickstream://`` Connection to an empty PostgreSQL database."""
    monkeypatch.setenv(CONN_ENV, _clickstream_uri(pg_url))
    yield pg_url


class TestConnectionTestButton:
    def test_an_unmigrated_store_names_every_pending_migration(self, clickstream_pg: str) -> None:
        from clickstream.store import sql

        with ClickstreamHook() as hook:
            ok, message = hook.test_connection()
        assert ok is False
        assert "no migration applied yet" in message
        for version, name, _ in sql.migrations("postgresql"):
            assert f"{version:04d}_{name}" in message
        assert ".migrate()" in message

    def test_a_partly_migrated_store_names_what_is_missing(self, clickstream_pg: str) -> None:
        with ClickstreamHook() as hook:
            hook.migrate()
            with hook.store.engine.begin() as conn:  # as if the newest migration were not applied yet
                conn.execute(text("DELETE FROM cs_schema_migrations WHERE version > 1"))
            ok, message = hook.test_connection()
        assert ok is False and "migrations 0001 applied" in message and "0002_" in message
        assert "0001_initial" not in message

    def test_a_migrated_store_is_up_to_date(self, clickstream_pg: str) -> None:
        with ClickstreamHook() as hook:
            applied = hook.migrate()
            ok, message = hook.test_connection()
        assert ok is True
        assert message.startswith("Connected to the postgresql store") and "up to date" in message
        assert ", ".join(f"{v:04d}" for v in applied) in message

    # Airflow's own Connection.get_hook (what the REST API's test route runs) warns about its own import.
    @pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
    def test_the_rest_apis_test_path_runs_our_check(self, clickstream_pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow.models.connection import Connection

        # POST /api/v2/connections/test exports the form as a transient connection, then tests it so.
        monkeypatch.setenv("AIRFLOW_CONN_TRANSIENT", _clickstream_uri(clickstream_pg))
        conn = Connection(conn_id="transient", uri=_clickstream_uri(clickstream_pg))
        ok, message = conn.test_connection()
        assert ok is False and "pending" in message and "0001_initial" in message

    def test_sqlite_works_the_same(self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONN_ENV, sqlite_url)
        with ClickstreamHook() as hook:
            assert hook.test_connection()[0] is False
            hook.migrate()
            assert hook.test_connection() == (True, hook.test_connection()[1])
            assert "sqlite store" in hook.test_connection()[1]

    def test_wrong_credentials_fail_with_the_servers_reason(self, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        url = make_url(pg_url).set(drivername="clickstream", username="nobody", password="wrong")
        monkeypatch.setenv(CONN_ENV, url.render_as_string(hide_password=False))
        with ClickstreamHook() as hook:
            ok, message = hook.test_connection()
        assert ok is False and "nobody" in message


# ---------------------------------------------------------------------------------------------- extras


class TestLibpqAllowList:
    def test_libpq_parameters_pass_and_other_extras_are_ignored(self) -> None:
        conn = _conn(
            host="db.example",
            port=5432,
            login="u",
            password="p",
            schema="clickstream",
            extra={
                "sslmode": "verify-full",
                "sslrootcert": "/etc/ssl/ca.pem",
                "connect_timeout": 7,
                "application_name": "clickstream-tasks",
                "options": "-c statement_timeout=60000",
                "target_session_attrs": "read-write",
                "keepalives": True,
                "keepalives_idle": 30,
                "cursor": "realdictcursor",  # PostgresHook's
                "iam": True,  # PostgresHook's
                "aws_conn_id": "aws_default",
                "sqlalchemy_scheme": "postgresql",
                "dbname": "other",  # the database comes from the Connection's schema, not the extras
                "sslcert": "",  # empty: not set
                "sslkey": {"nested": "object"},  # not a value libpq takes
            },
        )
        url = connection_url(conn)
        assert dict(url.query) == {
            "sslmode": "verify-full",
            "sslrootcert": "/etc/ssl/ca.pem",
            "connect_timeout": "7",
            "application_name": "clickstream-tasks",
            "options": "-c statement_timeout=60000",
            "target_session_attrs": "read-write",
            "keepalives": "1",
            "keepalives_idle": "30",
        }
        assert (url.host, url.port, url.username, url.password, url.database) == (
            "db.example",
            5432,
            "u",
            "p",
            "clickstream",
        )

    def test_prefixed_form_keys_count_as_the_plain_key(self) -> None:
        url = connection_url(_conn(host="h", extra={"extra__clickstream__sslmode": "require"}))
        assert dict(url.query) == {"sslmode": "require"}

    @pytest.mark.parametrize("conn_type", ["clickstream", "postgres", "postgresql"])
    def test_every_postgres_type_gets_the_same_url(self, conn_type: str) -> None:
        url = connection_url(_conn(conn_type, host="h", port=5433, schema="d", extra={"cursor": "dictcursor"}))
        assert url.render_as_string() == "postgresql+psycopg://h:5433/d"

    def test_postgres_hook_extras_do_not_break_a_real_connection(
        self, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = make_url(pg_url)
        monkeypatch.setenv(
            CONN_ENV,
            json.dumps(
                {
                    "conn_type": "clickstream",
                    "host": url.host,
                    "port": url.port,
                    "login": url.username,
                    "password": url.password,
                    "schema": url.database,
                    "extra": {"cursor": "realdictcursor", "iam": False, "application_name": "cs-test-allowlist"},
                }
            ),
        )
        with ClickstreamHook() as hook:
            hook.migrate()
            with hook.store.engine.connect() as conn:
                assert conn.execute(text("SHOW application_name")).scalar() == "cs-test-allowlist"
