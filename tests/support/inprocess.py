"""Airflow's API server app in process: real JWTs for SimpleAuthManager roles, and a client bound to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: SimpleAuthManager roles, least to most privileged.
ROLES = ("viewer", "user", "op", "admin")
#: Where the clickstream API is mounted.
PREFIX = "/clickstream"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


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
