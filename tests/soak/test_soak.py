"""Soak: everything at once against a real ``airflow api-server`` (2 workers) on PostgreSQL, for about 90 s.

At the same time: 8 bulk writers through the client (:class:`clickstream.client.BulkWriter`), 4 readers paging
released batches, a release every 20-30 s over REST followed by its extraction (``ExtractBatchOperator``, in
process), an erasure over REST every 20 s, a retention purge of the oldest released batch (after it was
extracted), and one PostgreSQL crash and restart in the middle. Before the writers start, the readers page a
seeded released batch alone (the quiet run, after a few seconds of warm-up) for the reference read latency.

At the end it checks, and prints as a table (the terminal summary's ``soak`` section):

* every item a 200 acknowledged is in exactly one batch, or erased (its session id tombstoned), or in the
  purged batch (a session of the purged batch erased before the purge counts as erased); no stored event
  is outside a batch; nothing is stored twice; no item was rejected;
* every extracted dataset equals what the store holds for its batch: the same sessions, less those erased
  after the extraction; every event the store holds from before the release (``event_seq`` up to the
  release's watermark), and only events the store holds or erased;
* no answer was a 500 (nor any 5xx but 503); every 503 carried ``Retry-After`` and was retried to success
  (no writer left anything undelivered);
* the API server's resident memory (its process group) grew by at most 10 % over the second half;
* the p99 of the readers' page requests during the run is within 4x the quiet run's p99.

How the read latency is measured. The criterion is about the API server's read latency under mixed load,
so the readers (:mod:`tests.soak.readers`) run in a process of their own, in the quiet run as under load:
threads of the test process would time their wait for its GIL too (held by the 8 writer threads and the
in-process extraction), client-side contention that leaves the p50 alone and blows up the tail. Their
answers come back to the test and are checked with everyone else's (statuses, Retry-After on 503). The reads
that overlap the PostgreSQL outage window (from the restart's start to ``OUTAGE_MARGIN_S`` after PostgreSQL
accepts connections again) are left out of the p99, and their number printed: the outage is checked on its
own (every 503 carried Retry-After and was retried to success); the p99 is about the server under load.
"""

from __future__ import annotations

import functools
import json
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clickstream.client import BulkWriter, ClickstreamClient, ClickstreamError, UnavailableError
from clickstream.dataset.readers import read_table
from clickstream.store import SessionStore
from tests.soak.readers import ReaderProcess, Recorder
from tests.support import report
from tests.support.apiserver import ApiServer
from tests.support.bodies import click, session_body
from tests.support.faults import StoreSnapshot
from tests.support.pgcluster import ThrowawayPostgres

pytestmark = [pytest.mark.soak, pytest.mark.postgres, pytest.mark.timeout(420)]

RUN_S = 90.0
WARM_UP_S = 4.0  # reads before the quiet run, not measured: the first requests of each worker are slow
QUIET_S = 10.0
WRITERS = 8
READERS = 4
RELEASE_EVERY_S = (20.0, 30.0)
ERASE_EVERY_S = 20.0
RESTART_AT = 0.4  # of RUN_S: PostgreSQL crashes and comes back
PURGE_AT = 0.6  # of RUN_S: the oldest released (and extracted) batch is purged
OUTAGE_S = 1.5
SEED_SESSIONS = 300
EVENTS_PER_SESSION = 3
USERS_PER_WRITER = 6
WRITE_PAUSE_S = 0.05  # a writer adds a session and its events every 50 ms: ~160 sessions/s in all
OUTAGE_MARGIN_S = 2.0  # reads until this long after PostgreSQL is back belong to the outage window
MAX_GROWTH = 0.10
MAX_P99_RATIO = 4.0
TITLE = "soak"


# ------------------------------------------------------------------------------------------- recording


def _retrying(fn: Callable[[], Any], *, timeout: float = 60.0, what: str = "") -> Any:
    """``fn()`` again after a 503 or a transport error (the client's duty), for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (UnavailableError, httpx.TransportError) as err:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what} still failing after {timeout} s: {err!r}") from err
            time.sleep(0.3)


def _group_rss_kb(pgid: int) -> int:
    """Resident memory (kB) of every process in process group ``pgid`` (the api-server and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else 0.0)


# ---------------------------------------------------------------------------------------------- actors


