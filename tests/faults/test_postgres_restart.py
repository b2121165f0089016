"""PostgreSQL crashes (``pg_ctl stop -m immediate``) and comes back while 8 clients write through a real
``airflow api-server``: the API answers 503 with ``Retry-After`` during the outage, never a 500, serves again
without a restart of its own, and nothing it acknowledged is lost or stored twice.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.apiserver import ApiServer
from tests.support.bodies import click, session_body
from tests.support.faults import RecordingClient, StoreSnapshot, WriterPool, wait_until
from tests.support.pgcluster import ThrowawayPostgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(120)]

CLIENTS = 8
#: Operations (a registration, its events, a bulk request) per client at most; the test stops them sooner.
MAX_ROUNDS = 500
EVENTS_PER_SESSION = 3
BULK_SESSIONS = 2
#: How long PostgreSQL stays down.
OUTAGE_S = 1.5
#: The API must serve again within this many seconds of PostgreSQL accepting connections.
RECOVERY_LIMIT_S = 10.0


def _events(session_id: str, prefix: str, n: int, *, with_session: bool = False) -> list[dict[str, Any]]:
    return [
        {**click(f"{prefix}-{k}", object_id=f"obj-{k % 2 + 1}"), **({"session_id": session_id} if with_session else {})}
        for k in range(n)
    ]


def _writer(run: str):
    """Each round: register a session, push its events, send a bulk request of two more sessions with theirs.
    A 503 is retried with the same body (by :class:`RecordingClient`)."""

    def write(client: RecordingClient) -> None:
        for i in range(MAX_ROUNDS):
            if client.stopping:
                return
            sid = f"{run}-c{client.index}-{i}"
            registered = client.post("/session", session_body(sid, user_id=f"user-{client.index}"))
            if registered.acknowledged:
                client.post("/session/events", {"session_id": sid, "events": _events(sid, "e", EVENTS_PER_SESSION)})
            bulk_ids = [f"{sid}-b{j}" for j in range(BULK_SESSIONS)]
            client.post(
                "/bulk",
                {
                    "sessions": [session_body(b, user_id=f"user-{client.index}") for b in bulk_ids],
                    "events": [e for b in bulk_ids for e in _events(b, "be", EVENTS_PER_SESSION, with_session=True)],
                },
            )

    return write


def _repeats(call: Any) -> int:
    """What a write's answer says was already stored (sessions already registered, duplicate events)."""
    answer = call.answer
    if call.route == "/session":
        return int(answer["status"] == "already_registered")
    if call.route == "/session/events":
        return answer["duplicates"]
    return answer["sessions"]["already_registered"] + answer["events"]["duplicates"]


def _bad(attempts: list[Any]) -> str:
    return "; ".join(f"{a.status} {a.error or a.text}"[:300] for a in attempts[:5])


