"""``POST /clickstream/batch/release`` racing a fault: PostgreSQL crashes (``pg_ctl stop -m immediate``) or
the API server is SIGKILLed while the release is in flight. Afterwards the batch is released or still
collecting, nothing else, and a retry of the same ``release_id`` answers 200 with the released batch (the
same answer as the first release when that one got through).

To be sure the release is in flight when the fault strikes, a test transaction holds the collecting batch
``FOR SHARE`` (what a registration holds): the release then waits for that lock inside PostgreSQL
(``lock_collecting_for_release``) until the fault. The racing test instead fires the fault a few
milliseconds after the request, at whatever point the release has reached.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from clickstream.store import SessionStore
from tests.support.apiserver import ApiServer
from tests.support.bodies import session_body
from tests.support.faults import kill_process_group, lock_waiters, wait_until
from tests.support.pgcluster import ThrowawayPostgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(150)]


@pytest.fixture
def http(fault_api_server: ApiServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {fault_api_server.token('admin')}"}
    with httpx.Client(base_url=f"{fault_api_server.base_url}/clickstream", headers=headers, timeout=30) as client:
        yield client


def _post_until_answered(http: httpx.Client, route: str, body: dict[str, Any], timeout: float = 15) -> httpx.Response:
    """POST until the answer is not a 503 (nor a refused connection) for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = http.post(route, json=body)
            if answer.status_code != 503:
                return answer
            assert answer.headers.get("Retry-After") == "5", answer.headers
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{route} still unavailable after {timeout} s"
        time.sleep(0.1)


def _collecting_batch(http: httpx.Client, run: str, sessions: int = 3) -> str:
    """Register ``sessions`` sessions; the id of the collecting batch they went to."""
    batch_ids = {
        _post_until_answered(http, "/session", session_body(f"{run}-s{i}")).json()["batch_id"] for i in range(sessions)
    }
    assert len(batch_ids) == 1, batch_ids
    return batch_ids.pop()


def _status(url: str, batch_id: str) -> tuple[str, str | None, int | None]:
    store = SessionStore.from_url(url)
    try:
        info = store.get_batch(batch_id)
        return info.status, info.release_id, info.released_at
    finally:
        store.dispose()


