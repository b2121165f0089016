"""Fault injection for tests: REST writers that record what was acknowledged, a PostgreSQL that can crash and
come back, an API server that can be SIGKILLed, and a snapshot of what the store holds afterwards.

No pytest in here (like :mod:`~tests.support.pgcluster`), so a benchmark or a script can use it too.

    with fault_postgres() as pg:                       # ThrowawayPostgres with synchronous_commit = on
        ...
        pg.restart("immediate", down_s=1.5)           # a crash and a recovery; same port, same data

    pool = WriterPool(server.base_url, token, clients=8, script=my_script)
    with pool:                                         # threads start; stop() + join() at the end
        ...
    pool.statuses()                                    # Counter of every attempt's status (None: no answer)
    [c for c in pool.calls if c.acknowledged]          # what the API answered 200

    kill_process_group(server)                         # SIGKILL the api-server's process group, reap it
    snapshot = StoreSnapshot.read(url)                 # sessions and events, through SessionStore

Every loop here is bounded in count and in time; every address is loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.pgcluster import ThrowawayPostgres

__all__ = [
    "Attempt",
    "Call",
    "RecordingClient",
    "StoreSnapshot",
    "WriterPool",
    "fault_postgres",
    "kill_process_group",
    "lock_waiters",
    "port_is_free",
    "wait_until",
]

#: Settings of a PostgreSQL that is crashed on purpose. The throwaway defaults turn ``synchronous_commit``
#: off, which lets a crash (``pg_ctl stop -m immediate``) lose transactions that were already answered as
#: committed: a test of "nothing acknowledged is lost" would then fail for the test server's sake. With it
#: on, a commit returns once its WAL is written to the kernel, which survives a PostgreSQL crash (``fsync``
#: stays off: the machine itself does not crash).
CRASH_SAFE_SETTINGS = {"synchronous_commit": "on"}


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass (None).
    Exceptions of ``predicate`` count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------------------------- PostgreSQL


@contextmanager
def fault_postgres(dbname: str = "clickstream_faults", **settings: str) -> Iterator[ThrowawayPostgres]:
    """A private :class:`ThrowawayPostgres` for a fault test (never the session's shared server), with
    :data:`CRASH_SAFE_SETTINGS`; stopped and deleted at the end whatever happens, also when it was left
    halted."""
    pg = ThrowawayPostgres(dbname=dbname, settings={**CRASH_SAFE_SETTINGS, **settings})
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


def lock_waiters(pg: ThrowawayPostgres, dbname: str | None = None) -> int:
    """How many backends of database ``dbname`` (default the server's own) wait on a lock right now."""
    import psycopg
    from sqlalchemy.engine import make_url

    libpq_url = make_url(pg.admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq_url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (dbname or pg.dbname,),
        ).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------- API server


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (a connect is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) != 0


def kill_process_group(server: Any, timeout: float = 20) -> int:
    """SIGKILL an :class:`~tests.support.apiserver.ApiServer`'s whole process group (the server and any worker
    it forked), reap the main process and wait until nothing is left in the group and the port is free.

    Afterwards ``server.running`` is False, so ``server.stop()`` is a no-op and ``server.start()`` /
    ``server.restart()`` bring it back on the same port. Returns the killed process's pid.
    """
    process = server.process
    if process is None:
        raise RuntimeError("the api-server was never started")
    pgid = process.pid  # started with start_new_session=True: its pid is the group's id
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=timeout)

    def group_gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        os.killpg(pgid, signal.SIGKILL)  # a worker that was forking at the kill
        return False

    if not wait_until(group_gone, timeout):
        raise RuntimeError(f"processes of group {pgid} survived SIGKILL for {timeout} s")
    if not wait_until(lambda: port_is_free(server.port), timeout):
        raise RuntimeError(f"port {server.port} still accepts connections after the api-server was killed")
    return pgid


# --------------------------------------------------------------------------------------------- REST writers


@dataclass
class Attempt:
    """One HTTP request: its status (None when no answer came: a transport error), ``Retry-After``."""

    status: int | None
    started: float  # time.monotonic()
    elapsed: float
    retry_after: str | None = None
    error: str | None = None  # the transport error, ``"<type>: <message>"``
    text: str = ""  # the answer's body (first 500 characters) when it is not a 200


@dataclass
class Call:
    """A logical write: one route and one body, sent once or retried with the same body."""

    client: int
    route: str
    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    answer: Any = None  # the JSON of the 200, if one came
    gave_up: bool = False

    @property
    def final(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def acknowledged(self) -> bool:
        """Answered 200 (by its last attempt)."""
        return self.final is not None and self.final.status == 200

    @property
    def unanswered(self) -> bool:
        """No attempt got any answer: the request may or may not have reached the store."""
        return bool(self.attempts) and all(a.status is None for a in self.attempts)


class RecordingClient:
    """A writer's HTTP client: POSTs JSON to ``<base_url>/clickstream<route>`` and records every attempt.

    :param retry_503: retry a 503 with the same body (the client's duty: every write is idempotent) after
        ``retry_pause_s`` (shorter than the server's ``Retry-After`` of 5 s, so tests stay short), until
        ``deadline`` (a ``time.monotonic()`` value). Other statuses are final. Transport errors are final
        too: they are what the caller wants to observe.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        index: int,
        record: Callable[[Call], None],
        *,
        deadline: float,
        stop: threading.Event,
        retry_503: bool = True,
        retry_pause_s: float = 0.2,
        timeout_s: float = 15.0,
    ) -> None:
        if not base_url.startswith(("http://127.0.0.1:", "http://localhost:")):
            raise ValueError(f"fault tests talk to loopback servers only, not {base_url!r}")
        self.index = index
        self.deadline = deadline
        self.stop = stop
        self.retry_503 = retry_503
        self.retry_pause_s = retry_pause_s
        self._record = record
        self._http = httpx.Client(
            base_url=f"{base_url}/clickstream",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    @property
    def stopping(self) -> bool:
        """The pool was told to stop, or its deadline passed: a script ends its loop."""
        return self.stop.is_set() or time.monotonic() >= self.deadline

    def post(self, route: str, body: dict[str, Any], *, max_attempts: int = 1000) -> Call:
        """Send ``body`` to ``route``; with ``retry_503``, again after each 503 (bounded by the deadline and
        ``max_attempts``). Returns the :class:`Call`, also recorded in the pool."""
        call = Call(self.index, route, body)
        self._record(call)
        for _ in range(max_attempts):
            started = time.monotonic()
            try:
                answer = self._http.post(route, json=body)
            except httpx.HTTPError as err:
                call.attempts.append(
                    Attempt(None, started, time.monotonic() - started, error=f"{type(err).__name__}: {err}")
                )
                return call
            attempt = Attempt(
                answer.status_code,
                started,
                time.monotonic() - started,
                retry_after=answer.headers.get("Retry-After"),
                text="" if answer.status_code == 200 else answer.text[:500],
            )
            call.attempts.append(attempt)
            if answer.status_code == 200:
                call.answer = answer.json()
                return call
            if answer.status_code != 503 or not self.retry_503:
                return call
            if time.monotonic() + self.retry_pause_s >= self.deadline:
                break
            time.sleep(self.retry_pause_s)
        call.gave_up = True
        return call

    def close(self) -> None:
        self._http.close()


#: A writer's work: called once per client thread with its client; loops until ``client.stopping``.
Script = Callable[[RecordingClient], None]


class WriterPool:
    """``clients`` threads, each running ``script`` with its own :class:`RecordingClient`; every call is
    recorded in :attr:`calls` (in the order they started).

    Bounded: the threads stop at :meth:`stop` or after ``duration_s``, whichever comes first; :meth:`join`
    waits at most ``join_timeout_s`` and raises if a thread is still alive. An exception in a script is kept
    in :attr:`errors` (and stops that thread only).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        clients: int,
        script: Script,
        duration_s: float = 60.0,
        retry_503: bool = True,
        retry_pause_s: float = 0.2,
        timeout_s: float = 15.0,
        join_timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.clients = clients
        self.script = script
        self.duration_s = duration_s
        self.retry_503 = retry_503
        self.retry_pause_s = retry_pause_s
        self.timeout_s = timeout_s
        self.join_timeout_s = join_timeout_s
        self.calls: list[Call] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _run(self, index: int, deadline: float) -> None:
        client = RecordingClient(
            self.base_url,
            self.token,
            index,
            self._record,
            deadline=deadline,
            stop=self._stop,
            retry_503=self.retry_503,
            retry_pause_s=self.retry_pause_s,
            timeout_s=self.timeout_s,
        )
        try:
            self.script(client)
        except BaseException as err:
            with self._lock:
                self.errors.append(err)
        finally:
            client.close()

    def start(self) -> WriterPool:
        deadline = time.monotonic() + self.duration_s
        self._threads = [
            threading.Thread(target=self._run, args=(i, deadline), name=f"fault-writer-{i}", daemon=True)
            for i in range(self.clients)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Ask the scripts to end their loops (a request in progress finishes, or times out)."""
        self._stop.set()

    def join(self) -> None:
        deadline = time.monotonic() + self.join_timeout_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"writer threads still running after {self.join_timeout_s} s: {alive}")

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> WriterPool:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self.join()

    # -- what happened

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def attempts(self) -> list[Attempt]:
        return [a for c in self.snapshot() for a in c.attempts]

    def statuses(self) -> Counter:
        """How many attempts ended with each status (None: no answer)."""
        return Counter(a.status for a in self.attempts())

    def acknowledged(self, route: str | None = None) -> list[Call]:
        return [c for c in self.snapshot() if c.acknowledged and (route is None or c.route == route)]

    def count_ok(self) -> int:
        return sum(1 for a in self.attempts() if a.status == 200)


# --------------------------------------------------------------------------------------------- the store


@dataclass
class StoreSnapshot:
    """What a store holds, read through :class:`clickstream.store.SessionStore` (batches, their sessions and
    each session's events), plus every ``(session_id, event_id)`` of the events table, which also holds the
    events of sessions that never registered."""

    #: session_id -> {"batch_id", "session_number", "events": [event_id, ...]} (as SessionStore pages them)
    sessions: dict[str, dict[str, Any]]
    #: batch_id -> status
    batches: dict[str, str]
    #: (session_id, event_id) pairs of the events table (registered sessions or not)
    event_keys: set[tuple[str, str]]
    #: rows of the events table (equals len(event_keys) unless a key is stored twice)
    event_rows: int

    @classmethod
    def read(cls, url: str, *, page_size: int = 1000) -> StoreSnapshot:
        import sqlalchemy as sa

        from clickstream.store import SessionStore

        store = SessionStore.from_url(url)
        try:
            batches: dict[str, str] = {b.batch_id: b.status for b in store.list_batches(limit=10_000)}
            sessions: dict[str, dict[str, Any]] = {}
            duplicates: list[str] = []
            for batch_id in batches:
                for page in store.iter_batch_pages(batch_id, page_size=page_size):
                    for s in page:
                        if s["session_id"] in sessions:
                            duplicates.append(s["session_id"])
                        sessions[s["session_id"]] = {
                            "batch_id": batch_id,
                            "session_number": s["session_number"],
                            "events": [e["event_id"] for e in s["events"]],
                        }
            if duplicates:
                raise AssertionError(f"sessions stored more than once: {duplicates[:10]}")
            with store.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT session_id, event_id FROM cs_event")).all()
        finally:
            store.dispose()
        return cls(sessions, batches, {(r[0], r[1]) for r in rows}, len(rows))