def test_a_postgres_crash_while_clients_write_answers_503_and_loses_nothing(
    fault_pg: ThrowawayPostgres, fault_api_server: ApiServer, fault_store_url: str
) -> None:
    server = fault_api_server
    run = f"pgr-{uuid.uuid4().hex[:8]}"
    token = server.token("admin")
    starts = server.starts
    pool = WriterPool(server.base_url, token, clients=CLIENTS, script=_writer(run), duration_s=60, retry_pause_s=0.2)
    with pool:
        assert wait_until(lambda: pool.count_ok() >= 5 * CLIENTS, timeout=30), "writes did not get going"
        time.sleep(random.uniform(0, 0.5))  # crash at a different moment of the writers' rounds each run
        ok_before = pool.count_ok()
        outage_started = time.monotonic()
        fault_pg.restart("immediate", down_s=OUTAGE_S)
        back = time.monotonic()

        # The API serves again, without a restart of its own: a read of an acknowledged session answers 200.
        probe_id = pool.acknowledged("/session")[0].body["session_id"]
        probes: list[int] = []
        with httpx.Client(
            base_url=f"{server.base_url}/clickstream", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as http:

            def probe() -> bool:
                probes.append(http.get("/session", params={"session_id": probe_id}).status_code)
                return probes[-1] == 200

            served = wait_until(probe, timeout=RECOVERY_LIMIT_S, interval=0.1)
        recovered_s = time.monotonic() - back
        # ... and every client writes again (a 200 for an attempt started after PostgreSQL was back).
        assert wait_until(
            lambda: (
                {c.client for c in pool.snapshot() if any(a.status == 200 and a.started > back for a in c.attempts)}
                == set(range(CLIENTS))
            ),
            timeout=20,
        ), "not every client got a write through after the restart"
        time.sleep(0.5)  # some more traffic on the recovered pool
        pool.stop()
    assert server.running and server.starts == starts  # the API server was not restarted
    assert not pool.errors, pool.errors
    assert served, f"the API did not serve within {RECOVERY_LIMIT_S} s of PostgreSQL being back: {probes}"
    assert set(probes) <= {200, 503}, probes

    calls = pool.snapshot()
    attempts = [a for c in calls for a in c.attempts]
    statuses = Counter(a.status for a in attempts)
    unexpected = [a for a in attempts if a.status not in (200, 503)]
    assert not unexpected, f"statuses {dict(statuses)}; not 200/503: {_bad(unexpected)}"
    unavailable = [a for a in attempts if a.status == 503]
    assert unavailable, f"no 503 at all: the outage was not seen ({dict(statuses)})"
    assert all(a.retry_after == "5" for a in unavailable), _bad([a for a in unavailable if a.retry_after != "5"])
    assert all(a.started >= outage_started - 1 for a in unavailable)  # 503s only around the outage
    assert not [c for c in calls if not c.acknowledged], "a write was never acknowledged (gave up retrying)"
    first_write_s = min(a.started + a.elapsed for a in attempts if a.status == 200 and a.started > back) - back
    assert first_write_s <= RECOVERY_LIMIT_S, f"the first write after the restart took {first_write_s:.1f} s"
    retried = [c for c in calls if len(c.attempts) > 1]
    assert retried  # the same body was sent again after a 503
    # Sent once, a write is new: its answer never says "already there" (nothing was stored twice).
    for call in calls:
        if len(call.attempts) == 1:
            assert _repeats(call) == 0, (call.route, call.answer)
    committed_before_503 = [c for c in retried if _repeats(c)]  # a 503'd attempt had committed: the retry saw it

    # Everything acknowledged is in the store, once.
    snapshot = StoreSnapshot.read(fault_store_url)
    sent_sessions: dict[str, dict[str, Any]] = {}
    sent_events: dict[str, set[str]] = {}
    for call in calls:
        if call.route == "/session":
            sid = call.body["session_id"]
            sent_sessions[sid] = call.answer
            sent_events.setdefault(sid, set())
        elif call.route == "/session/events":
            assert call.answer["stored"] + call.answer["duplicates"] == EVENTS_PER_SESSION, call.answer
            sent_events[call.body["session_id"]] |= {e["event_id"] for e in call.body["events"]}
        else:
            answer = call.answer
            assert answer["rejected"] == [], answer
            assert answer["sessions"]["registered"] + answer["sessions"]["already_registered"] == BULK_SESSIONS
            assert answer["events"]["stored"] + answer["events"]["duplicates"] == BULK_SESSIONS * EVENTS_PER_SESSION
            for s in call.body["sessions"]:
                sent_sessions[s["session_id"]] = answer
                sent_events.setdefault(s["session_id"], set())
            for e in call.body["events"]:
                sent_events[e["session_id"]].add(e["event_id"])

    stored_ids = {sid for sid in snapshot.sessions if sid.startswith(run)}
    missing, stray = set(sent_sessions) - stored_ids, stored_ids - set(sent_sessions)
    assert not missing and not stray, f"missing {sorted(missing)[:5]}, unexpected {sorted(stray)[:5]}"
    for sid, answer in sent_sessions.items():
        stored = snapshot.sessions[sid]
        if "session_number" in answer:  # POST /session: the answer names where the session is
            assert (stored["batch_id"], stored["session_number"]) == (answer["batch_id"], answer["session_number"])
        assert sorted(stored["events"]) == sorted(sent_events[sid]), sid  # each event once, none missing
    run_keys = {k for k in snapshot.event_keys if k[0].startswith(run)}
    assert run_keys == {(sid, eid) for sid, eids in sent_events.items() for eid in eids}
    assert snapshot.event_rows == len(snapshot.event_keys)

    print(
        f"\n{len(calls)} writes by {CLIENTS} clients ({ok_before} acknowledged before the crash), "
        f"attempts {dict(statuses)}, {len(retried)} retried after a 503 ({len(committed_before_503)} of them had "
        f"committed before their 503); API serving {recovered_s:.2f} s, first write {first_write_s:.2f} s "
        f"after PostgreSQL was back; {len(sent_sessions)} sessions, {sum(map(len, sent_events.values()))} events"
    )
