"""Fixtures of the store tests: a migrated store on a fresh database of each backend (``store_url``: every
test runs on SQLite and on PostgreSQL).

``store`` (and ``make_store`` for more stores, or other tunables, on the same database) runs on ``clock``, a
clock the test moves by hand, so window checks, stale claims and late events are deterministic;
``live_store`` runs on the real clock, for tests whose bodies carry timestamps of now (test classes derived
from :class:`tests.store.helpers.RealClock` get it as their ``store``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clickstream.store import SessionStore, StoreConfig, create_store_engine
from tests.store.helpers import T0, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def make_store(store_url: str, clock: Clock) -> Iterator[Callable[..., SessionStore]]:
    """Build migrated stores on this test's database (all sharing ``clock``); disposed at the end."""
    made: list[SessionStore] = []

    def _make(**config: Any) -> SessionStore:
        store = SessionStore(create_store_engine(store_url), StoreConfig(**config), clock=clock)
        store.migrate()
        made.append(store)
        return store

    yield _make
    for store in made:
        store.dispose()


@pytest.fixture
def store(make_store: Callable[..., SessionStore]) -> SessionStore:
    return make_store()


@pytest.fixture
def live_store(store_url: str) -> Iterator[SessionStore]:
    """A migrated store on the real clock (the live window accepts the bodies' timestamps of now)."""
    s = SessionStore.from_url(store_url)
    s.migrate()
    yield s
    s.dispose()
