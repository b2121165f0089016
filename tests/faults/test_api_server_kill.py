"""The API server is SIGKILLed (its whole process group) while clients send ``POST /clickstream/bulk``
requests of a few hundred items, then restarted on the same port.

A request answered 200 has every item it reported stored. A request that got no answer was cut somewhere
between its bytes and its commit: its sessions are written by one statement and its events by another,
after the sessions, so the store holds all of its valid sessions or none, all of its valid events or none,
and never events without the sessions (never half a statement).
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.apiserver import ApiServer
from tests.support.bodies import click, session_body
from tests.support.faults import RecordingClient, StoreSnapshot, WriterPool, port_is_free, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(150)]

CLIENTS = 4
MAX_REQUESTS = 200  # per client; the kill ends them much sooner
SESSIONS = 100  # valid sessions per request
EVENTS_PER_SESSION = 2
#: One invalid session and one invalid event per request (timestamps in seconds): rejected, never stored.
INVALID = ["sessions[100]", "events[200]"]


def bulk_body(run: str, client: int, n: int) -> dict[str, Any]:
    sids = [f"{run}-c{client}-r{n}-s{k}" for k in range(SESSIONS)]
    sessions = [session_body(sid, user_id=f"user-{client}") for sid in sids]
    sessions.append(session_body(f"{run}-c{client}-r{n}-bad", created_at=1_701_234_567))
    events = [
        {**click(f"e{j}", object_id=f"obj-{j % 2 + 1}"), "session_id": sid}
        for sid in sids
        for j in range(EVENTS_PER_SESSION)
    ]
    events.append({**click("bad", created_at=1_701_234_567), "session_id": sids[0]})
    return {"sessions": sessions, "events": events}


def _writer(run: str):
    def write(client: RecordingClient) -> None:
        for n in range(MAX_REQUESTS):
            if client.stopping:
                return
            if not client.post("/bulk", bulk_body(run, client.index, n)).acknowledged:
                return  # no answer (the server is gone) or an error: this client is done

    return write


def _valid(body: dict[str, Any]) -> tuple[set[str], set[tuple[str, str]]]:
    sessions = {s["session_id"] for s in body["sessions"] if not s["session_id"].endswith("-bad")}
    events = {(e["session_id"], e["event_id"]) for e in body["events"] if e["event_id"] != "bad"}
    return sessions, events


def test_a_killed_api_server_leaves_each_bulk_statement_whole(
    fault_api_server: ApiServer, fault_store_url: str
) -> None:
    server = fault_api_server
    run = f"kill-{uuid.uuid4().hex[:8]}"
    pool = WriterPool(
        server.base_url, server.token("admin"), clients=CLIENTS, script=_writer(run), retry_503=False, duration_s=60
    )
    with pool:
        assert wait_until(lambda: len(pool.acknowledged()) >= 2 * CLIENTS, timeout=40), "bulk writes did not get going"
        time.sleep(random.uniform(0, 0.3))  # kill at a different moment of the requests each run
        assert wait_until(lambda: any(not c.attempts for c in pool.snapshot()), timeout=5)  # one is in flight
        killed_at = time.monotonic()
        os.killpg(server.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        assert wait_until(lambda: not pool.alive, timeout=30), "clients still running after the kill"
    assert not pool.errors, pool.errors
    assert not server.running
    assert wait_until(lambda: port_is_free(server.port), timeout=10)

    starts = server.starts
    server.restart()  # stop() must cope with the dead process; start() comes back on the same port
    assert server.running and server.starts == starts + 1
    with httpx.Client(
        base_url=f"{server.base_url}/clickstream", headers={"Authorization": f"Bearer {server.token('admin')}"}
    ) as http:
        after = http.post("/bulk", json=bulk_body(run, 99, 0), timeout=30)
    assert after.status_code == 200, after.text

    calls = pool.snapshot()
    statuses = Counter(a.status for c in calls for a in c.attempts)
    assert set(statuses) <= {200, None}, f"an answer other than 200: {dict(statuses)}"
    for call in calls:
        if call.final is not None and call.final.status is None:
            assert call.final.started + call.final.elapsed >= killed_at  # no answer only because of the kill
    acknowledged = [c for c in calls if c.acknowledged]
    unanswered = [c for c in calls if not c.acknowledged]
    assert unanswered, "no request was cut by the kill"

    snapshot = StoreSnapshot.read(fault_store_url)
    stored_sessions = {sid for sid in snapshot.sessions if sid.startswith(run)}
    stored_events = {k for k in snapshot.event_keys if k[0].startswith(run)}
    assert not {sid for sid in stored_sessions if sid.endswith("-bad")}
    assert not {k for k in stored_events if k[1] == "bad"}

    for call in acknowledged:
        answer = call.answer
        assert (answer["sessions"]["registered"], answer["sessions"]["already_registered"]) == (SESSIONS, 0), answer
        events = answer["events"]
        assert (events["stored"], events["duplicates"], events["over_limit"]) == (SESSIONS * EVENTS_PER_SESSION, 0, 0)
        assert [r["item"] for r in answer["rejected"]] == INVALID
        sessions, events = _valid(call.body)
        assert sessions <= stored_sessions, f"acknowledged sessions missing: {sorted(sessions - stored_sessions)[:3]}"
        assert events <= stored_events, f"acknowledged events missing: {sorted(events - stored_events)[:3]}"

    outcomes: Counter = Counter()
    for call in unanswered:
        sessions, events = _valid(call.body)
        s = len(sessions & stored_sessions)
        e = len(events & stored_events)
        assert s in (0, len(sessions)), f"{s} of {len(sessions)} sessions of an unanswered request stored"
        assert e in (0, len(events)), f"{e} of {len(events)} events of an unanswered request stored"
        assert not (e and not s), "events stored without the sessions of the same request (written after them)"
        outcomes["sessions+events" if e else "sessions only" if s else "nothing"] += 1

    # Nothing stored that no request sent, and each session's events exactly once.
    sent_sessions = set().union(*(_valid(c.body)[0] for c in calls))
    assert stored_sessions <= sent_sessions | _valid(bulk_body(run, 99, 0))[0]
    for sid in stored_sessions:
        assert len(snapshot.sessions[sid]["events"]) in (0, EVENTS_PER_SESSION), sid
    assert snapshot.event_rows == len(snapshot.event_keys)

    print(
        f"\n{len(calls)} bulk requests of {SESSIONS * (1 + EVENTS_PER_SESSION) + 2} items by {CLIENTS} clients: "
        f"{len(acknowledged)} answered 200, {len(unanswered)} unanswered at the kill: {dict(outcomes)}"
    )
