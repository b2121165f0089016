"""Fixtures of the page tests: the in-process API server app of tests/api (real JWTs, a fresh store)."""

from __future__ import annotations

from tests.api.conftest import airflow_app, api  # noqa: F401  (fixtures, shared with tests/api)
