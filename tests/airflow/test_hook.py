"""ClickstreamHook: an Airflow Connection (URI or JSON, postgres or sqlite) -> engine -> session store."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from clickstream.hooks import ClickstreamHook
from clickstream.store import InvalidInput, StoreUnavailable, now_ms
from tests.support import MIGRATIONS
from tests.support.connections import airflow_conn_json

CONN_ENV = "AIRFLOW_CONN_CLICKSTREAM_DEFAULT"


def _connection_env(store_url: str, form: str) -> str:
    """The Airflow Connection of ``store_url`` as the value of an ``AIRFLOW_CONN_*`` variable."""
    url = make_url(store_url)
    if form == "json":
        return airflow_conn_json(store_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{url.database}"
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def hook(store_url: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClickstreamHook]:
    form = getattr(request, "param", "uri")
    monkeypatch.setenv(CONN_ENV, _connection_env(store_url, form))
    with ClickstreamHook() as hook:
        hook.migrate()
        yield hook


def _session(session_id: str) -> dict:
    return {
        "session_id": session_id,
        "search_results": [{"object_id": "a"}, {"object_id": "b"}],
        "created_at": now_ms(),
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestConnectionFormats:
    @pytest.mark.parametrize("hook", ["uri", "json"], indirect=True)
    def test_operations_work_through_the_hook(self, hook: ClickstreamHook) -> None:
        registered = hook.register_session(_session("s1"))
        assert hook.push_events("s1", [{"event_id": "e1", "object_id": "b", "created_at": now_ms()}]).stored == 1
        assert hook.use_for_improvement("s1").status == "marked"
        released = hook.release_batch("r1")
        assert released.batch_id == registered.batch_id
        page = hook.get_batch_sessions(released.batch_id)
        assert [(s.session_id, len(s.events)) for s in page.sessions] == [("s1", 1)]
        assert [[s["session_id"] for s in p] for p in hook.iter_batch_pages(released.batch_id)] == [["s1"]]
        assert hook.batch_metrics(released.batch_id).click_through_rate == 1.0
        assert hook.test_connection()[0] is True

    def test_hook_and_store_see_the_same_database(self, hook: ClickstreamHook, store_url: str) -> None:
        from clickstream.store import SessionStore

        hook.register_session(_session("s1"))
        store = SessionStore.from_url(store_url)
        try:
            assert store.get_session("s1").session_id == "s1"
        finally:
            store.dispose()

    def test_a_sqlalchemy_style_postgres_uri_is_accepted(self, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONN_ENV, pg_url)  # postgresql+psycopg://...
        with ClickstreamHook() as hook:
            assert hook.sqlalchemy_url.drivername == "postgresql+psycopg"
            assert hook.migrate() == MIGRATIONS

    @pytest.mark.parametrize(
        "value",
        ["mysql://user@db.example/clickstream", json.dumps({"conn_type": "http", "host": "example.com"})],
        ids=["uri", "json"],
    )
    def test_another_conn_type_is_a_clear_error(self, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONN_ENV, value)
        hook = ClickstreamHook()
        with pytest.raises(ValueError, match=r"clickstream_default.*conn_type.*use clickstream or postgres.*or sqlite"):
            hook.get_conn()

    def test_sqlite_connection_without_a_path_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONN_ENV, json.dumps({"conn_type": "sqlite"}))
        with pytest.raises(ValueError, match="database file path"):
            ClickstreamHook().get_conn()


class TestEngine:
    def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(
        self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(CONN_ENV, _connection_env(sqlite_url, "json"))
        with ClickstreamHook() as hook:
            hook.migrate()
            with hook.store.engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1

    def test_postgres_uses_psycopg3(self, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONN_ENV, _connection_env(pg_url, "json"))
        with ClickstreamHook() as hook:
            assert hook.store.engine.dialect.driver == "psycopg"

    def test_unreachable_postgres_raises_store_unavailable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CONN_ENV, f"postgresql://postgres@127.0.0.1:{_closed_port()}/clickstream")
        with ClickstreamHook() as hook:
            with pytest.raises(StoreUnavailable) as err:
                hook.list_batches()
            assert err.value.http_status == 503
            assert "unavailable" in err.value.detail
            ok, message = hook.test_connection()
            assert ok is False and "unavailable" in message


class TestConfig:
    def test_clickstream_section_sets_the_page_bound(
        self, hook: ClickstreamHook, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW__CLICKSTREAM__MAX_PAGE", "5")
        monkeypatch.setenv("AIRFLOW__CLICKSTREAM__MAX_EVENTS", "7")
        batch_id = hook.register_session(_session("s1")).batch_id
        assert batch_id is not None
        with ClickstreamHook() as configured:
            assert configured.get_batch_sessions(batch_id, limit=5, events_limit=7).last_number is not None
            with pytest.raises(InvalidInput, match="limit: must be between 1 and 5, got 6"):
                configured.get_batch_sessions(batch_id, limit=6)
            with pytest.raises(InvalidInput, match="events_limit: must be between 0 and 7"):
                configured.get_batch_sessions(batch_id, limit=1, events_limit=8)

    def test_defaults_apply_without_a_clickstream_section(self, hook: ClickstreamHook) -> None:
        config = hook.get_store_config()
        assert (
            config.max_page,
            config.max_events,
            config.window_back_ms,
            config.window_ahead_ms,
            config.max_attempts,
            config.claim_stale_ms,
        ) == (1000, 1000, 86_400_000, 300_000, 3, 3_600_000)


class TestHookMirrorsTheStore:
    def test_every_store_operation_is_a_hook_method_with_the_same_signature(self) -> None:
        import inspect

        from clickstream.store import SessionStore

        operations = {
            name
            for base in SessionStore.__mro__
            if base.__module__.startswith("clickstream.store.")
            for name, value in vars(base).items()
            if callable(value) and not name.startswith("_")
        } - {"from_url", "dispose"}
        assert {"register_session", "ingest_bulk", "erase_user", "purge_batch"} <= operations
        missing = sorted(name for name in operations if not hasattr(ClickstreamHook, name))
        assert missing == []
        differing = sorted(
            name
            for name in operations
            if inspect.signature(getattr(SessionStore, name)) != inspect.signature(getattr(ClickstreamHook, name))
        )
        assert differing == []
