"""End-to-end runs of the clickstream DAGs with ``dag.test()`` against real session stores.

Each run seeds a store with the synthetic clickstream, runs the DAG from the repository's ``dags/`` folder,
and checks what a user would look at: the dataset on disk (read back with pandas) against the batch in the
store, the improvement marks, the metrics, and the XCom results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from clickstream.store import SessionStore
from clickstream.synthetic import push_late_events, seed_store
from tests.support import REPO_ROOT

REPO = REPO_ROOT
OUR_DAGS = ("clickstream_release", "clickstream_use_for_improvement", "clickstream_train_example")


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def sqlite_store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    s = SessionStore.from_url(sqlite_url)
    s.migrate()
    monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", sqlite_url)
    yield s
    s.dispose()


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def _xcom(dag_run, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, map_indexes=map_index, key=key
            )
        ).first()
        assert row is not None, f"no XCom {key!r} from {task_id}[{map_index}]"
        return XComModel.deserialize_value(row)


def _states(dag_run) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.state
            for ti in dag_run.get_task_instances(session=session)
        }


def _read_dataset(root: Path) -> tuple[Any, Any, dict]:
    import pandas as pd

    manifest = json.loads((root / "_manifest.json").read_text())
    sessions = pd.concat([pd.read_parquet(root / "sessions" / p["name"]) for p in manifest["parts"]])
    events = pd.concat([pd.read_parquet(root / "events" / p["name"]) for p in manifest["parts"]])
    return sessions, events, manifest


def _batch_in_store(store: SessionStore, batch_id: str) -> list[dict]:
    return [s for page in store.iter_batch_pages(batch_id, page_size=97) for s in page]


def _eligible(store: SessionStore, batch: list[dict]) -> set[str]:
    """Sessions the batch-wide mark must have queued: not payload search; an event on a shown result or
    marked irrelevant."""
    out = set()
    for s in batch:
        shown = {r["object_id"] for r in s["search_results"]}
        full = store.get_session(s["session_id"])
        if not full.is_payload_search and (s["is_irrelevant"] or any(e["object_id"] in shown for e in s["events"])):
            out.add(s["session_id"])
    return out


# --------------------------------------------------------------------------------------------- folder


class TestDagFolder:
    def test_dag_folder_imports_without_errors_or_deprecation_warnings_from_our_code(self):
        from airflow.dag_processing.dagbag import DagBag

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        assert set(OUR_DAGS) <= set(bag.dag_ids)
        ours = [
            w
            for w in caught
            if issubclass(w.category, DeprecationWarning)
            and (str(REPO / "dags") in w.filename or str(REPO / "plugins") in w.filename)
        ]
        assert ours == [], [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]

    def test_parsing_our_dags_opens_no_database_and_imports_no_heavy_modules(self, tmp_path: Path):
        # The DAG processor imports every DAG file often: no store engine, pyarrow or pandas at parse time.
        script = (
            "import sys\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            f"for name in {OUR_DAGS!r}:\n"
            f"    bag = DagBag(dag_folder={str(REPO / 'dags')!r} + '/' + name + '.py')\n"
            "    assert bag.import_errors == {}, bag.import_errors\n"
            "print(sorted(m for m in ('clickstream.store', 'clickstream.dataset', 'clickstream.hooks', 'pyarrow')"
            " if m in sys.modules))\n"
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "AIRFLOW_HOME": str(tmp_path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            # a store that cannot be reached: parsing must not try
            "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": "postgresql://nobody@127.0.0.1:1/none",
        }
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "[]"

    @pytest.mark.usefixtures("airflow_db")  # DagBag.get_dag looks the DAG up in the metadata DB
    def test_release_dag_declares_the_released_dataset_asset_and_the_example_is_scheduled_on_it(self):
        release = _dag("clickstream_release")
        train = _dag("clickstream_train_example")
        outlets = [o.uri for o in release.get_task("write_manifest").outlets]
        assert outlets == ["clickstream://datasets/released-batches"]
        assert [a.uri for a in train.timetable.asset_condition.objects] == outlets


# --------------------------------------------------------------------------------------------- release


@pytest.mark.usefixtures("airflow_db")
class TestReleaseDag:
    def test_run_releases_extracts_marks_and_measures_the_collecting_batch(self, store: SessionStore, tmp_path: Path):
        seeded = seed_store(store, 240, seed=11, hold_late=True)
        base = tmp_path / "datasets"
        dr = _dag("clickstream_release").test(
            run_conf={"base_path": str(base), "shards": 3, "page_size": 25, "pages_per_part": 2}
        )
        assert dr.state == "success", _states(dr)

        release = _xcom(dr, "release")
        assert release["release_id"] == f"clickstream_release/{dr.run_id}"
        batch_id = release["batch_id"]
        assert store.get_batch(batch_id).status == "released"
        assert _states(dr) == {
            "release": "success",
            "plan_shards": "success",
            "extract[0]": "success",
            "extract[1]": "success",
            "extract[2]": "success",
            "labels": "success",
            "write_manifest": "success",
            "mark_for_improvement": "success",
            "metrics": "success",
        }

        # the dataset holds exactly the batch's sessions and events
        from clickstream.dataset import to_api_sessions

        sessions, events, manifest = _read_dataset(base / batch_id)
        batch = _batch_in_store(store, batch_id)
        assert len(sessions) == seeded.sessions == len(batch)
        assert len(events) == sum(len(s["events"]) for s in batch) == seeded.events
        assert to_api_sessions(sessions, events) == batch
        assert (
            sessions["session_number"].is_unique
            and events.groupby("session_id")["event_id"].apply(lambda ids: ids.is_unique).all()
        )
        assert (manifest["batch_id"], manifest["sessions"], manifest["events"], manifest["complete"]) == (
            batch_id,
            len(batch),
            len(events),
            True,
        )
        assert _xcom(dr, "write_manifest")["paths"]["root"] == f"file://{base / batch_id}"

        # marks: every eligible session, once; the counts add up to the batch
        mark = _xcom(dr, "mark_for_improvement")
        eligible = _eligible(store, batch)
        assert mark["counts"]["marked"] == len(eligible) > 0
        assert sum(mark["counts"].values()) == len(batch)
        assert mark["counts"]["skipped_payload_search"] == seeded.payload_search_sessions
        assert all(store.get_improvement_mark(sid).status == "pending" for sid in eligible)

        # metrics beside the dataset, equal to the store's
        metrics = json.loads((base / batch_id / "metrics.json").read_text())
        assert metrics == store.batch_metrics(batch_id).model_dump()
        assert metrics["sessions"] == len(batch) and metrics["late_events"] == 0
        assert _xcom(dr, "metrics")["click_through_rate"] == metrics["click_through_rate"]

        # the labels step's three tables, readable with pandas, listed in the manifest
        from clickstream.dataset import read_table

        assert set(manifest["tables"]) == {"sessions", "events", "propensities", "judgments", "pairs"}
        root = base / batch_id
        curve = read_table(root, "propensities", manifest)
        judgments = read_table(root, "judgments", manifest)
        pairs = read_table(root, "pairs", manifest)
        kept = store.batch_propensities(batch_id)
        assert list(curve["position"]) == [p.position for p in kept.propensities] == list(range(1, 21))
        assert list(curve["impressions"]) == [p.impressions for p in kept.propensities]
        assert len(judgments) == manifest["labels"]["tables"]["judgments"]["rows"] == kept.report.judgments > 0
        assert len(pairs) == manifest["labels"]["tables"]["pairs"]["rows"]
        assert set(pairs["session_id"]) <= set(sessions.loc[~sessions["is_irrelevant"], "session_id"])
        for table in ("propensities", "judgments", "pairs"):
            assert sorted(p.name for p in (root / table).iterdir()) == sorted(
                p["name"] for p in manifest["labels"]["tables"][table]["parts"]
            )
        assert _xcom(dr, "labels")["report"]["fitted_sessions"] == kept.report.fitted_sessions

        # late events pushed after the release are counted by the metrics, not added to the dataset
        assert push_late_events(store, seeded) > 0
        assert store.batch_metrics(batch_id).late_events == seeded.late_events

    def test_nothing_collected_skips_the_run_without_failing(self, store: SessionStore, tmp_path: Path):
        dr = _dag("clickstream_release").test(run_conf={"base_path": str(tmp_path / "ds")})
        assert dr.state == "success"
        assert set(_states(dr).values()) == {"skipped"}
        assert not (tmp_path / "ds").exists()
        assert store.list_batches() == []

    def test_rerun_with_the_same_release_id_answers_the_same_release_and_rewrites_the_same_dataset(
        self, sqlite_store: SessionStore, tmp_path: Path
    ):
        seed_store(sqlite_store, 120, seed=12)
        base = tmp_path / "datasets"
        conf = {"base_path": str(base), "release_id": "weekly-42", "shards": 2, "page_size": 40}
        first = _dag("clickstream_release").test(run_conf=conf)
        batch_id = _xcom(first, "release")["batch_id"]
        sessions_1, events_1, _ = _read_dataset(base / batch_id)

        seed_store(sqlite_store, 30, seed=13)  # a new batch is collecting meanwhile
        second = _dag("clickstream_release").test(run_conf={**conf, "shards": 3})
        assert second.state == "success", _states(second)
        assert _xcom(second, "release") == _xcom(first, "release")
        assert [b.status for b in sqlite_store.list_batches()] == ["collecting", "released"]
        sessions_2, events_2, manifest = _read_dataset(base / batch_id)
        assert sessions_2.reset_index(drop=True).equals(sessions_1.reset_index(drop=True))
        assert events_2.reset_index(drop=True).equals(events_1.reset_index(drop=True))
        assert len(manifest["shards"]) == 3
        assert sorted(p.name for p in (base / batch_id / "sessions").iterdir()) == sorted(
            p["name"] for p in manifest["parts"]
        )
        mark = _xcom(second, "mark_for_improvement")["counts"]
        assert (
            mark["marked"] == 0 and mark["already_marked"] == _xcom(first, "mark_for_improvement")["counts"]["marked"]
        )


# --------------------------------------------------------------------------------------------- manual marking


@pytest.mark.usefixtures("airflow_db")
class TestUseForImprovementDag:
    def test_form_session_ids_are_marked_and_each_outcome_is_reported(self, store: SessionStore):
        seed_store(store, 60, seed=21)
        batch_id = store.list_batches()[0].batch_id
        batch = _batch_in_store(store, batch_id)
        eligible = sorted(_eligible(store, batch))
        payload = next(s["session_id"] for s in batch if store.get_session(s["session_id"]).is_payload_search)
        no_events = next(
            s["session_id"]
            for s in batch
            if not s["events"] and not s["is_irrelevant"] and not store.get_session(s["session_id"]).is_payload_search
        )
        store.use_for_improvement(eligible[1])
        ids = [eligible[0], eligible[1], payload, no_events, "no-such-session"]

        dr = _dag("clickstream_use_for_improvement").test(run_conf={"session_ids": ids})
        assert dr.state == "success", _states(dr)
        result = _xcom(dr, "use_for_improvement")
        assert result["outcomes"] == [
            {"session_id": eligible[0], "status": "marked", "reason": None},
            {"session_id": eligible[1], "status": "already_marked", "reason": None},
            {"session_id": payload, "status": "skipped", "reason": "payload_search"},
            {"session_id": no_events, "status": "skipped", "reason": "no_events"},
            {"session_id": "no-such-session", "status": "not_found", "reason": None},
        ]
        assert result["counts"] == {
            "marked": 1,
            "already_marked": 1,
            "skipped_payload_search": 1,
            "skipped_no_events": 1,
            "not_found": 1,
        }
        assert store.get_improvement_mark(eligible[0]).status == "pending"

    def test_an_empty_form_is_refused_before_the_run(self, sqlite_store: SessionStore):
        from airflow.sdk.exceptions import ParamValidationError

        with pytest.raises(ParamValidationError, match="session_ids"):
            _dag("clickstream_use_for_improvement").test(run_conf={"session_ids": []})


# --------------------------------------------------------------------------------------------- consumer


@pytest.mark.usefixtures("airflow_db")
class TestTrainExampleDag:
    def test_reads_the_newest_released_dataset_with_pandas(self, sqlite_store: SessionStore, tmp_path: Path):
        base = tmp_path / "datasets"
        seed_store(sqlite_store, 80, seed=31, release_id="older")
        old = _dag("clickstream_release").test(run_conf={"base_path": str(base), "release_id": "older"})
        seed_store(sqlite_store, 50, seed=32)
        new = _dag("clickstream_release").test(run_conf={"base_path": str(base)})
        newest = _xcom(new, "release")["batch_id"]
        assert newest != _xcom(old, "release")["batch_id"]

        dr = _dag("clickstream_train_example").test(run_conf={"base_path": str(base)})
        assert dr.state == "success", _states(dr)
        result = _xcom(dr, "summarize_dataset")
        assert result["batch_ids"] == [newest] and len(result["datasets"]) == 1
        summary = result["datasets"][0]
        assert (result["sessions"], result["events"], result["clicks"]) == (
            summary["sessions"],
            summary["events"],
            summary["clicks"],
        )
        metrics = sqlite_store.batch_metrics(newest)
        assert (summary["batch_id"], summary["sessions"], summary["events"], summary["clicks"]) == (
            newest,
            50,
            metrics.events,
            metrics.clicks,
        )
        assert summary["click_through_rate"] == pytest.approx(metrics.click_through_rate, abs=1e-4)
        assert sum(summary["clicks_by_rank"].values()) <= metrics.clicks
        from clickstream.dataset import read_table

        assert summary["pairs"]["pairs"] == len(read_table(base / newest, "pairs"))


# --------------------------------------------------------------------------------------------- every DAG


@pytest.mark.usefixtures("airflow_db")
class TestConnectionParam:
    def test_every_dag_using_the_store_has_a_conn_id_param_that_its_tasks_use(self):
        from airflow.dag_processing.dagbag import DagBag

        from clickstream.operators import ClickstreamBaseOperator

        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert bag.import_errors == {}
        using_store = 0
        for dag_id in bag.dag_ids:
            dag = bag.get_dag(dag_id)
            operators = [t for t in dag.tasks if isinstance(t, ClickstreamBaseOperator)]
            mapped = [t for t in dag.tasks if "clickstream_conn_id" in getattr(t, "partial_kwargs", {})]
            if not operators and not mapped:
                continue
            using_store += 1
            assert dag.params["conn_id"] == "clickstream_default", dag_id
            for task in operators:
                assert task.clickstream_conn_id == "{{ params.conn_id }}", f"{dag_id}.{task.task_id}"
            for task in mapped:
                assert task.partial_kwargs["clickstream_conn_id"] == "{{ params.conn_id }}", f"{dag_id}.{task.task_id}"
        assert using_store >= 4  # release, use_for_improvement, import, erase_user (and retention)

    def test_a_clickstream_uri_connection_serves_the_dags(self, pg_url: str, monkeypatch: pytest.MonkeyPatch):
        from sqlalchemy.engine import make_url

        store = SessionStore.from_url(pg_url)
        store.migrate()
        uri = make_url(pg_url).set(drivername="clickstream").render_as_string(hide_password=False)
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", uri)  # clickstream://user@127.0.0.1:port/db
        try:
            seed_store(store, 10, seed=5)
            dr = _dag("clickstream_use_for_improvement").test(run_conf={"session_ids": ["nope"]})
            assert dr.state == "success", _states(dr)
            assert _xcom(dr, "use_for_improvement")["counts"]["not_found"] == 1
        finally:
            store.dispose()

    def test_the_import_dag_reads_from_the_store_named_in_the_form(
        self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ):
        store = SessionStore.from_url(sqlite_url)
        store.migrate()
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", "postgresql://nobody@127.0.0.1:1/none")
        monkeypatch.setenv("AIRFLOW_CONN_HISTORY_STORE", sqlite_url)
        try:
            dr = _dag("clickstream_import").test(
                run_conf={
                    "path": str(REPO / "examples" / "history"),
                    "invalid_threshold": 0,
                    "conn_id": "history_store",
                }
            )
            assert dr.state == "success", _states(dr)
            assert len(store.get_session("hist-0002").events) == 2
        finally:
            store.dispose()


# --------------------------------------------------------------------------------------------- consumer events


class _Event:
    """An asset event as the task sees it in ``triggering_asset_events`` (extra and timestamp)."""

    def __init__(self, extra: dict[str, Any], minute: int) -> None:
        from datetime import UTC, datetime

        self.extra = extra
        self.timestamp = datetime(2026, 1, 1, 0, minute, tzinfo=UTC)


@pytest.mark.usefixtures("airflow_db")
class TestTrainExampleEvents:
    def test_one_run_triggered_by_two_releases_reads_both_datasets(
        self, sqlite_store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        base = tmp_path / "datasets"
        extras = []
        for seed, n in ((41, 30), (42, 20)):
            seed_store(sqlite_store, n, seed=seed)
            dr = _dag("clickstream_release").test(run_conf={"base_path": str(base)})
            assert dr.state == "success", _states(dr)
            summary = _xcom(dr, "write_manifest")
            extras.append({"batch_id": summary["batch_id"], "path": summary["paths"]["root"]})
        # The scheduler queued one run for both asset events (newest listed first here, and the older
        # dataset announced twice, as a cleared rerun of its release would do).
        events = [_Event(extras[1], 2), _Event(extras[0], 1), _Event(extras[0], 3)]
        task = _dag("clickstream_train_example").get_task("summarize_dataset")
        context = {"params": {"base_path": str(base), "batch_id": None}, "triggering_asset_events": {"a": events}}
        monkeypatch.setitem(task.python_callable.__globals__, "get_current_context", lambda: context)

        result = task.python_callable()
        assert result["batch_ids"] == [extras[0]["batch_id"], extras[1]["batch_id"]]
        assert [d["sessions"] for d in result["datasets"]] == [30, 20]
        assert result["sessions"] == 50
        assert result["events"] == sum(d["events"] for d in result["datasets"])