class Writers:
    """``WRITERS`` threads, each with its own client and BulkWriter: a session and its events every 50 ms.
    What they add is recorded; what is acknowledged is what was added minus what a writer could not
    deliver (checked to be nothing)."""

    def __init__(self, server: ApiServer, token: str, run: str, answers: list) -> None:
        self.server, self.token, self.run, self.answers = server, token, run, answers
        self.sessions: dict[str, str] = {}  # session_id -> user_id
        self.events: set[tuple[str, str]] = set()
        self.writers: list[BulkWriter] = []
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def users(self) -> list[str]:
        with self._lock:
            return sorted(set(self.sessions.values()))

    def write(self, writer: BulkWriter, prefix: str, n: int | None, index: int) -> None:
        i = 0
        while (n is None and not self.stop.is_set()) or (n is not None and i < n):
            sid = f"{prefix}-{i}"
            user = f"{self.run}-u{index}-{i % USERS_PER_WRITER}"
            events = [click(f"e{k}", object_id=f"obj-{k % 2 + 1}") for k in range(EVENTS_PER_SESSION)]
            with self._lock:
                self.sessions[sid] = user
                self.events.update((sid, e["event_id"]) for e in events)
            writer.add_session(session_body(sid, user_id=user))
            writer.add_events(sid, events)
            i += 1
            if n is None:
                time.sleep(WRITE_PAUSE_S)

    def bulk_writer(self) -> BulkWriter:
        client = ClickstreamClient(self.server.base_url, token=self.token, transport=Recorder(self.answers))
        writer = BulkWriter(client, max_items=400, max_age_s=0.5, max_retry_s=120, backoff_max_s=2.0, close_client=True)
        self.writers.append(writer)
        return writer

    def seed(self, n: int) -> None:
        with self.bulk_writer() as writer:
            self.write(writer, f"{self.run}-seed", n, WRITERS)

    def start(self) -> None:
        def run(index: int) -> None:
            try:
                with self.bulk_writer() as writer:
                    self.write(writer, f"{self.run}-w{index}", None, index)
            except BaseException as err:  # kept, checked at the end
                self.failures.append(err)

        self._threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(WRITERS)]
        for t in self._threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(180)
        assert not any(t.is_alive() for t in self._threads), "a writer did not finish"


# ------------------------------------------------------------------------------------------------ test


@pytest.fixture
def extract_env(soak_pg: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", soak_pg.url)
    yield


def _extract(batch_id: str, base: Path) -> dict[str, Any]:
    from clickstream.operators import ExtractBatchOperator

    def run() -> dict[str, Any]:
        try:
            return ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(base)).execute({})
        except ClickstreamError:
            raise
        except Exception as err:  # the store was unavailable (the restart): a retry, as Airflow would
            raise UnavailableError(503, str(err)) from err

    return _retrying(run, what=f"extraction of {batch_id}")


