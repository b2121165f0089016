"""The store's invariants under concurrency, on a real PostgreSQL (``pg_url``).

Each test runs real threads, each with its own pooled connection, against one database. They are written
to *fail* when the locking in the SQL is wrong: e.g. without ``FOR SHARE`` on the collecting batch in
``insert_session``, :class:`TestReleaseWhileRegistering` finds sessions committed into a batch after its
release. SQLite needs no such tests: its writers are serialised by ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from clickstream.models import RegisterResult, ReleaseResult
from clickstream.store import NotFound, SessionStore, now_ms
from tests.support import MIGRATIONS

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url: str) -> Iterator[SessionStore]:
    """One migrated store whose pool has room for every thread of a test."""
    store = SessionStore.from_url(pg_url, pool_size=24, max_overflow=8)
    store.migrate()
    yield store
    store.dispose()


def _session(session_id: str) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "search_results": [{"object_id": "a"}, {"object_id": "b"}],
        "created_at": now_ms(),
    }


def _run_together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in 0..n-1 on n threads released at the same instant; re-raise the first error."""
    barrier = threading.Barrier(n)

    def _go(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return [f.result() for f in [pool.submit(_go, i) for i in range(n)]]


def _batch_listing(store: SessionStore, batch_id: str) -> list[str]:
    """Session ids of a batch by keyset paging (small pages, so paging itself is exercised)."""
    ids: list[str] = []
    after = 0
    while True:
        page = store.get_batch_sessions(batch_id, after_number=after, limit=7, events_limit=0)
        if not page.sessions:
            return ids
        numbers = [s.session_number for s in page.sessions]
        assert numbers == sorted(numbers) and numbers[0] > after
        ids.extend(s.session_id for s in page.sessions)
        assert page.last_number is not None
        after = page.last_number


class TestReleaseWhileRegistering:
    """Invariants 1-3: registrations racing a stream of releases."""

    REGISTRARS = 8
    SESSIONS_EACH = 60

    def test_no_session_lands_in_a_batch_after_its_release(self, store: SessionStore) -> None:
        registered: dict[str, RegisterResult] = {}
        releases: list[tuple[ReleaseResult, list[str]]] = []  # (result, listing taken right after)
        done = threading.Event()
        lock = threading.Lock()
        start = threading.Barrier(self.REGISTRARS + 1)

        def _register(worker: int) -> None:
            start.wait()
            for i in range(self.SESSIONS_EACH):
                sid = f"w{worker}-s{i}"
                result = store.register_session(_session(sid))
                store.push_events(sid, [{"event_id": "e1", "object_id": "a", "created_at": now_ms()}])
                with lock:
                    registered[sid] = result

        def _release() -> None:
            start.wait()
            k = 0
            while not done.is_set():
                try:
                    result = store.release_batch(f"rel-{k}")
                except NotFound:  # nothing collecting at this instant
                    continue
                releases.append((result, _batch_listing(store, result.batch_id)))
                k += 1

        with ThreadPoolExecutor(self.REGISTRARS + 1) as pool:
            releaser = pool.submit(_release)
            workers = [pool.submit(_register, w) for w in range(self.REGISTRARS)]
            for f in workers:
                f.result()
            done.set()
            releaser.result()
        try:
            final = store.release_batch("final")
        except NotFound:  # the releaser happened to release the last batch
            pass
        else:
            releases.append((final, _batch_listing(store, final.batch_id)))

        assert len(releases) >= 3, "the releaser should have interleaved with the registrations"
        all_ids = set(registered)
        assert len(all_ids) == self.REGISTRARS * self.SESSIONS_EACH

        # Invariant 2, strong form: the listing taken right after a release is final.
        violations = []
        for result, listing in releases:
            now_listed = _batch_listing(store, result.batch_id)
            if now_listed != listing:
                violations.append((result.batch_id, sorted(set(now_listed) - set(listing))))
        assert violations == [], f"sessions added to batches after their release: {violations}"

        # Batch ids sort by creation: each release closed the one batch collecting, created after the last release.
        assert sorted(r.batch_id for r, _ in releases) == [r.batch_id for r, _ in releases]

        # Invariant 1: every session in exactly one batch, the one its registration answered.
        owner: dict[str, str] = {}
        for result, listing in releases:
            assert len(listing) == len(set(listing)), "paging returned a session twice"
            for sid in listing:
                assert sid not in owner, f"{sid} is in two batches"
                owner[sid] = result.batch_id
        assert set(owner) == all_ids
        assert {sid: r.batch_id for sid, r in registered.items()} == owner

        # Invariant 2 in SQL: no member of a batch registered after the batch's released_at. (The release reads
        # its clock only after every registration holding the batch has committed.)
        with store.engine.connect() as conn:
            late = conn.execute(
                sa.text(
                    "SELECT s.session_id, s.batch_id, s.registered_at, b.released_at FROM cs_session s "
                    "JOIN cs_batch b ON b.batch_id = s.batch_id WHERE s.registered_at > b.released_at"
                )
            ).all()
            unreleased = conn.execute(sa.text("SELECT count(*) FROM cs_batch WHERE status <> 'released'")).scalar()
        assert unreleased == 0
        assert late == [], f"sessions registered after their batch's release: {late}"
        # every session's events arrived and belong to it
        assert all(len(store.get_session(sid).events) == 1 for sid in list(all_ids)[:: self.SESSIONS_EACH])


class TestConcurrentRetriesOfOneRelease:
    """Invariant 4: many simultaneous retries of one release_id release one batch and agree."""

    ROUNDS = 6

    def test_retries_release_exactly_one_batch_and_answer_the_same(self, store: SessionStore) -> None:
        for round_ in range(self.ROUNDS):  # the race is short: several rounds make a lost answer show up
            store.register_session(_session(f"s{round_}"))

            def _release(_i: int, round_: int = round_) -> ReleaseResult:
                return store.release_batch(f"release-{round_}")

            results = _run_together(16, _release)
            assert all(r == results[0] for r in results)
            assert results[0].release_id == f"release-{round_}"
            released = store.list_batches(status="released")
            assert len(released) == round_ + 1
            assert released[0].batch_id == results[0].batch_id

    def test_retries_racing_a_new_batch_never_release_it(self, store: SessionStore) -> None:
        for round_ in range(self.ROUNDS):
            store.register_session(_session(f"s{round_}"))

            def _work(i: int, round_: int = round_) -> Any:
                if i % 4 == 0:
                    return store.register_session(_session(f"late-{round_}-{i}"))
                return store.release_batch(f"release-{round_}")

            outcomes = _run_together(16, _work)
            releases = {(o.release_id, o.batch_id, o.released_at) for o in outcomes if isinstance(o, ReleaseResult)}
            assert len(releases) == 1
            assert len(store.list_batches(status="released")) == round_ + 1


class TestConcurrentClaims:
    def test_workers_never_share_a_mark_and_together_claim_all(self, store: SessionStore) -> None:
        total = 150
        for i in range(total):
            store.register_session(_session(f"s{i:03d}"))
        for i in range(total):
            store.push_events(f"s{i:03d}", [{"event_id": "e", "object_id": "a", "created_at": now_ms()}])
        assert store.mark_batch_for_improvement(store.get_session("s000").batch_id).marked == total

        def _worker(_i: int) -> list[str]:
            mine: list[str] = []
            while batch := store.claim_improvement_marks(limit=3):
                mine.extend(m.session_id for m in batch)
            return mine

        claimed = _run_together(6, _worker)
        counts = Counter(sid for mine in claimed for sid in mine)
        assert [sid for sid, n in counts.items() if n > 1] == []
        assert len(counts) == total
        assert sum(1 for mine in claimed if mine) > 1, "more than one worker should have had work"


class TestConcurrentRegistrationOfOneSession:
    def test_exactly_one_registers_and_the_rest_see_it_registered(self, store: SessionStore) -> None:
        body = _session("same")
        results = _run_together(16, lambda _i: store.register_session(body))
        statuses = Counter(r.status for r in results)
        assert statuses == {"registered": 1, "already_registered": 15}
        assert len({(r.batch_id, r.session_number) for r in results}) == 1
        assert len(store.list_batches()) == 1


class TestConcurrentMigrations:
    def test_two_migrations_at_once_both_succeed_and_apply_once(self, pg_url: str) -> None:
        stores = [SessionStore.from_url(pg_url) for _ in range(4)]
        try:
            applied = _run_together(4, lambda i: stores[i].migrate())
            assert sorted(applied, key=len) == [[], [], [], MIGRATIONS]
            with stores[0].engine.connect() as conn:
                versions = conn.execute(sa.text("SELECT version FROM cs_schema_migrations")).scalars().all()
            assert versions == MIGRATIONS
            assert stores[0].register_session(_session("s1")).status == "registered"
        finally:
            for s in stores:
                s.dispose()


class TestErasureRacingWrites:
    def test_events_pushed_while_the_user_is_erased_never_survive_the_erasure(self, store: SessionStore) -> None:
        # Writers push events for the user's session before, during and after the erasure. Each push either
        # lands before the erasure (and is erased with it) or is refused after it (tombstone): none remains.
        store.register_session({**_session("victim"), "user_id": "u1"})
        stop = threading.Event()
        refused: Counter[int] = Counter()

        def push(writer: int) -> None:
            n = 0
            while not stop.is_set() and n < 2000:
                result = store.push_events("victim", [{"event_id": f"w{writer}-{n}", "object_id": "a"}])
                refused[writer] += result.erased
                n += 1

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(push, w) for w in range(6)]
            threading.Event().wait(0.3)
            erased = store.erase_user("u1")
            threading.Event().wait(0.3)
            stop.set()
            for f in futures:
                f.result()
        assert erased.tombstones == 1 and erased.events > 0
        assert sum(refused.values()) > 0, "no push came after the erasure: the race was not exercised"
        with store.engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM cs_event WHERE session_id = 'victim'")).scalar_one()
        assert left == 0
