"""The operators' extra links ("Batch" to the Clickstream page's batch view, "Dataset" to the dataset's
manifest) and the dataset the release DAG records in the store.

The links are checked where a user meets them: the URLs the Airflow API server answers for the task
instances of a real ``clickstream_release`` run (``dag.test()``), and for operators run directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clickstream.operators import BatchMetricsOperator, ExtractBatchOperator, ReleaseBatchOperator
from clickstream.operators.links import BatchLink, DatasetLink
from clickstream.store import SessionStore
from clickstream.synthetic import seed_store
from tests.support import REPO_ROOT
from tests.support.inprocess import airflow_api_app, mint_token

pytestmark = pytest.mark.filterwarnings("ignore:.*cannot be called outside of the Task Runner")


def _links(operator: Any) -> dict[str, str]:
    """The URL of each extra link of a finished operator, as its worker computes them."""
    return {link.name: link.get_link(operator, ti_key=None) for link in operator.operator_extra_links}


class TestOperatorsRunDirectly:
    def test_release_links_the_released_batch_under_the_base_url_path(
        self, store: SessionStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.register_session({"session_id": "s1", "search_results": [{"object_id": "a"}]})
        release = ReleaseBatchOperator(task_id="release", release_id="r1")
        batch_id = release.execute(context={})["batch_id"]
        assert _links(release) == {"Batch": f"/clickstream/ui/batches/{batch_id}"}

        monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/airflow/")
        assert _links(release) == {"Batch": f"/airflow/clickstream/ui/batches/{batch_id}"}

    def test_nothing_released_means_no_batch_link(self, store: SessionStore) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        release = ReleaseBatchOperator(task_id="release", release_id="r1")
        with pytest.raises(AirflowSkipException):
            release.execute(context={})
        assert _links(release) == {"Batch": ""}

    def test_extract_and_metrics_link_the_batch_and_the_manifest_the_store_records(
        self, store: SessionStore, tmp_path: Path
    ) -> None:
        seeded = seed_store(store, 20, seed=3, release_id="r1")
        assert seeded.release is not None
        batch_id = seeded.release["batch_id"]
        extract = ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path))
        manifest = extract.execute(context={})["paths"]["manifest"]
        assert manifest == f"file://{tmp_path}/{batch_id}/_manifest.json"
        assert (tmp_path / batch_id / "_manifest.json").is_file()
        assert store.get_batch_summary(batch_id).dataset == manifest

        metrics = BatchMetricsOperator(task_id="metrics", batch_id=batch_id, base_path=str(tmp_path))
        metrics.execute(context={})
        expected = {"Batch": f"/clickstream/ui/batches/{batch_id}", "Dataset": manifest}
        assert _links(extract) == _links(metrics) == expected

    def test_the_metrics_task_also_backfills_older_released_batches_within_its_budget(
        self, store: SessionStore
    ) -> None:
        released = []
        for i in range(4):  # released outside the DAG, or before the upgrade: no kept metrics
            store.register_session({"session_id": f"s{i}", "search_results": [{"object_id": "a"}]})
            released.append(store.release_batch(f"r{i}").batch_id)
        metrics = BatchMetricsOperator(task_id="metrics", batch_id=released[-1], write_file=False, backfill=2)
        metrics.execute(context={})
        kept = [len(_kept_metrics_computed_at(store, b)) for b in released]
        assert kept == [0, 1, 1, 1]  # its batch, then the two newest without metrics
        BatchMetricsOperator(task_id="metrics", batch_id=released[-1], write_file=False).execute(context={})
        assert [len(_kept_metrics_computed_at(store, b)) for b in released] == [1, 1, 1, 1]

    def test_a_batch_id_that_cannot_name_a_folder_gets_no_dataset_link(self) -> None:
        metrics = BatchMetricsOperator(task_id="metrics", batch_id="../etc", base_path="/tmp/x")
        assert DatasetLink().get_link(metrics, ti_key=None) == ""  # type: ignore[arg-type]
        assert BatchLink().get_link(metrics, ti_key=None) == "/clickstream/ui/batches/..%2Fetc"  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- a real run, through the API


@pytest.fixture(scope="module")
def airflow_app(airflow_db: None) -> Iterator[Any]:
    """Airflow's API server app (SimpleAuthManager), which answers a task instance's extra links."""
    with airflow_api_app() as app:
        yield app


def _kept_metrics_computed_at(store: SessionStore, batch_id: str) -> Sequence[int]:
    with store.engine.connect() as conn:
        return (
            conn.execute(sa.text("SELECT computed_at FROM cs_batch_metrics WHERE batch_id = :b"), {"b": batch_id})
            .scalars()
            .all()
        )


@pytest.mark.usefixtures("airflow_db")
class TestReleaseDagRun:
    def test_the_api_server_answers_batch_and_dataset_links_and_the_store_keeps_dataset_and_metrics(
        self, store: SessionStore, tmp_path: Path, airflow_app: Any
    ) -> None:
        from airflow.dag_processing.dagbag import DagBag
        from fastapi.testclient import TestClient

        seed_store(store, 60, seed=7)
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "clickstream_release.py"))
        dr = bag.get_dag("clickstream_release").test(run_conf={"base_path": str(tmp_path), "shards": 2})
        assert dr.state == "success"
        (summary,) = store.list_batches_page(release_id=f"clickstream_release/{dr.run_id}").batches
        batch_id, manifest = summary.batch_id, f"file://{tmp_path}/{summary.batch_id}/_manifest.json"

        # the run recorded its dataset, and its metrics task kept the metrics (before anything read them)
        assert summary.dataset == manifest and (tmp_path / batch_id / "_manifest.json").is_file()
        assert summary.metrics is not None and summary.sessions == 60
        assert len(_kept_metrics_computed_at(store, batch_id)) == 1

        batch_view = f"/clickstream/ui/batches/{batch_id}"
        client = TestClient(airflow_app)
        token = mint_token(airflow_app, "viewer")

        def links(task_id: str, map_index: int = -1) -> dict[str, Any]:
            answer = client.get(
                f"/api/v2/dags/clickstream_release/dagRuns/{dr.run_id}/taskInstances/{task_id}/links",
                params={"map_index": map_index},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["extra_links"]

        assert links("release") == {"Batch": batch_view}
        assert links("extract", 0) == links("extract", 1) == {"Batch": batch_view, "Dataset": manifest}
        assert links("metrics") == {"Batch": batch_view, "Dataset": manifest}
