"""Typed errors of the session store. Adapters map them to HTTP codes / task failures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def errors_detail(errors: Iterable[Mapping[str, Any]]) -> str:
    """The one-line ``detail`` of validation errors: ``"<loc.path>: <msg>; ..."`` (``body`` for an empty
    location), as every 422 of the API and the Clickstream page words it."""
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or 'body'}: {e.get('msg', '')}" for e in errors)


class StoreError(Exception):
    """Base class. ``detail`` is the human-readable message that names the offending field or id."""

    http_status = 500

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NotFound(StoreError):
    """An id (session, batch, release, mark) that the store does not know."""

    http_status = 404


class Conflict(StoreError):
    """The request contradicts what is stored (e.g. a session re-registered with other content)."""

    http_status = 409


class InvalidInput(StoreError):
    """Bad input. ``errors`` lists ``{"loc": [...], "msg": ...}`` entries, one per offending field."""

    http_status = 422

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.errors = errors or []

    @classmethod
    def field(cls, field: str, msg: str) -> InvalidInput:
        return cls(f"{field}: {msg}", [{"loc": field.split("."), "msg": msg}])


class StoreUnavailable(StoreError):
    """The database cannot be reached or is locked for longer than the configured timeout."""

    http_status = 503
