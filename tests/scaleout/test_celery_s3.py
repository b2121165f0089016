"""The release DAG scaled out for real: ``clickstream_release`` on two CeleryExecutor workers, its dataset on
S3-compatible object storage.

Everything runs on loopback (:mod:`tests.support.scaleout`): a Redis broker, moto's S3 server with a
versioned bucket, and Airflow with the CeleryExecutor on PostgreSQL metadata: API server (REST and Execution
API), scheduler, DAG processor and two ``airflow celery worker`` processes, each reporting its own hostname as
separate machines would. The test seeds a collecting batch through the store, triggers the DAG through the REST
API with ``shards=4`` and an ``s3://<conn_id>@bucket/prefix`` base path, and checks what a user relies on:

* the extraction's fan-out (the extract shards and the labels step, queued together) ran on both workers (the
  task instances' hostnames; the terminal summary lists which worker ran which shard);
* the manifest and every part file it lists are in the bucket, and nothing else is;
* the dataset, read back from S3 with pandas alone, holds every session exactly once and every event;
* a cleared extract task rewrites only its own part files (the bucket keeps every version of every object,
  so "rewritten" is counted, not guessed from timestamps), and the dataset is still whole afterwards.

About 2 to 4 minutes on a 2-core machine, most of it starting Airflow's processes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from clickstream import synthetic
from clickstream.store import SessionStore
from tests.scaleout.conftest import report_line
from tests.support.pgcluster import PostgresServer
from tests.support.scaleout import CeleryCluster, MotoS3, RedisServer

pytestmark = [pytest.mark.scaleout, pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

DAG_ID = "clickstream_release"
SESSIONS = 20_000
SHARDS = 4
PAGE_SIZE = 500
PAGES_PER_PART = 2  # 5,000 sessions a shard: 10 pages, 5 parts
WORKERS = ("worker-a", "worker-b")
#: One task slot per worker: a worker holds one task at a time (Airflow acknowledges late, prefetches 1), so of
#: the 4 shards queued together each worker gets one at least. With 2 slots each, one worker could take all 4
#: while the other was slow to poll.
CONCURRENCY = 1
LAKE_CONN_ID = "clickstream_lake"
BUCKET = "lake"
PREFIX = "clickstream/datasets"
BASE_PATH = f"s3://{LAKE_CONN_ID}@{BUCKET}/{PREFIX}"
RUN_TIMEOUT_S = 360


@dataclass
class ScaleOut:
    cluster: CeleryCluster
    s3: MotoS3
    store_url: str
    session_ids: set[str]
    run_id: str = ""
    batch_id: str = ""
    state: str = ""
    extract: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n{self.cluster.diagnostics(DAG_ID, self.run_id)}")


def _seed(store_url: str, n: int) -> set[str]:
    """``n`` synthetic sessions with their events in the collecting batch, through the store's bulk
    ingestion (what ``POST /clickstream/bulk`` runs); returns their ids."""
    store = SessionStore.from_url(store_url)
    try:
        store.migrate()
        ids: set[str] = set()
        sessions: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []

        def flush() -> None:
            result = store.ingest_bulk(sessions, events)
            assert not result.rejected, result.rejected[:3]
            sessions.clear()
            events.clear()

        start_ms = store.clock() - 3_600_000
        for s in synthetic.generate(n, seed=13, start_ms=start_ms, id_prefix="so"):
            if len(sessions) + len(events) + 1 + len(s.events) > store.config.max_bulk_items:
                flush()
            sessions.append(s.session)
            events.extend({**e, "session_id": s.session["session_id"]} for e in s.events)
            ids.add(s.session["session_id"])
        flush()
        return ids
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def scaleout(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleOut]:
    """The loopback cluster, with :data:`SESSIONS` sessions collecting in a fresh store."""
    tmp = tmp_path_factory.mktemp("scaleout")
    suffix = uuid.uuid4().hex[:8]
    meta_db, store_db = f"scaleout_airflow_{suffix}", f"scaleout_store_{suffix}"
    meta_url, store_url = pg_server.create_database(meta_db), pg_server.create_database(store_db)
    try:
        t0 = time.monotonic()
        session_ids = _seed(store_url, SESSIONS)
        seeded = time.monotonic() - t0
        with RedisServer(tmp / "redis") as redis, MotoS3(tmp / "s3") as s3:
            s3.create_bucket(BUCKET, versioned=True)
            cluster = CeleryCluster(
                tmp / "airflow",
                meta_url=meta_url,
                store_url=store_url,
                broker_url=redis.url,
                workers=WORKERS,
                concurrency=CONCURRENCY,
                extra_env={
                    f"AIRFLOW_CONN_{LAKE_CONN_ID.upper()}": s3.airflow_connection(),
                    "AIRFLOW__CLICKSTREAM__RELEASE_SCHEDULE": "",  # runs only when triggered
                },
            )
            t1 = time.monotonic()
            with cluster:
                report_line(
                    f"seeded {len(session_ids):,} sessions in {seeded:.0f} s; cluster up in "
                    f"{time.monotonic() - t1:.0f} s (redis {redis.url}, S3 {s3.endpoint}, "
                    f"api-server {cluster.api.base_url}, workers {', '.join(WORKERS)}); logs in {tmp}"
                )
                yield ScaleOut(cluster, s3, store_url, session_ids)
    finally:
        for db in (meta_db, store_db):
            try:
                pg_server.drop_database(db)
            except Exception:
                pass


@pytest.fixture(scope="module")
def released(scaleout: ScaleOut) -> ScaleOut:
    """``clickstream_release`` triggered through the REST API with ``shards=4`` and an ``s3://`` base path,
    finished."""
    cluster = scaleout.cluster
    cluster.wait_for_dag(DAG_ID)
    cluster.unpause(DAG_ID)
    cluster.wait_for_workers()  # both consume from the broker right now, so the shards can spread over both
    t0 = time.monotonic()
    conf = {"shards": SHARDS, "base_path": BASE_PATH, "page_size": PAGE_SIZE, "pages_per_part": PAGES_PER_PART}
    scaleout.run_id = cluster.trigger(DAG_ID, conf)
    scaleout.state = cluster.wait_for_run(DAG_ID, scaleout.run_id, timeout=RUN_TIMEOUT_S)
    if scaleout.state != "success":
        scaleout.fail(f"run {scaleout.run_id} ended {scaleout.state!r} (waited up to {RUN_TIMEOUT_S} s)")
    tis = cluster.task_instances(DAG_ID, scaleout.run_id)
    scaleout.extract = sorted((ti for ti in tis if ti["task_id"] == "extract"), key=lambda ti: ti["map_index"])
    scaleout.labels = next((ti for ti in tis if ti["task_id"] == "labels"), {})
    store = SessionStore.from_url(scaleout.store_url)
    try:
        (batch,) = store.list_batches(status="released")
    finally:
        store.dispose()
    scaleout.batch_id = batch.batch_id
    report_line(f"run {scaleout.run_id}: {scaleout.state} in {time.monotonic() - t0:.0f} s, batch {batch.batch_id}")
    for ti in scaleout.extract:
        report_line(f"  extract[{ti['map_index']}] {_shard(ti)} ran on {ti['hostname']} ({ti['state']})")
    report_line(f"  labels ran on {scaleout.labels.get('hostname')} ({scaleout.labels.get('state')})")
    return scaleout


def _shard(ti: dict[str, Any]) -> str:
    """``sessions (after, until]`` of an extract task instance, from its rendered fields."""
    fields = ti.get("rendered_fields") or {}
    return f"sessions ({fields.get('after_number')}, {fields.get('until_number')}]"


def _objects(s3: MotoS3, prefix: str) -> dict[str, Counter[str]]:
    """Per key under ``prefix``: how many versions were written and how many times it was deleted."""
    versions: Counter[str] = Counter()
    deletes: Counter[str] = Counter()
    for page in s3.client().get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix):
        versions.update(v["Key"] for v in page.get("Versions", []))
        deletes.update(d["Key"] for d in page.get("DeleteMarkers", []))
    return {key: Counter(versions=versions[key], deletes=deletes[key]) for key in versions.keys() | deletes.keys()}


def _live_keys(s3: MotoS3, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def _manifest(s3: MotoS3, batch_id: str) -> dict[str, Any]:
    body = s3.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{batch_id}/_manifest.json")["Body"].read()
    return json.loads(body)


def _read_back(s3: MotoS3, batch_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables as a user without this package reads them: the manifest's parts, with pandas and s3fs."""
    manifest = _manifest(s3, batch_id)
    root = f"s3://{BUCKET}/{PREFIX}/{batch_id}"
    options = s3.storage_options()
    tables = []
    for table in ("sessions", "events"):
        parts = [pd.read_parquet(f"{root}/{table}/{p['name']}", storage_options=options) for p in manifest["parts"]]
        tables.append(pd.concat(parts, ignore_index=True))
    return tables[0], tables[1]


