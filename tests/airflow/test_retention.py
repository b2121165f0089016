"""Retention: PurgeReleasedBatchesOperator and the clickstream_retention DAG, on both backends."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clickstream.store import NotFound, SessionStore, now_ms
from tests.support import REPO_ROOT

#: A limit of about 9 ms: batches released before the test sleeps are "old".
TINY_DAYS = 1e-7


def _release(store: SessionStore, tag: str, sessions: int = 3) -> str:
    for i in range(sessions):
        store.register_session({"session_id": f"{tag}-{i}", "created_at": now_ms()})
        store.push_events(f"{tag}-{i}", [{"event_id": "e1", "object_id": "o"}])
    return store.release_batch(f"r-{tag}").batch_id


def _write_manifest(base: Path, batch_id: str) -> None:
    (base / batch_id).mkdir(parents=True)
    (base / batch_id / "_manifest.json").write_text(json.dumps({"batch_id": batch_id}))


@pytest.fixture
def batches(clickstream_conn: SessionStore, tmp_path: Path) -> dict[str, str]:
    extracted = _release(clickstream_conn, "extracted")
    never = _release(clickstream_conn, "never-extracted")
    _write_manifest(tmp_path, extracted)
    time.sleep(0.05)
    clickstream_conn.register_session({"session_id": "live", "created_at": now_ms()})
    return {"extracted": extracted, "never": never}


class TestPurgeReleasedBatchesOperator:
    def test_purges_old_batches_with_a_manifest_and_keeps_the_others(
        self, clickstream_conn: SessionStore, batches: dict[str, str], tmp_path: Path
    ) -> None:
        from clickstream.operators import PurgeReleasedBatchesOperator

        result = PurgeReleasedBatchesOperator(
            task_id="purge", retention_days=TINY_DAYS, base_path=str(tmp_path)
        ).execute(context={})
        assert [(p["batch_id"], p["sessions"], p["events"]) for p in result["purged"]] == [(batches["extracted"], 3, 3)]
        assert result["kept_without_manifest"] == [batches["never"]]
        with pytest.raises(NotFound):
            clickstream_conn.get_batch(batches["extracted"])
        assert clickstream_conn.get_batch(batches["never"]).sessions == 3
        assert clickstream_conn.get_session("live").batch_id  # the collecting batch is untouched
        assert (tmp_path / batches["extracted"] / "_manifest.json").exists()  # datasets are never deleted

    def test_force_purges_batches_without_a_manifest(
        self, clickstream_conn: SessionStore, batches: dict[str, str], tmp_path: Path
    ) -> None:
        from clickstream.operators import PurgeReleasedBatchesOperator

        result = PurgeReleasedBatchesOperator(
            task_id="purge", retention_days=str(TINY_DAYS), base_path=str(tmp_path), force="True"
        ).execute(context={})
        assert sorted(p["batch_id"] for p in result["purged"]) == sorted(batches.values())
        assert clickstream_conn.list_batches(status="released") == []

    def test_young_batches_are_kept(
        self, clickstream_conn: SessionStore, batches: dict[str, str], tmp_path: Path
    ) -> None:
        from clickstream.operators import PurgeReleasedBatchesOperator

        result = PurgeReleasedBatchesOperator(
            task_id="purge", retention_days=1, base_path=str(tmp_path), force=True
        ).execute(context={})
        assert result["purged"] == [] and result["kept_without_manifest"] == []
        assert len(clickstream_conn.list_batches(status="released")) == 2

    def test_retention_off_by_default_purges_nothing(
        self, clickstream_conn: SessionStore, batches: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from clickstream.operators import PurgeReleasedBatchesOperator

        monkeypatch.delenv("AIRFLOW__CLICKSTREAM__RETENTION_DAYS", raising=False)
        result = PurgeReleasedBatchesOperator(task_id="purge", base_path=str(tmp_path), force=True).execute({})
        assert result["retention_days"] is None and result["purged"] == []
        assert len(clickstream_conn.list_batches(status="released")) == 2

    def test_the_config_key_sets_the_default(
        self, clickstream_conn: SessionStore, batches: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from clickstream.operators import PurgeReleasedBatchesOperator

        monkeypatch.setenv("AIRFLOW__CLICKSTREAM__RETENTION_DAYS", str(TINY_DAYS))
        result = PurgeReleasedBatchesOperator(task_id="purge", base_path=str(tmp_path)).execute({})
        assert [p["batch_id"] for p in result["purged"]] == [batches["extracted"]]

    @pytest.mark.parametrize("days", ["soon", "-1", "0"])
    def test_bad_retention_days_fails_without_retry_naming_it(
        self, clickstream_conn: SessionStore, tmp_path: Path, days: str
    ) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from clickstream.operators import PurgeReleasedBatchesOperator

        with pytest.raises(AirflowFailException, match="retention_days"):
            PurgeReleasedBatchesOperator(task_id="purge", retention_days=days, base_path=str(tmp_path)).execute({})


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
class TestRetentionDag:
    def test_dag_purges_with_its_params(
        self, airflow_db: None, clickstream_conn: SessionStore, batches: dict[str, str], tmp_path: Path
    ) -> None:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils.state import DagRunState

        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "clickstream_retention.py"))
        assert bag.import_errors == {}
        run = bag.get_dag("clickstream_retention").test(
            run_conf={"retention_days": str(TINY_DAYS), "base_path": str(tmp_path), "force": True}
        )
        assert run.state == DagRunState.SUCCESS
        assert clickstream_conn.list_batches(status="released") == []
