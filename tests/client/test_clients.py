"""``clickstream_client`` (the light distribution, clients/python) against a real ``airflow api-server``: both
clients route by route, errors, auth renewal, compressed requests (gzip, the bomb, 415), and both writers,
including a server stopped and restarted mid-stream (nothing lost, nothing duplicated)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from clickstream.store import SessionStore
from clickstream_client import (
    AsyncBulkWriter,
    AsyncClickstreamClient,
    AuthError,
    BulkDeliveryError,
    BulkWriter,
    ClickstreamClient,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
)
from tests.client.conftest import MAX_BULK_ITEMS, MAX_REQUEST_BYTES
from tests.support.apiserver import JWT_SECRET, PASSWORDS, ApiServer

pytestmark = pytest.mark.slow


def now() -> int:
    return time.time_ns() // 1_000_000


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def session(session_id: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "session_id": session_id,
        "search_query": "ai transformer",
        "search_results": [{"object_id": "obj-1", "rank": 1.0}, {"object_id": "obj-2", "rank": 0.5}],
        "search_meta": {"latency_ms": 210},
        "user_id": uid("user"),
        "created_at": now(),
    }
    body.update(overrides)
    return body


def event(event_id: str, object_id: str = "obj-1", **overrides: Any) -> dict[str, Any]:
    return {"event_id": event_id, "object_id": object_id, "event_type": "click", "created_at": now(), **overrides}


def exists(store: SessionStore, session_id: str) -> bool:
    try:
        store.get_session(session_id)
    except Exception:
        return False
    return True


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def expired_copy(token: str) -> str:
    header = jwt.get_unverified_header(token)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    claims.update(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200)
    extra = {k: v for k, v in header.items() if k not in ("alg", "typ")}
    return jwt.encode(claims, JWT_SECRET, algorithm=header["alg"], headers=extra or None)


def sync_client(server: ApiServer, username: str = "admin", **kwargs: Any) -> ClickstreamClient:
    return ClickstreamClient(server.base_url, username=username, password=PASSWORDS[username], timeout=15, **kwargs)


def async_client(server: ApiServer, username: str = "admin", **kwargs: Any) -> AsyncClickstreamClient:
    return AsyncClickstreamClient(
        server.base_url, username=username, password=PASSWORDS[username], timeout=15, **kwargs
    )


@pytest.fixture
def admin(server: ApiServer) -> Iterator[ClickstreamClient]:
    with sync_client(server) as client:
        yield client


# ---------------------------------------------------------------------------------------------- routes


def test_every_route_of_the_sync_client(admin: ClickstreamClient, store: SessionStore) -> None:
    sid = uid("sync")
    body = session(sid)
    first = admin.register_session(body)
    assert isinstance(first, dict) and (first["session_id"], first["status"]) == (sid, "registered")
    assert admin.register_session(body)["status"] == "already_registered"
    pushed = admin.push_events(sid, [event("e1"), event("e2"), event("e1")])
    assert (pushed["stored"], pushed["duplicates"]) == (2, 1)
    got = admin.get_session(sid, events_limit=1)
    assert [e["event_id"] for e in got["events"]] == ["e1"] and got["batch_id"] == first["batch_id"]
    assert admin.mark_irrelevant(sid)["changed"] is True
    assert admin.use_for_improvement(sid)["status"] == "marked"

    batch_id = first["batch_id"]
    page = admin.get_batch_sessions(batch_id, limit=1000)
    assert sid in [s["session_id"] for s in page["sessions"]]
    assert sid in [s["session_id"] for s in admin.iter_batch_sessions(batch_id, page_size=2)]
    assert admin.get_batch_summary(batch_id)["status"] == "collecting"
    release_id = uid("release")
    released = admin.release_batch(release_id)
    assert released["batch_id"] == batch_id and admin.release_batch(release_id) == released
    assert [b["batch_id"] for b in admin.list_batches_page(release_id=release_id)["batches"]] == [batch_id]
    assert [p["position"] for p in admin.batch_positions(batch_id, max_position=2)["positions"]] == [1, 2]
    assert batch_id in [m["batch_id"] for m in admin.metrics_series(limit=1000)["metrics"]]
    searches = admin.top_searches(batch_id=batch_id)
    assert "searches" in searches and "range" in searches
    assert "searches" in admin.searches_without_results(batch_id=batch_id)
    assert "searches" in admin.searches_without_clicks(batch_id=batch_id)
    assert "hits" in admin.top_hits(batch_id=batch_id)
    assert admin.query_analytics("ai transformer", batch_id=batch_id)["query"] == "ai transformer"

    user = uid("user")
    admin.register_session(session(uid("sync"), user_id=user))
    assert admin.erase_user(user)["sessions"] == 1


def test_every_route_of_the_async_client(server: ApiServer) -> None:
    async def scenario() -> None:
        async with async_client(server) as client:
            sid = uid("async")
            body = session(sid)
            first = await client.register_session(body)
            assert (await client.register_session(body))["status"] == "already_registered"
            assert (await client.push_events(sid, [event("e1"), event("e2")]))["stored"] == 2
            assert [e["event_id"] for e in (await client.get_session(sid))["events"]] == ["e1", "e2"]
            assert (await client.mark_irrelevant(sid))["is_irrelevant"] is True
            assert (await client.use_for_improvement(sid))["status"] == "marked"
            batch_id = first["batch_id"]
            assert batch_id is not None
            seen = [s["session_id"] async for s in client.iter_batch_sessions(batch_id, page_size=3)]
            assert sid in seen and len(seen) == len(set(seen))
            assert (await client.get_batch_sessions(batch_id, limit=1))["last_number"] is not None
            release_id = uid("release")
            released = await client.release_batch(release_id)
            assert (await client.get_batch_summary(batch_id))["release_id"] == release_id
            assert released["batch_id"] == batch_id
            assert (await client.list_batches_page(limit=1))["batches"]
            assert (await client.batch_positions(batch_id))["batch_id"] == batch_id
            assert (await client.metrics_series())["metrics"]
            assert "searches" in await client.top_searches(batch_id=batch_id)
            assert "searches" in await client.searches_without_results(batch_id=batch_id)
            assert "searches" in await client.searches_without_clicks(batch_id=batch_id)
            assert "hits" in await client.top_hits(batch_id=batch_id)
            assert (await client.query_analytics("ai transformer", batch_id=batch_id))["query"] == "ai transformer"
            result = await client.bulk(sessions=[session(uid("async"))], events=[{**event("e9"), "session_id": sid}])
            assert (result["sessions"]["registered"], result["events"]["stored"]) == (1, 1)
            user = uid("user")
            await client.register_session(session(uid("async"), user_id=user))
            assert (await client.erase_user(user))["sessions"] == 1

    asyncio.run(scenario())


def test_both_clients_have_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_")}

    assert public(ClickstreamClient) - {"close"} == public(AsyncClickstreamClient) - {"aclose"}


# ---------------------------------------------------------------------------------------------- errors, auth


def test_errors_carry_status_detail_and_field_errors(admin: ClickstreamClient, server: ApiServer) -> None:
    with pytest.raises(NotFoundError) as missing:
        admin.get_session("sess-no-such")
    assert (missing.value.status, missing.value.detail) == (404, "session_id 'sess-no-such' not found")
    with pytest.raises(InvalidInputError) as invalid:
        admin.register_session(session(uid("sess"), created_at=1_700_000_000))
    assert invalid.value.detail.startswith("body.created_at:")
    assert invalid.value.errors and invalid.value.errors[0]["loc"] == ["body", "created_at"]

    async def async_errors() -> None:
        async with async_client(server, "viewer") as viewer:
            with pytest.raises(AuthError) as forbidden:
                await viewer.register_session(session(uid("sess")))
            assert forbidden.value.status == 403
            with pytest.raises(NotFoundError):
                await viewer.get_batch_summary("b-no-such-batch")

    asyncio.run(async_errors())


def test_an_expired_token_is_renewed_with_the_credentials(server: ApiServer) -> None:
    expired = expired_copy(server.token("admin"))
    with ClickstreamClient(server.base_url, token=expired) as client:
        with pytest.raises(AuthError) as err:
            client.get_session("sess-x")
    assert (err.value.status, err.value.detail) == (401, "Token Expired")
    with ClickstreamClient(server.base_url, token=expired, username="admin", password=PASSWORDS["admin"]) as client:
        assert client.register_session(session(uid("sess")))["status"] == "registered"
        assert client.token != expired

    async def renewed() -> str | None:
        async with AsyncClickstreamClient(
            server.base_url, token=expired, username="admin", password=PASSWORDS["admin"]
        ) as client:
            assert (await client.register_session(session(uid("sess"))))["status"] == "registered"
            return client.token

    assert asyncio.run(renewed()) not in (None, expired)


# ---------------------------------------------------------------------------------------------- compression


def test_a_gzip_bulk_is_stored_like_a_plain_one(server: ApiServer, store: SessionStore) -> None:
    sids = [uid("gz") for _ in range(20)]
    with sync_client(server, compress=True) as client:
        seen: list[httpx.Request] = []
        client._http.event_hooks["request"].append(seen.append)
        result = client.bulk(sessions=[session(s) for s in sids], events=[{**event("e1"), "session_id": sids[0]}])
    assert (result["sessions"]["registered"], result["events"]["stored"]) == (20, 1)
    assert seen[-1].headers["content-encoding"] == "gzip"
    assert all(exists(store, s) for s in sids)


def _raw_post(server: ApiServer, content: Any, headers: dict[str, str]) -> httpx.Response:
    token = server.token("admin")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    return httpx.post(f"{server.base_url}/clickstream/bulk", content=content, headers=headers, timeout=120)


def test_an_unsupported_encoding_is_415_and_nothing_is_stored(server: ApiServer, store: SessionStore) -> None:
    sid = uid("br")
    body = json.dumps({"sessions": [session(sid)], "events": []}).encode()
    answer = _raw_post(server, body, {"Content-Encoding": "br"})
    assert answer.status_code == 415
    assert "'br' is not supported" in answer.json()["detail"]
    assert not exists(store, sid)
    corrupt = _raw_post(server, gzip.compress(body)[:-12], {"Content-Encoding": "gzip"})
    assert corrupt.status_code == 400 and "gzip" in corrupt.json()["detail"]
    assert not exists(store, sid)


def _group_peak_rss_kib(pid: int) -> int:
    """The largest peak resident size (VmHWM) among the processes of ``pid``'s process group."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        if found:
            peak = max(peak, int(found.group(1)))
    return peak


