"""Airflow's API server app in process: real JWTs for SimpleAuthManager roles, and a client bound to them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: SimpleAuthManager roles, least to most privileged.
ROLES = ("viewer", "user", "op", "admin")
#: Where the clickstream API is mounted.
PREFIX = "/clickstream"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


@contextmanager
def airflow_api_app() -> Iterator[Any]:
    """Airflow's API server app with SimpleAuthManager (users named after :data:`ROLES`) and every plugin
    found by entry point, built fresh: Airflow's app and plugin caches are cleared first, so the plugins are
    loaded again under this environment. Needs Airflow's metadata database (the ``airflow_db`` fixture)."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH_MANAGER)
        mp.setenv("AIRFLOW__CORE_SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{r}:{r}" for r in ROLES))
        from airflow import plugins_manager
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        plugins_manager._get_plugins.cache_clear()
        plugins_manager.get_fastapi_plugins.cache_clear()
        plugins_manager._get_ui_plugins.cache_clear()
        try:
            yield create_app()
        finally:
            purge_cached_app()


def mint_token(app: Any, role: str | None, *, expires_in: int | None = None) -> str:
    """A real JWT of Airflow's auth manager for a SimpleAuthManager user with ``role``."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username=role or "nobody", role=role)
    manager = app.state.auth_manager
    if expires_in is None:
        return manager.generate_jwt(user)
    return manager.generate_jwt(user, expiration_time_in_seconds=expires_in)


@dataclass
class Api:
    """A test client of the API server plus the store behind it (for seeding and checking)."""

    client: Any
    store: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs: Any):
        headers = kwargs.pop("headers", {})
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return self.client.request(method, PREFIX + path, headers=headers, **kwargs)

    def get(self, path: str, role: str | None = "admin", **kwargs: Any):
        return self.call("GET", path, role, **kwargs)

    def post(self, path: str, json: Any = None, role: str | None = "admin", **kwargs: Any):
        return self.call("POST", path, role, json=json, **kwargs)