def test_soak_everything_at_once(
    soak_server: ApiServer, soak_pg: ThrowawayPostgres, extract_env: None, tmp_path: Path
) -> None:
    run = f"soak{uuid.uuid4().hex[:6]}"
    token = soak_server.token("admin")
    answers: list[tuple[str, int | None, str | None]] = []
    datasets = tmp_path / "datasets"
    control = ClickstreamClient(soak_server.base_url, token=token, transport=Recorder(answers))
    store = SessionStore.from_url(soak_pg.url)
    writers = Writers(soak_server, token, run, answers)
    readers = ReaderProcess(soak_server.base_url, token, READERS)
    released: list[dict[str, Any]] = []  # {batch_id, release_id, t, extracted}
    erased_users: list[str] = []
    purged: dict[str, set[str]] = {}  # batch_id -> its session ids (from its dataset)
    rss: list[tuple[float, int]] = []
    events_log: list[str] = []
    outage_window = (0.0, 0.0)  # time.monotonic() of the restart's start, of its end + OUTAGE_MARGIN_S

    def release(release_id: str) -> None:
        result = _retrying(lambda: control.release_batch(release_id), what="release")
        summary = _extract(result.batch_id, datasets)
        released.append({"batch_id": result.batch_id, "release_id": release_id, "summary": summary})
        readers.add_batch(result.batch_id)

    try:
        # --- the seed and the quiet run
        writers.seed(SEED_SESSIONS)
        release(f"{run}-seed")
        readers.start()
        time.sleep(WARM_UP_S)
        warm_up = readers.stop()
        readers.start()
        time.sleep(QUIET_S)
        quiet_run = readers.stop()
        quiet = [seconds for _, seconds in quiet_run["reads"]]
        assert len(quiet) > 20, f"the quiet run read only {len(quiet)} pages"

        # --- everything at once
        writers.start()
        readers.start()
        started = time.monotonic()
        next_release = started + random.uniform(*RELEASE_EVERY_S)
        next_erase = started + ERASE_EVERY_S
        restart_at, purge_at = started + RESTART_AT * RUN_S, started + PURGE_AT * RUN_S
        restarted = purge_done = False
        n_release = 0
        while (now := time.monotonic()) < started + RUN_S:
            rss.append((now - started, _group_rss_kb(soak_server.process.pid)))  # type: ignore[union-attr]
            if not restarted and now >= restart_at:
                outage_start = time.monotonic()
                outage = soak_pg.restart("immediate", down_s=OUTAGE_S)
                outage_window = (outage_start, time.monotonic() + OUTAGE_MARGIN_S)
                events_log.append(f"PostgreSQL restart at {now - started:.0f} s: down {outage:.1f} s")
                restarted = True
            elif now >= next_release:
                n_release += 1
                release(f"{run}-r{n_release}")
                events_log.append(f"release {n_release} at {now - started:.0f} s, extracted")
                next_release = time.monotonic() + random.uniform(*RELEASE_EVERY_S)
            elif now >= next_erase:
                users = writers.users()
                user = random.choice([u for u in users if u not in erased_users] or users)
                result = _retrying(functools.partial(control.erase_user, user), what="erasure")
                erased_users.append(user)
                events_log.append(f"erasure of {user} at {now - started:.0f} s: {result.sessions} sessions")
                next_erase = time.monotonic() + ERASE_EVERY_S
            elif not purge_done and now >= purge_at:
                oldest = released[0]["batch_id"]
                root = datasets / oldest
                assert (root / "_manifest.json").is_file(), "retention purges only extracted batches"
                purged[oldest] = set(read_table(root, "sessions")["session_id"])
                result = _retrying(functools.partial(store.purge_batch, oldest, chunk_sessions=200), what="purge")
                readers.remove_batch(oldest)
                events_log.append(f"purge of {oldest} at {now - started:.0f} s: {result.sessions} sessions")
                purge_done = True
            time.sleep(1.0)
        elapsed = time.monotonic() - started
        loaded_run = readers.stop()
        writers.finish()
    finally:
        readers.close()
        writers.stop.set()
        control.close()
    for part in (warm_up, quiet_run, loaded_run):  # the readers' answers are checked with everyone else's
        answers.extend(part["answers"])
    loaded: list[float] = []  # the reads under load, less those overlapping the outage window
    in_outage = 0
    for t0, seconds in loaded_run["reads"]:
        if t0 < outage_window[1] and t0 + seconds > outage_window[0]:
            in_outage += 1
        else:
            loaded.append(seconds)

    # --- what the store holds
    snapshot = StoreSnapshot.read(soak_pg.url)
    with store.engine.connect() as conn:
        tombstoned = set(conn.execute(sa.text("SELECT session_id FROM cs_erased_session")).scalars())
        on_time = {
            (r.batch_id, r.session_id, r.event_id)
            for r in conn.execute(
                sa.text(
                    "SELECT s.batch_id, e.session_id, e.event_id FROM cs_event e "
                    "JOIN cs_session s ON s.session_id = e.session_id JOIN cs_batch b ON b.batch_id = s.batch_id "
                    "WHERE b.status = 'released' AND e.event_seq <= b.released_event_seq"
                )
            )
        }
    store.dispose()
    # the purged batch's sessions, less those erased (after the extraction, before the purge): those count as erased
    purged_ids = (set().union(*purged.values()) if purged else set()) - tombstoned

    problems: list[str] = []
    # acknowledged = added, less what a writer could not deliver (checked to be nothing)
    undelivered = sum(len(b["sessions"]) + len(b["events"]) for w in writers.writers for b in w.undelivered)
    rejected = [r for w in writers.writers for r in w.rejected]
    if writers.failures or undelivered or rejected:
        problems.append(f"writers: {writers.failures[:3]}, {undelivered} undelivered, rejected {rejected[:3]}")
    where: Counter[str] = Counter()
    for sid, user in writers.sessions.items():
        places = [sid in snapshot.sessions, sid in tombstoned, sid in purged_ids]
        if sum(places) != 1:
            problems.append(f"session {sid} (user {user}): in store/erased/purged = {places}")
        elif sid in tombstoned and user not in erased_users:
            problems.append(f"session {sid} tombstoned but its user {user} was never erased")
        where[("stored", "erased", "purged")[places.index(True)] if sum(places) == 1 else "lost"] += 1
    lost_events = [
        k for k in writers.events if k not in snapshot.event_keys and k[0] not in tombstoned and k[0] not in purged_ids
    ]
    if lost_events:
        problems.append(f"{len(lost_events)} acknowledged events lost, e.g. {lost_events[:3]}")
    orphans = [k for k in snapshot.event_keys if k[0] not in snapshot.sessions]
    if orphans:
        problems.append(f"{len(orphans)} stored events outside every batch, e.g. {orphans[:3]}")
    if snapshot.event_rows != len(snapshot.event_keys):
        problems.append(f"events stored twice: {snapshot.event_rows} rows, {len(snapshot.event_keys)} keys")

    # --- datasets against the store
    in_datasets: Counter[str] = Counter()
    for rel in released:
        batch_id = rel["batch_id"]
        root = datasets / batch_id
        ds_sessions = set(read_table(root, "sessions")["session_id"])
        ds_events_table = read_table(root, "events")
        ds_events = set(zip(ds_events_table["session_id"], ds_events_table["event_id"], strict=True))
        in_datasets.update(ds_sessions)
        if batch_id in purged:
            continue  # its dataset is what was purged (compared above: purged_ids come from it)
        held = {sid for sid, s in snapshot.sessions.items() if s["batch_id"] == batch_id}
        if held != ds_sessions - tombstoned:
            problems.append(
                f"dataset {batch_id}: {len(ds_sessions - tombstoned - held)} sessions not in the store, "
                f"{len(held - ds_sessions)} store sessions not in the dataset"
            )
        held_events = {(sid, e) for sid in held for e in snapshot.sessions[sid]["events"]}
        early = {(sid, e) for b, sid, e in on_time if b == batch_id}
        if not early <= ds_events:
            problems.append(f"dataset {batch_id}: {len(early - ds_events)} events from before the release missing")
        extra = {k for k in ds_events - held_events if k[0] not in tombstoned}
        if extra:
            problems.append(f"dataset {batch_id}: {len(extra)} events the store does not hold")
    twice = [sid for sid, n in in_datasets.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} sessions in two datasets, e.g. {twice[:3]}")

    # --- answers
    statuses = Counter(status for _, status, _ in answers)
    no_retry_after = sum(1 for _, status, ra in answers if status == 503 and not ra)
    bad = {s: n for s, n in statuses.items() if s is not None and s >= 500 and s != 503}
    if bad:
        problems.append(f"answers 5xx other than 503: {bad}")
    if no_retry_after:
        problems.append(f"{no_retry_after} answers 503 without Retry-After")
    unexpected = {s: n for s, n in statuses.items() if s not in (200, 503, 404, None)}
    if unexpected:
        problems.append(f"unexpected statuses: {unexpected}")

    # --- memory and latency
    half = [kb for t, kb in rss if t >= elapsed / 2]
    mid_kb = statistics.median(half[:3])
    end_kb = statistics.median(half[-3:])
    growth = end_kb / mid_kb - 1
    if growth > MAX_GROWTH:
        problems.append(f"api-server memory grew {100 * growth:.1f} % over the second half")
    p99_quiet, p99_run = _p99(quiet), _p99(loaded)
    if p99_run > MAX_P99_RATIO * p99_quiet:
        problems.append(f"read p99 {1000 * p99_run:.0f} ms > {MAX_P99_RATIO}x the quiet {1000 * p99_quiet:.0f} ms")
    reader_failures = warm_up["failures"] + quiet_run["failures"] + loaded_run["failures"]
    if reader_failures:
        problems.append(f"readers failed: {reader_failures[:3]}")

    figures = [
        f"run {elapsed:.0f} s: {WRITERS} writers, {READERS} readers, {len(released)} releases (seed included), "
        f"{len(erased_users)} erasures, {len(purged)} purge, 1 PostgreSQL restart",
        *events_log,
        f"sessions acknowledged {len(writers.sessions)}: stored {where['stored']}, erased {where['erased']}, "
        f"purged {where['purged']}, lost {where['lost']}",
        f"events acknowledged {len(writers.events)}: lost {len(lost_events)}; stored rows {snapshot.event_rows}; "
        f"outside a batch {len(orphans)}",
        f"bulk requests {sum(w.requests for w in writers.writers)}, retries {sum(w.retries for w in writers.writers)}, "
        f"undelivered {undelivered}, rejected {len(rejected)}",
        f"answers {dict(sorted(statuses.items(), key=str))}; 503 without Retry-After {no_retry_after}",
        f"datasets {len(released)} checked against the store ({len(purged)} purged after extraction)",
        f"api-server RSS (2 workers) {rss[0][1] / 1024:.0f} MiB at start, {mid_kb / 1024:.0f} MiB at half, "
        f"{end_kb / 1024:.0f} MiB at end: {100 * growth:+.1f} % over the second half (limit {100 * MAX_GROWTH:.0f} %)",
        f"readers: {READERS} threads in a separate process (their timings free of the test process's GIL)",
        f"read p50 quiet {1000 * statistics.median(quiet):.1f} ms, "
        f"under load {1000 * statistics.median(loaded):.1f} ms",
        f"read p99 quiet {1000 * p99_quiet:.1f} ms ({len(quiet)} pages), under load {1000 * p99_run:.1f} ms "
        f"({len(loaded)} pages, {loaded_run['unavailable']} answered 503 or no answer, "
        f"{loaded_run['not_found']} purged; {in_outage} reads during the outage window not counted): "
        f"{p99_run / p99_quiet:.2f}x (limit {MAX_P99_RATIO:.0f}x)",
        f"result: {'PASS' if not problems else 'FAIL: ' + json.dumps(problems[:10])}",
    ]
    for line in figures:
        report.line(TITLE, line)
    assert not problems, "\n".join(problems[:20])