def test_a_gzip_bomb_is_413_after_at_most_max_request_bytes_with_bounded_memory(server: ApiServer) -> None:
    """1 GiB of zeros, about 1 MiB compressed (under the 2 MiB bound): refused once 2 MiB were decompressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(zeros) for _ in range(1024)) + compressor.flush()
    assert len(bomb) < MAX_REQUEST_BYTES < 1024**3
    assert server.process is not None
    before = _group_peak_rss_kib(server.process.pid)
    started = time.monotonic()
    answer = _raw_post(server, bomb, {"Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith(f"body: decompressed request body larger than {MAX_REQUEST_BYTES} bytes")
    assert time.monotonic() - started < 30
    grown_mib = (_group_peak_rss_kib(server.process.pid) - before) / 1024
    assert grown_mib < 64, f"the server's peak memory grew by {grown_mib:.0f} MiB"


# ---------------------------------------------------------------------------------------------- writers


def test_the_threaded_writer_flushes_by_count_and_age_and_reports_rejections(
    server: ApiServer, store: SessionStore
) -> None:
    sids = [uid("tw") for _ in range(25)]
    bad = uid("tw")
    rejected: list[tuple[Any, dict[str, Any]]] = []
    with sync_client(server) as client:
        writer = BulkWriter(
            client, max_items=10, max_age_s=60, max_buffer_items=100, on_rejected=lambda r, i: rejected.append((r, i))
        )
        try:
            for sid in sids:
                writer.add_session(session(sid), timeout=5)
            assert wait_for(lambda: writer.requests == 2)
            assert writer.pending == 5  # the rest waits for max_age_s
            writer.add_session(session(bad, created_at=5))
            writer.flush()
            assert writer.requests == 3
        finally:
            writer.close()
        with client.writer(max_items=1000, max_age_s=0.3) as by_age:
            by_age.add_event(sids[0], event("e1"))
            assert wait_for(lambda: by_age.requests == 1, timeout=10)
    assert writer.registered == 25 and all(exists(store, s) for s in sids)
    assert [(r["item"], i["session_id"]) for r, i in rejected] == [("sessions[5]", bad)]
    assert writer.rejected == [rejected[0][0]] and by_age.stored == 1


def test_the_async_writer_flushes_by_count_and_age_and_reports_rejections(
    server: ApiServer, store: SessionStore
) -> None:
    sids = [uid("aw") for _ in range(25)]
    bad = uid("aw")
    rejected: list[tuple[Any, dict[str, Any]]] = []

    async def scenario() -> tuple[AsyncBulkWriter, AsyncBulkWriter]:
        async with async_client(server) as client:
            writer = AsyncBulkWriter(
                client,
                max_items=10,
                max_age_s=60,
                max_buffer_items=100,
                on_rejected=lambda r, i: rejected.append((r, i)),
            )
            async with writer:
                for sid in sids:
                    await writer.add_session(session(sid), timeout=5)
                for _ in range(200):
                    if writer.requests == 2:
                        break
                    await asyncio.sleep(0.05)
                assert writer.requests == 2 and writer.pending == 5
                await writer.add_session(session(bad, created_at=5))
                await writer.flush()
                assert writer.requests == 3
            async with client.writer(max_items=1000, max_age_s=0.3) as by_age:
                await by_age.add_events(sids[0], [event("e1"), event("e2")])
                started = time.monotonic()
                while by_age.requests == 0 and time.monotonic() - started < 10:
                    await asyncio.sleep(0.05)
                assert by_age.requests == 1 and time.monotonic() - started >= 0.1
            return writer, by_age

    writer, by_age = asyncio.run(scenario())
    assert writer.registered == 25 and all(exists(store, s) for s in sids)
    assert [(r["item"], i["session_id"]) for r, i in rejected] == [("sessions[5]", bad)]
    assert by_age.stored == 2


@pytest.mark.parametrize("kind", ["threaded", "async"])
def test_a_413_splits_the_request_and_4xx_are_not_retried(server: ApiServer, store: SessionStore, kind: str) -> None:
    """100 sessions of 30 KB each decompress to ~3 MB, over the 2 MiB bound (though ~100x smaller gzipped)."""
    blob = {"blob": "x" * 30_000}
    sids = [uid("split") for _ in range(MAX_BULK_ITEMS)]
    forbidden = uid("forbidden")

    def threaded() -> tuple[Any, BaseException]:
        with sync_client(server) as client, client.writer(max_items=MAX_BULK_ITEMS) as writer:
            for sid in sids:
                writer.add_session(session(sid, search_meta=blob))
        with sync_client(server, "viewer") as viewer:
            denied = viewer.writer(max_retry_s=60)
            denied.add_session(session(forbidden))
            with pytest.raises(BulkDeliveryError) as err:
                denied.close()
        assert denied.retries == 0
        return writer, err.value

    async def in_loop() -> tuple[Any, BaseException]:
        async with async_client(server) as client, client.writer(max_items=MAX_BULK_ITEMS) as writer:
            for sid in sids:
                await writer.add_session(session(sid, search_meta=blob))
        async with async_client(server, "viewer") as viewer:
            denied = viewer.writer(max_retry_s=60)
            await denied.add_session(session(forbidden))
            with pytest.raises(BulkDeliveryError) as err:
                await denied.close()
        assert denied.retries == 0
        return writer, err.value

    writer, error = threaded() if kind == "threaded" else asyncio.run(in_loop())
    assert writer.registered == MAX_BULK_ITEMS and writer.requests > 1 and not writer.undelivered
    assert all(exists(store, s) for s in sids)
    assert isinstance(error, BulkDeliveryError) and isinstance(error.errors[0], AuthError)
    assert not exists(store, forbidden)
    assert TooLargeError.__name__ == "TooLargeError"


@pytest.mark.parametrize("kind", ["threaded", "async"])
def test_nothing_lost_or_duplicated_across_a_server_restart(server: ApiServer, store: SessionStore, kind: str) -> None:
    """Producers keep adding (gzip bulk requests) while the server is stopped and restarted; close() delivers
    the rest; every session and event is stored exactly once."""
    run = uid(f"restart-{kind}")
    producers, per_producer, events_per_session = 3, 30, 3
    options = dict(
        max_items=20, max_age_s=0.2, max_retry_s=120, max_buffer_items=40, backoff_initial_s=0.1, backoff_max_s=1.0
    )
    server_down = threading.Event()
    added = [0] * producers

    def items(p: int, i: int) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        sid = f"{run}-{p}-{i}"
        return sid, session(sid), [event(f"e{k}", object_id=f"obj-{k % 2 + 1}") for k in range(events_per_session)]

    def outage(writer: Any) -> None:
        assert wait_for(lambda: writer.requests >= 2, timeout=30)
        server.stop()
        requests_when_down = writer.requests
        server_down.set()
        time.sleep(3)
        assert writer.requests == requests_when_down and writer.retries > 0
        server.restart()

    try:
        if kind == "threaded":
            with sync_client(server) as client:
                writer: Any = BulkWriter(client, **options)

                def produce(p: int) -> None:
                    for i in range(per_producer):
                        sid, body, events = items(p, i)
                        writer.add_session(body)
                        writer.add_events(sid, events)
                        added[p] = i + 1
                        if i == per_producer // 4:
                            server_down.wait(60)
                        time.sleep(0.01)

                threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
                for t in threads:
                    t.start()
                outage(writer)
                for t in threads:
                    t.join(timeout=120)
                writer.close()
        else:

            async def scenario() -> Any:
                async with async_client(server) as client:
                    writer = AsyncBulkWriter(client, **options)

                    async def produce(p: int) -> None:
                        for i in range(per_producer):
                            sid, body, events = items(p, i)
                            await writer.add_session(body)
                            await writer.add_events(sid, events)
                            added[p] = i + 1
                            if i == per_producer // 4:
                                while not server_down.is_set():
                                    await asyncio.sleep(0.05)
                            await asyncio.sleep(0.01)

                    loop = asyncio.get_running_loop()
                    watcher = loop.run_in_executor(None, outage, writer)
                    await asyncio.gather(*(produce(p) for p in range(producers)))
                    await watcher
                    await writer.close()
                    return writer

            writer = asyncio.run(scenario())
    finally:
        server_down.set()
        if not server.running:
            server.start()

    total = producers * per_producer
    assert added == [per_producer] * producers
    assert writer.pending == 0 and not writer.undelivered and not writer.rejected
    assert writer.registered + writer.already_registered == total
    assert writer.stored + writer.duplicates == total * events_per_session
    for p in range(producers):
        for i in range(per_producer):
            stored = store.get_session(f"{run}-{p}-{i}")
            assert [e.event_id for e in stored.events] == [f"e{k}" for k in range(events_per_session)]
    ids = [
        s["session_id"]
        for b in store.list_batches(limit=1000)
        for page in store.iter_batch_pages(b.batch_id, page_size=1000)
        for s in page
        if s["session_id"].startswith(run)
    ]
    assert len(ids) == len(set(ids)) == total
