"""OpenLineage of the operators: the store's tables, the dataset root or history files, the batch id and the
counts, as the OpenLineage provider's listener would collect them after a task (``get_openlineage_facets_on_
complete``). The provider is in the test extra; without it the operators import and run unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from clickstream.operators import (
    BatchMetricsOperator,
    EraseUserOperator,
    ExtractBatchOperator,
    ImportHistoryOperator,
    MarkForImprovementOperator,
    ReleaseBatchOperator,
)
from clickstream.operators.lineage import location_name
from clickstream.store import SessionStore
from clickstream.synthetic import seed_store
from tests.support import REPO_ROOT

pytestmark = pytest.mark.filterwarnings("ignore:.*cannot be called outside of the Task Runner")

EXAMPLES = REPO_ROOT / "examples" / "history"


def _names(store_url: str) -> tuple[str, str]:
    """The namespace and table-name prefix the lineage must use for ``store_url``."""
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        return f"sqlite://{os.path.abspath(url.database)}", "main"
    return f"postgres://{url.host}:{url.port}", f"{url.database}.public"


def _facets(op: Any) -> Any:
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage is not None
    return lineage


def _tables(datasets: list[Any], store_url: str) -> dict[str, Any]:
    """``{table: dataset}`` of the store's tables among ``datasets``; every one in the store's namespace."""
    namespace, prefix = _names(store_url)
    found = {}
    for d in datasets:
        if d.namespace == namespace:
            assert d.name.startswith(prefix + "."), d.name
            found[d.name.removeprefix(prefix + ".")] = d
    return found


def _rows(dataset: Any, kind: str = "output") -> int | None:
    facets = dataset.outputFacets if kind == "output" else dataset.inputFacets
    stats = facets.get(f"{kind}Statistics")
    return None if stats is None else stats.rowCount


def _run(lineage: Any) -> Any:
    return lineage.run_facets["clickstream"]


@pytest.fixture
def released(store: SessionStore) -> tuple[SessionStore, str]:
    counts = seed_store(store, 120, seed=7, release_id="r-7")
    assert counts.release is not None
    return store, counts.release["batch_id"]


class TestStoreNaming:
    def test_tables_are_named_after_the_connection(self, store: SessionStore, store_url: str) -> None:
        seed_store(store, 5, seed=1)
        op = ReleaseBatchOperator(task_id="release", release_id="r")
        op.execute({})
        lineage = _facets(op)
        namespace, prefix = _names(store_url)
        assert {(d.namespace, d.name) for d in lineage.inputs} == {
            (namespace, f"{prefix}.cs_batch"),
            (namespace, f"{prefix}.cs_session"),
        }
        if store_url.startswith("postgresql"):
            assert namespace.startswith("postgres://127.0.0.1:") and prefix.endswith(".public")

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("file:///data/cs/b1", ("file", "/data/cs/b1")),
            ("/data/cs/b1", ("file", "/data/cs/b1")),
            ("s3://aws_default@bucket/clickstream/b1", ("s3://bucket", "clickstream/b1")),
            ("s3://bucket/clickstream/b1/", ("s3://bucket", "clickstream/b1")),
            ("gs://bucket/x", ("gs://bucket", "x")),
        ],
    )
    def test_locations_follow_openlineages_naming(self, uri: str, expected: tuple[str, str]) -> None:
        assert location_name(uri) == expected


class TestOperatorLineage:
    def test_release(self, store: SessionStore, store_url: str) -> None:
        seed_store(store, 12, seed=2)
        op = ReleaseBatchOperator(task_id="release", release_id="nightly")
        result = op.execute({})
        lineage = _facets(op)
        inputs, outputs = _tables(lineage.inputs, store_url), _tables(lineage.outputs, store_url)
        assert set(inputs) == {"cs_batch", "cs_session"} and set(outputs) == {"cs_batch"}
        assert _rows(inputs["cs_session"], "input") == 12
        run = _run(lineage)
        assert run.batch_id == result["batch_id"]
        assert run.facts["release_id"] == "nightly" and run.facts["sessions"] == 12

    def test_extract_reports_the_dataset_root_not_its_part_files(
        self, released: tuple[SessionStore, str], store_url: str, tmp_path: Path
    ) -> None:
        store, batch_id = released
        op = ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path), page_size=25)
        result = op.execute({})
        lineage = _facets(op)
        (root,) = lineage.outputs
        assert (root.namespace, root.name) == ("file", str(tmp_path / batch_id))
        assert root.outputFacets["outputStatistics"].rowCount == 120
        assert root.outputFacets["outputStatistics"].fileCount == 2 * result["parts"]
        inputs = _tables(lineage.inputs, store_url)
        assert set(inputs) == {"cs_batch", "cs_session", "cs_event"}
        assert _rows(inputs["cs_session"], "input") == 120
        assert _rows(inputs["cs_event"], "input") == result["events"] > 0
        run = _run(lineage)
        assert run.batch_id == batch_id
        assert (run.facts["sessions"], run.facts["events"], run.facts["release_id"]) == (120, result["events"], "r-7")

    def test_a_shard_reports_the_same_root_and_its_range(
        self, released: tuple[SessionStore, str], tmp_path: Path
    ) -> None:
        store, batch_id = released
        op = ExtractBatchOperator(
            task_id="extract", batch_id=batch_id, base_path=str(tmp_path), until_number=10**12, write_manifest=False
        )
        result = op.execute({})
        lineage = _facets(op)
        assert [o.name for o in lineage.outputs] == [str(tmp_path / batch_id)]
        run = _run(lineage)
        assert (run.facts["after_number"], run.facts["until_number"]) == (0, 10**12)
        assert run.facts["parts"] == len(result["parts"])

    def test_metrics(self, released: tuple[SessionStore, str], store_url: str, tmp_path: Path) -> None:
        store, batch_id = released
        op = BatchMetricsOperator(task_id="metrics", batch_id=batch_id, base_path=str(tmp_path))
        metrics = op.execute({})
        lineage = _facets(op)
        assert [(o.namespace, o.name) for o in lineage.outputs] == [("file", str(tmp_path / batch_id))]
        inputs = _tables(lineage.inputs, store_url)
        assert _rows(inputs["cs_session"], "input") == 120 and _rows(inputs["cs_event"], "input") == metrics["events"]
        run = _run(lineage)
        assert run.batch_id == batch_id and run.facts["clicks"] == metrics["clicks"]

    def test_mark(self, released: tuple[SessionStore, str], store_url: str) -> None:
        store, batch_id = released
        op = MarkForImprovementOperator(task_id="mark", batch_id=batch_id)
        result = op.execute({})
        lineage = _facets(op)
        outputs = _tables(lineage.outputs, store_url)
        assert _rows(outputs["cs_improvement_mark"]) == result["counts"]["marked"] > 0
        assert _run(lineage).batch_id == batch_id

    def test_import(self, clickstream_conn: SessionStore, store_url: str) -> None:
        op = ImportHistoryOperator(task_id="import", path=str(EXAMPLES), invalid_threshold=0)
        report = op.execute({})
        lineage = _facets(op)
        (source,) = lineage.inputs
        assert (source.namespace, source.name) == ("file", str(EXAMPLES))
        assert source.inputFacets["inputStatistics"].rowCount == report["rows"]
        assert source.inputFacets["inputStatistics"].fileCount == len(report["files"])
        outputs = _tables(lineage.outputs, store_url)
        assert _rows(outputs["cs_session"]) == report["loaded_sessions"] == 3
        assert _rows(outputs["cs_event"]) == report["loaded_events"] == 4
        assert _run(lineage).batch_id == report["batch_id"] is not None

    def test_erase_reports_counts_but_never_the_user(self, store: SessionStore, store_url: str) -> None:
        body = {"session_id": "s-erase", "search_results": [{"object_id": "o"}], "user_id": "secret-user-42"}
        store.register_session(body)
        op = EraseUserOperator(task_id="erase", user_id="secret-user-42")
        op.execute({})
        lineage = _facets(op)
        assert set(_tables(lineage.outputs, store_url)) == {"cs_session", "cs_event", "cs_improvement_mark"}
        run = _run(lineage)
        assert run.facts["erased_sessions"] == 1
        from openlineage.client.serde import Serde

        assert "secret-user-42" not in Serde.to_json(run)

    def test_a_failed_task_still_reports_what_it_touches(self, store: SessionStore, tmp_path: Path) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        op = ExtractBatchOperator(task_id="extract", batch_id="nope", base_path=str(tmp_path))
        with pytest.raises(AirflowFailException):
            op.execute({})
        lineage = _facets(op)  # the listener asks for facets on failure too
        assert [o.name for o in lineage.outputs] == [str(tmp_path / "nope")]
        assert "sessions" not in _run(lineage).facts


class TestOpenLineageProvider:
    def test_its_default_extractor_collects_our_facets(self, store: SessionStore) -> None:
        from airflow.providers.openlineage.extractors.base import DefaultExtractor

        seed_store(store, 3, seed=3)
        op = ReleaseBatchOperator(task_id="release", release_id="r")
        op.execute({})
        lineage = DefaultExtractor(op).extract_on_complete(None)
        assert lineage is not None and len(lineage.inputs) == 2 and "clickstream" in lineage.run_facets

    def test_the_facets_serialize_to_openlineage_json(self, released: tuple[SessionStore, str], tmp_path: Path) -> None:
        from openlineage.client.serde import Serde

        store, batch_id = released
        op = ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path))
        op.execute({})
        lineage = _facets(op)
        run = json.loads(Serde.to_json(_run(lineage)))
        assert run["batch_id"] == batch_id and run["facts"]["sessions"] == 120
        output = json.loads(Serde.to_json(lineage.outputs[0]))
        assert output["outputFacets"]["outputStatistics"]["rowCount"] == 120

    def test_operators_import_and_run_without_it(self, tmp_path: Path) -> None:
        # A fresh interpreter in which neither the provider nor the OpenLineage client can be imported.
        script = f"""