def _store_counts(store_url: str, batch_id: str) -> tuple[int, int]:
    store = SessionStore.from_url(store_url)
    try:
        metrics = store.batch_metrics(batch_id)
        return metrics.sessions, metrics.events
    finally:
        store.dispose()


class TestReleaseOnCeleryWorkersToObjectStorage:
    def test_the_extraction_ran_on_both_workers(self, released: ScaleOut) -> None:
        # The labels step runs beside the shards (queued with them, one slot per worker). The shards are fast
        # (Arrow pages), so while one worker runs the labels step the other may take all four: it is the
        # fan-out as a whole, shards and labels, that must spread over the workers.
        ran_on = {ti["map_index"]: ti["hostname"] for ti in released.extract}
        summary = ", ".join(f"extract[{i}] on {host}" for i, host in sorted(ran_on.items()))
        summary += f", labels on {released.labels.get('hostname')}"
        assert len(released.extract) == SHARDS, summary
        assert all(ti["state"] == "success" for ti in [*released.extract, released.labels]), summary
        fan_out = {*ran_on.values(), released.labels["hostname"]}
        assert fan_out == set(WORKERS), f"expected the extraction spread over {WORKERS}: {summary}"
        others = {ti["hostname"] for ti in released.cluster.task_instances(DAG_ID, released.run_id)}
        assert others <= set(WORKERS), f"every task runs on a Celery worker, got hostnames {others}"

    def test_the_manifest_and_every_part_file_are_in_the_bucket(self, released: ScaleOut) -> None:
        root = f"{PREFIX}/{released.batch_id}"
        manifest = _manifest(released.s3, released.batch_id)
        sessions, events = _store_counts(released.store_url, released.batch_id)
        assert (manifest["sessions"], manifest["events"]) == (sessions, events) == (SESSIONS, events)
        assert manifest["complete"] is True and manifest["path"] == f"{BASE_PATH}/{released.batch_id}"
        assert len(manifest["shards"]) == SHARDS
        expected = {f"{root}/{t}/{p['name']}" for p in manifest["parts"] for t in ("sessions", "events")}
        for table, written in manifest["labels"]["tables"].items():  # the labels step's tables, listed apart
            expected |= {f"{root}/{table}/{p['name']}" for p in written["parts"]}
        keys = _live_keys(released.s3, root + "/")
        parquet = {k for k in keys if k.endswith(".parquet")}
        assert parquet == expected, (
            f"missing {sorted(expected - parquet)[:5]}, unexpected {sorted(parquet - expected)[:5]}"
        )
        assert f"{root}/_manifest.json" in keys and f"{root}/metrics.json" in keys
        assert len(manifest["parts"]) == SESSIONS // (PAGE_SIZE * PAGES_PER_PART)

    def test_the_dataset_read_back_from_s3_holds_every_session_once(self, released: ScaleOut) -> None:
        sessions, events = _read_back(released.s3, released.batch_id)
        _, stored_events = _store_counts(released.store_url, released.batch_id)
        assert len(sessions) == SESSIONS
        assert not sessions["session_id"].duplicated().any()
        assert set(sessions["session_id"]) == released.session_ids
        assert sessions["session_number"].is_monotonic_increasing  # parts in order, shards in order
        assert (sessions["batch_id"] == released.batch_id).all()
        assert len(events) == stored_events and not events.duplicated(["session_id", "event_id"]).any()
        assert set(events["session_id"]) <= released.session_ids

    def test_a_cleared_extract_task_rewrites_only_its_own_part_files(self, released: ScaleOut) -> None:
        cluster, s3 = released.cluster, released.s3
        root = f"{PREFIX}/{released.batch_id}/"
        cleared = released.extract[1]
        before = _objects(s3, root)
        assert all(c == Counter(versions=1, deletes=0) for c in before.values()), "each object written once"

        cluster.clear_task(DAG_ID, released.run_id, "extract", cleared["map_index"])
        deadline = time.monotonic() + RUN_TIMEOUT_S
        rerun: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the run goes back to queued/running, then to success again
            state = cluster.run_state(DAG_ID, released.run_id)
            rerun = next(
                ti
                for ti in cluster.task_instances(DAG_ID, released.run_id)
                if ti["task_id"] == "extract" and ti["map_index"] == cleared["map_index"]
            )
            if rerun["try_number"] > cleared["try_number"] and rerun["state"] == "success" and state == "success":
                break
            if state == "failed" or rerun["state"] == "failed":
                released.fail(f"the cleared extract[{cleared['map_index']}] failed")
            time.sleep(1)
        else:
            released.fail(f"the cleared extract[{cleared['map_index']}] did not finish in {RUN_TIMEOUT_S} s")
        report_line(
            f"  cleared extract[{cleared['map_index']}] {_shard(cleared)}: try {rerun['try_number']} ran on "
            f"{rerun['hostname']}"
        )

        manifest = _manifest(s3, released.batch_id)
        shard = next(s for s in manifest["shards"] if s["after_number"] == cleared["rendered_fields"]["after_number"])
        owned = {
            f"{root}{t}/{p['name']}"
            for p in manifest["parts"]
            if p["first_number"] > shard["after_number"]
            and (shard["until_number"] is None or p["first_number"] <= shard["until_number"])
            for t in ("sessions", "events")
        }
        after = _objects(s3, root)
        rewritten = {k for k, c in after.items() if c != before.get(k)}
        assert owned and rewritten == owned, f"rewritten: {sorted(rewritten)}\nthe shard's own parts: {sorted(owned)}"
        for key in owned:  # deleted first (clear_shard), then written again
            assert after[key] == Counter(versions=2, deletes=1), (key, after[key])

        sessions, _events = _read_back(s3, released.batch_id)  # still whole, nothing twice
        assert len(sessions) == SESSIONS and set(sessions["session_id"]) == released.session_ids
