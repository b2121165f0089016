"""SessionStore itself (store/session_store.py): a store from a URL, migrated, on the real clock."""

from __future__ import annotations

from clickstream.store import SessionStore, now_ms
from tests.store.helpers import a_session
from tests.support import MIGRATIONS


class TestFromUrl:
    def test_from_url_migrates_and_serves_with_the_real_clock(self, store_url: str) -> None:
        store = SessionStore.from_url(store_url)
        try:
            assert store.migrate() == MIGRATIONS
            now = now_ms()
            registered = store.register_session(a_session("s1", created_at=now))
            assert registered.batch_id is not None
            assert abs(store.get_batch(registered.batch_id).created_at - now) < 60_000
        finally:
            store.dispose()