def _release_in_thread(http: httpx.Client, release_id: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def release() -> None:
        try:
            answer = http.post("/batch/release", json={"release_id": release_id})
            outcome["status"], outcome["body"] = answer.status_code, answer.json()
            outcome["retry_after"] = answer.headers.get("Retry-After")
        except httpx.TransportError as err:
            outcome["error"] = f"{type(err).__name__}: {err}"

    thread = threading.Thread(target=release, name="release", daemon=True)
    thread.start()
    return thread, outcome


def _check_retry(http: httpx.Client, url: str, run: str, batch_id: str, release_id: str, first: dict[str, Any]) -> str:
    """The checks after the fault: released or collecting; the retry answers the released batch. Returns the
    state the fault left."""
    state, stored_release_id, _ = _status(url, batch_id)
    assert state in ("collecting", "released"), state
    if state == "released":
        assert stored_release_id == release_id
    if first.get("status") == 200:  # the first release got through: it committed
        assert state == "released" and first["body"]["batch_id"] == batch_id
    retry = _post_until_answered(http, "/batch/release", {"release_id": release_id})
    assert retry.status_code == 200, retry.text
    answer = retry.json()
    assert (answer["release_id"], answer["batch_id"]) == (release_id, batch_id)
    assert _status(url, batch_id) == ("released", release_id, answer["released_at"])
    if first.get("status") == 200:
        assert answer == first["body"]  # the retry answers the original release
    again = _post_until_answered(http, "/batch/release", {"release_id": release_id})
    assert (again.status_code, again.json()) == (200, answer)
    # The batch's sessions are still all there, and the next registration opens a new batch.
    assert (SessionStore.from_url(url).get_batch(batch_id).sessions or 0) >= 3
    after = _post_until_answered(http, "/session", session_body(f"{run}-after"))
    assert after.status_code == 200 and after.json()["batch_id"] != batch_id
    return state


class _BatchShareLock:
    """A transaction holding the collecting batch ``FOR SHARE``, as an in-flight registration does."""

    def __init__(self, url: str, batch_id: str) -> None:
        libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(libpq, connect_timeout=5)
        self.conn.execute("SELECT batch_id FROM cs_batch WHERE batch_id = %s FOR SHARE", (batch_id,))

    def release(self) -> None:
        try:
            self.conn.commit()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


def test_postgres_crash_while_the_release_waits_leaves_the_batch_collecting_and_a_retry_releases_it(
    fault_pg: ThrowawayPostgres, fault_api_server: ApiServer, fault_store_url: str, http: httpx.Client
) -> None:
    run = f"rel-pg-{uuid.uuid4().hex[:8]}"
    release_id = f"release-{run}"
    batch_id = _collecting_batch(http, run)
    lock = _BatchShareLock(fault_store_url, batch_id)
    try:
        thread, first = _release_in_thread(http, release_id)
        assert wait_until(lambda: lock_waiters(fault_pg) >= 1, timeout=10), "the release never waited on the lock"
        fault_pg.halt("immediate")
        thread.join(timeout=20)
        assert not thread.is_alive()
    finally:
        lock.close()
        if fault_pg.postmaster_pid() is None:
            fault_pg.resume()
    assert first.get("status") == 503, first  # the API saw the outage: a 503 to retry, not a 500
    assert first["retry_after"] == "5"
    state = _check_retry(http, fault_store_url, run, batch_id, release_id, first)
    assert state == "collecting"  # it could not have committed: it was waiting for a lock when PostgreSQL died


def test_api_server_killed_while_the_release_waits_then_a_retry_answers_the_released_batch(
    fault_pg: ThrowawayPostgres, fault_api_server: ApiServer, fault_store_url: str, http: httpx.Client
) -> None:
    server = fault_api_server
    run = f"rel-kill-{uuid.uuid4().hex[:8]}"
    release_id = f"release-{run}"
    batch_id = _collecting_batch(http, run)
    lock = _BatchShareLock(fault_store_url, batch_id)
    try:
        thread, first = _release_in_thread(http, release_id)
        assert wait_until(lambda: lock_waiters(fault_pg) >= 1, timeout=10), "the release never waited on the lock"
        kill_process_group(server)
        thread.join(timeout=20)
        assert not thread.is_alive()
        lock.release()  # the orphaned release goes on inside PostgreSQL, without its client
    finally:
        lock.close()
    assert "error" in first, first  # no answer: the server died with the request
    # The orphaned backend ends (rolled back when it finds its client gone, or committed) within seconds.
    assert wait_until(lambda: lock_waiters(fault_pg) == 0, timeout=10)
    server.restart()
    state = _check_retry(http, fault_store_url, run, batch_id, release_id, first)
    print(f"\nrelease cut by the api-server's SIGKILL left the batch {state}")


def test_releases_racing_postgres_crashes_end_released_or_collecting(
    fault_pg: ThrowawayPostgres, fault_api_server: ApiServer, fault_store_url: str, http: httpx.Client
) -> None:
    """No lock this time: PostgreSQL gets SIGQUIT 0 to 30 ms after the request is sent, wherever the release
    has got to (not yet at the database, in its transaction, committed but not yet answered, answered)."""
    outcomes = []
    for delay_s in (0.0, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.012, 0.03):
        run = f"rel-race-{uuid.uuid4().hex[:8]}"
        release_id = f"release-{run}"
        batch_id = _collecting_batch(http, run)
        thread, first = _release_in_thread(http, release_id)
        try:
            time.sleep(delay_s)
            fault_pg.crash()
            thread.join(timeout=20)
            assert not thread.is_alive()
        finally:
            if fault_pg.postmaster_pid() is None:
                fault_pg.resume()
        assert first.get("status") in (200, 503), first  # never a 500, never a lost connection to the API
        if first["status"] == 503:
            assert first["retry_after"] == "5"
        state = _check_retry(http, fault_store_url, run, batch_id, release_id, first)
        outcomes.append((delay_s, first["status"], state))
    print(f"\n(delay s, first answer, state after the crash): {outcomes}")