import importlib.abc, importlib.metadata, sys

HIDDEN = ("openlineage", "airflow.providers.openlineage")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "openlineage" or name.startswith(("openlineage.", *HIDDEN[1:])):
            raise ModuleNotFoundError(name)
        return None

sys.meta_path.insert(0, Block())
for module in (importlib.metadata, __import__("importlib_metadata")):  # Airflow uses the backport on 3.11
    def visible(installed=module.distributions, **kw):
        return [d for d in installed(**kw) if "openlineage" not in (d.metadata["Name"] or "").lower()]
    module.distributions = visible
from clickstream.operators import ExtractBatchOperator, ReleaseBatchOperator
from clickstream.store import SessionStore
from clickstream.synthetic import seed_store

store = SessionStore.from_url("sqlite:///{tmp_path}/store.db")
store.migrate()
seed_store(store, 20, seed=1)
released = ReleaseBatchOperator(task_id="release", release_id="r").execute({{}})
summary = ExtractBatchOperator(task_id="x", batch_id=released["batch_id"], base_path="{tmp_path}/ds").execute({{}})
assert summary["sessions"] == 20, summary
assert not [m for m in sys.modules if m.startswith(("openlineage", "airflow.providers.openlineage"))]
print("ok")
"""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")},
            "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": f"sqlite:///{tmp_path}/store.db",
        }
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == "ok"
