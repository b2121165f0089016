"""The clickstream operators against real stores (SQLite and PostgreSQL), executed directly.

No Airflow metadata DB is needed: ``operator.execute(context={})`` runs the operator's work with the
``clickstream_default`` connection taken from ``AIRFLOW_CONN_CLICKSTREAM_DEFAULT``.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from clickstream.dataset import ShardWriter, to_api_sessions
from clickstream.operators import (
    BatchMetricsOperator,
    ClickstreamBaseOperator,
    EraseUserOperator,
    ExtractBatchOperator,
    ImportHistoryOperator,
    MarkForImprovementOperator,
    ReleaseBatchOperator,
)
from clickstream.operators.base import InvalidTaskInput
from clickstream.operators.extract import plan_shards, shard_size, write_dataset_manifest
from clickstream.progress import Progress
from clickstream.store import SessionStore
from clickstream.synthetic import seed_store

pytestmark = pytest.mark.filterwarnings("ignore:.*cannot be called outside of the Task Runner")


@pytest.fixture
def released(store: SessionStore) -> tuple[SessionStore, str]:
    """A store with a released batch of 230 synthetic sessions (late events included)."""
    counts = seed_store(store, 230, seed=5, release_id="r-1")
    assert counts.release is not None
    return store, counts.release["batch_id"]


def _dataset(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read a dataset the way a user would: pandas over the part files the manifest lists."""
    manifest = json.loads((root / "_manifest.json").read_text())
    sessions = pd.concat([pd.read_parquet(root / "sessions" / p["name"]) for p in manifest["parts"]], ignore_index=True)
    events = pd.concat([pd.read_parquet(root / "events" / p["name"]) for p in manifest["parts"]], ignore_index=True)
    return sessions, events, manifest


def _batch(store: SessionStore, batch_id: str) -> list[dict[str, Any]]:
    return [s for page in store.iter_batch_pages(batch_id) for s in page]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


class _Crash(RuntimeError):
    pass


class _CrashingExtract(ExtractBatchOperator):
    """An extraction whose worker dies after ``crash_after`` pages (a partially written part stays)."""

    def __init__(self, *, crash_after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crash_after = crash_after

    def make_writer(self, root, after, until):
        crash_after = self.crash_after

        class Writer(ShardWriter):
            def on_page(self, pages_done: int, sessions: int, events: int) -> None:
                if pages_done == crash_after:
                    raise _Crash(f"killed after {pages_done} pages")

        return Writer(
            root, self.batch_id, after_number=after, until_number=until, pages_per_part=int(self.pages_per_part)
        )


# --------------------------------------------------------------------------------------------- release


class TestReleaseBatchOperator:
    def test_releases_the_collecting_batch_and_returns_its_release(self, store: SessionStore):
        seeded = seed_store(store, 20, seed=1)
        result = ReleaseBatchOperator(task_id="release", release_id="nightly-1").execute({})
        assert result["release_id"] == "nightly-1"
        assert result["batch_id"] == seeded.batch_ids[0]
        assert store.get_batch(result["batch_id"]).status == "released"
        assert set(result) == {"release_id", "batch_id", "released_at"}

    def test_a_retry_answers_the_same_release_even_when_a_new_batch_is_collecting(self, store: SessionStore):
        seed_store(store, 10, seed=1)
        op = ReleaseBatchOperator(task_id="release", release_id="clickstream_release/manual__1")
        first = op.execute({})
        seed_store(store, 5, seed=2)  # sessions keep arriving into a new batch
        again = op.execute({})
        assert again == first
        collecting = store.list_batches(status="collecting")
        assert len(collecting) == 1 and collecting[0].batch_id != first["batch_id"]

    def test_nothing_to_release_skips_with_a_clear_reason(self, store: SessionStore):
        from airflow.sdk.exceptions import AirflowSkipException

        with pytest.raises(AirflowSkipException, match="no collecting batch"):
            ReleaseBatchOperator(task_id="release", release_id="r").execute({})

    def test_an_invalid_release_id_fails_at_once_instead_of_retrying(self, store: SessionStore):
        from airflow.sdk.exceptions import AirflowFailException

        seed_store(store, 3, seed=1)
        with pytest.raises(AirflowFailException, match="release_id"):
            ReleaseBatchOperator(task_id="release", release_id="r" * 513).execute({})
        assert store.list_batches()[0].status == "collecting"

    def test_default_release_id_is_derived_from_the_dag_run(self):
        op = ReleaseBatchOperator(task_id="release")
        assert op.release_id == "{{ dag.dag_id }}/{{ run_id }}"
        assert "release_id" in op.template_fields and op.multiple_outputs


# --------------------------------------------------------------------------------------------- extract


class TestExtractBatchOperator:
    def test_dataset_rows_equal_the_batch_sessions_and_events(self, released, tmp_path: Path):
        store, batch_id = released
        result = ExtractBatchOperator(
            task_id="extract", batch_id=batch_id, base_path=str(tmp_path), page_size=40, pages_per_part=2
        ).execute({})
        sessions, events, manifest = _dataset(tmp_path / batch_id)
        batch = _batch(store, batch_id)
        assert to_api_sessions(sessions, events) == batch
        assert len(sessions) == len(batch) == 230
        assert len(events) == sum(len(s["events"]) for s in batch)
        assert (sessions["batch_id"] == batch_id).all() and (events["batch_id"] == batch_id).all()
        assert result["sessions"] == manifest["sessions"] == 230
        assert result["events"] == manifest["events"] == len(events)
        assert result["release_id"] == manifest["release_id"] == "r-1"
        assert result["paths"]["manifest"] == f"file://{tmp_path / batch_id / '_manifest.json'}"
        assert len(json.dumps(result)) < 2000  # XCom carries a summary, never rows

    def test_parts_hold_pages_as_row_groups_so_memory_is_bounded_by_a_page(self, released, tmp_path: Path):
        store, batch_id = released
        ExtractBatchOperator(
            task_id="extract", batch_id=batch_id, base_path=str(tmp_path), page_size=40, pages_per_part=2
        ).execute({})
        parts = sorted((tmp_path / batch_id / "sessions").iterdir())
        assert len(parts) == 3  # 230 sessions / (40 * 2) per part
        row_groups = [
            pq.ParquetFile(p).metadata.row_group(i).num_rows
            for p in parts
            for i in range(pq.ParquetFile(p).num_row_groups)
        ]
        assert row_groups == [40, 40, 40, 40, 40, 30]

    def test_a_retry_after_a_crash_half_way_writes_the_same_dataset_as_an_uninterrupted_run(
        self, released, tmp_path: Path
    ):
        store, batch_id = released
        clean, retried = tmp_path / "clean", tmp_path / "retried"
        ExtractBatchOperator(
            task_id="extract", batch_id=batch_id, base_path=str(clean), page_size=30, pages_per_part=2
        ).execute({})

        crashing = _CrashingExtract(
            task_id="extract", batch_id=batch_id, base_path=str(retried), page_size=30, pages_per_part=2, crash_after=5
        )
        with pytest.raises(_Crash):
            crashing.execute({})
        assert not (retried / batch_id / "_manifest.json").exists()  # incomplete: no manifest
        assert len(_files(retried / batch_id)) == 6  # 2 full parts + the part open at the crash, per table

        ExtractBatchOperator(
            task_id="extract", batch_id=batch_id, base_path=str(retried), page_size=30, pages_per_part=2
        ).execute({})
        s_clean, e_clean, m_clean = _dataset(clean / batch_id)
        s_retry, e_retry, m_retry = _dataset(retried / batch_id)
        pd.testing.assert_frame_equal(s_retry, s_clean)
        pd.testing.assert_frame_equal(e_retry, e_clean)
        assert m_retry["parts"] == m_clean["parts"]
        assert _files(retried / batch_id) == _files(clean / batch_id)

    def test_sharded_extraction_equals_unsharded_and_replaces_an_earlier_shard_plan(self, released, tmp_path: Path):
        store, batch_id = released
        whole, sharded = tmp_path / "whole", tmp_path / "sharded"
        ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(whole), page_size=25).execute({})

        def run_sharded(n: int) -> dict[str, Any]:
            shards = plan_shards(batch_id, n, base_path=str(sharded))
            assert len(shards) == n and shards[0]["after_number"] == 0 and shards[-1]["until_number"] is None
            results = [
                ExtractBatchOperator(
                    task_id="extract", base_path=str(sharded), page_size=25, write_manifest=False, **shard
                ).execute({})
                for shard in reversed(shards)
            ]  # shards may finish in any order
            return write_dataset_manifest(batch_id, results, base_path=str(sharded))

        run_sharded(7)
        summary = run_sharded(3)  # a rerun with another plan leaves no part of the first one behind
        s_whole, e_whole, _ = _dataset(whole / batch_id)
        s_shard, e_shard, manifest = _dataset(sharded / batch_id)
        pd.testing.assert_frame_equal(s_shard, s_whole)
        pd.testing.assert_frame_equal(e_shard, e_whole)
        assert summary["shards"] == len(manifest["shards"]) == 3
        assert sum(s["sessions"] for s in manifest["shards"]) == 230
        assert sorted(p.name for p in (sharded / batch_id / "events").iterdir()) == sorted(
            p["name"] for p in manifest["parts"]
        )

    def test_plan_shards_covers_the_batch_with_contiguous_ranges(self, released, tmp_path: Path):
        store, batch_id = released
        info = store.get_batch(batch_id)
        shards = plan_shards(batch_id, 4, base_path=str(tmp_path))
        bounds = [(s["after_number"], s["until_number"]) for s in shards]
        assert all(a[1] == b[0] for a, b in pairwise(bounds))
        sizes = [
            sum(len(p) for p in store.iter_batch_pages(batch_id, after_number=a, until_number=u)) for a, u in bounds
        ]
        assert sum(sizes) == info.sessions and min(sizes) > 0
        assert max(sizes) - min(sizes) <= 3
        # more shards than session numbers: one number per shard at most, never an empty range
        assert len(plan_shards(batch_id, 1000, base_path=str(tmp_path))) <= info.max_number - info.min_number + 1

    def test_a_collecting_batch_is_refused(self, store: SessionStore, tmp_path: Path):
        from airflow.sdk.exceptions import AirflowFailException

        seeded = seed_store(store, 5, seed=1)
        with pytest.raises(AirflowFailException, match="still collecting"):
            ExtractBatchOperator(
                task_id="extract", batch_id=seeded.batch_ids[0], base_path=str(tmp_path / "out")
            ).execute({})
        assert not (tmp_path / "out").exists()

    def test_an_unknown_batch_is_refused_naming_it(self, store: SessionStore, tmp_path: Path):
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match="batch_id 'nope' not found"):
            ExtractBatchOperator(task_id="extract", batch_id="nope", base_path=str(tmp_path)).execute({})

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("page_size", 0, "page_size: must be >= 1"),
            ("page_size", "many", "page_size: expected an integer"),
            ("pages_per_part", 0, "pages_per_part: must be >= 1"),
            ("until_number", -1, "after_number/until_number"),
        ],
    )
    def test_bad_parameters_fail_naming_the_field_before_writing(self, released, tmp_path: Path, field, value, message):
        store, batch_id = released
        with pytest.raises(ValueError, match=message):
            ExtractBatchOperator(
                task_id="extract", batch_id=batch_id, base_path=str(tmp_path), **{field: value}
            ).execute({})
        assert not (tmp_path / batch_id / "_manifest.json").exists()

    @pytest.mark.parametrize("batch_id", ["", "../etc", "a/b"])
    def test_a_batch_id_that_could_escape_the_base_path_is_refused(self, tmp_path: Path, batch_id: str):
        with pytest.raises(ValueError, match="batch_id"):
            ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path)).execute({})


# --------------------------------------------------------------------------------------------- mark


class TestMarkForImprovementOperator:
    def _ids(self, store: SessionStore, batch_id: str) -> dict[str, str]:
        batch = _batch(store, batch_id)
        payload = {s.session_id for s in (store.get_session(b["session_id"]) for b in batch) if s.is_payload_search}
        pick: dict[str, str] = {}
        for s in batch:
            shown = {r["object_id"] for r in s["search_results"]}
            if s["session_id"] in payload:
                pick.setdefault("payload", s["session_id"])
            elif any(e["object_id"] in shown for e in s["events"]):
                pick.setdefault("clicked", s["session_id"])
            elif s["is_irrelevant"]:
                pick.setdefault("irrelevant", s["session_id"])
            elif not s["events"]:
                pick.setdefault("no_events", s["session_id"])
        assert set(pick) == {"payload", "clicked", "irrelevant", "no_events"}
        return pick

    def test_session_ids_report_an_outcome_per_session_and_counts(self, released):
        store, batch_id = released
        ids = self._ids(store, batch_id)
        op = MarkForImprovementOperator(
            task_id="mark", session_ids=[ids["clicked"], ids["irrelevant"], ids["payload"], ids["no_events"], "ghost"]
        )
        result = op.execute({})
        assert [(o["status"], o["reason"]) for o in result["outcomes"]] == [
            ("marked", None),
            ("marked", None),
            ("skipped", "payload_search"),
            ("skipped", "no_events"),
            ("not_found", None),
        ]
        assert result["counts"] == {
            "marked": 2,
            "already_marked": 0,
            "skipped_payload_search": 1,
            "skipped_no_events": 1,
            "not_found": 1,
        }
        assert store.get_improvement_mark(ids["clicked"]).status == "pending"
        retry = op.execute({})
        assert retry["counts"]["marked"] == 0 and retry["counts"]["already_marked"] == 2

    def test_session_ids_from_the_ui_as_text_are_split_on_commas_spaces_and_lines(self, released):
        store, batch_id = released
        ids = self._ids(store, batch_id)
        result = MarkForImprovementOperator(
            task_id="mark", session_ids=f" {ids['clicked']},\n{ids['no_events']}\n\n{ids['clicked']} "
        ).execute({})
        assert [o["session_id"] for o in result["outcomes"]] == [ids["clicked"], ids["no_events"]]

    def test_batch_id_marks_every_eligible_session_once(self, released):
        store, batch_id = released
        ids = self._ids(store, batch_id)
        store.use_for_improvement(ids["clicked"])
        result = MarkForImprovementOperator(task_id="mark", batch_id=batch_id).execute({})
        counts = result["counts"]
        assert result["batch_id"] == batch_id
        assert sum(counts.values()) == 230 and counts["already_marked"] == 1 and counts["marked"] > 0
        assert store.get_improvement_mark(ids["irrelevant"]).status == "pending"
        from clickstream.store import NotFound

        for key in ("payload", "no_events"):
            with pytest.raises(NotFound):
                store.get_improvement_mark(ids[key])
        again = MarkForImprovementOperator(task_id="mark", batch_id=batch_id).execute({})["counts"]
        assert again["marked"] == 0 and again["already_marked"] == counts["marked"] + 1

    @pytest.mark.parametrize(
        "kwargs", [{}, {"session_ids": ["a"], "batch_id": "b"}, {"session_ids": " , "}, {"session_ids": "[1, 2]"}]
    )
    def test_exactly_one_of_session_ids_and_batch_id_is_required(self, store: SessionStore, kwargs):
        with pytest.raises(ValueError, match="session_ids"):
            MarkForImprovementOperator(task_id="mark", **kwargs).execute({})


# --------------------------------------------------------------------------------------------- metrics


class TestBatchMetricsOperator:
    def test_metrics_are_written_beside_the_dataset_and_returned(self, store: SessionStore, tmp_path: Path):
        seeded = seed_store(store, 150, seed=9, release_id="r-9")
        assert seeded.release is not None
        batch_id = seeded.release["batch_id"]
        result = BatchMetricsOperator(task_id="metrics", batch_id=batch_id, base_path=str(tmp_path)).execute({})
        written = json.loads((tmp_path / batch_id / "metrics.json").read_text())
        assert written == store.batch_metrics(batch_id).model_dump()
        assert result == {**written, "path": f"file://{tmp_path / batch_id / 'metrics.json'}"}
        assert written["sessions"] == 150 and written["events"] == seeded.events + seeded.late_events
        assert written["late_events"] == seeded.late_events > 0
        assert 0 < written["click_through_rate"] < 1
        assert written["no_click_rate"] == pytest.approx(1 - written["click_through_rate"], abs=1e-6)
        assert written["irrelevant_rate"] == pytest.approx(seeded.irrelevant_sessions / 150, abs=1e-6)

    def test_an_unknown_batch_fails_at_once_naming_it(self, store: SessionStore, tmp_path: Path):
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match="batch_id 'nope' not found"):
            BatchMetricsOperator(task_id="metrics", batch_id="nope", base_path=str(tmp_path)).execute({})

    def test_write_file_false_only_returns_the_metrics(self, store: SessionStore, tmp_path: Path):
        seeded = seed_store(store, 10, seed=9, release_id="r-9")
        assert seeded.release is not None
        batch_id = seeded.release["batch_id"]
        result = BatchMetricsOperator(
            task_id="metrics", batch_id=batch_id, base_path=str(tmp_path / "out"), write_file=False
        ).execute({})
        assert result["path"] is None and result["sessions"] == 10
        assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- common base

ALL_OPERATORS: list[tuple[type, dict[str, Any]]] = [
    (ReleaseBatchOperator, {}),
    (ExtractBatchOperator, {"batch_id": "b1"}),
    (MarkForImprovementOperator, {"batch_id": "b1"}),
    (BatchMetricsOperator, {"batch_id": "b1"}),
    (ImportHistoryOperator, {"path": "/data/history"}),
    (EraseUserOperator, {"user_id": "u1"}),
]


def _ids(param: Any) -> str:
    return param.__name__ if isinstance(param, type) else ""


class TestCommonBase:
    @pytest.mark.parametrize(("cls", "kwargs"), ALL_OPERATORS, ids=_ids)
    def test_every_operator_has_a_templated_conn_id_defaulting_to_the_hooks(self, cls, kwargs):
        from clickstream.hooks import ClickstreamHook

        assert issubclass(cls, ClickstreamBaseOperator)
        assert "clickstream_conn_id" in cls.template_fields
        assert cls(task_id="t", **kwargs).clickstream_conn_id == ClickstreamHook.default_conn_name
        op = cls(task_id="t", clickstream_conn_id="{{ params.conn_id }}", **kwargs)
        op.render_template_fields({"params": {"conn_id": "archive_store"}, "dag": {"dag_id": "d"}, "run_id": "r"})
        assert op.clickstream_conn_id == "archive_store"
        assert op.hook.clickstream_conn_id == "archive_store"

    def test_the_rendered_connection_is_the_store_used(
        self, store: SessionStore, store_url: str, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", "postgresql://nobody@127.0.0.1:1/none")
        monkeypatch.setenv("AIRFLOW_CONN_ARCHIVE_STORE", store_url.replace("postgresql+psycopg://", "postgresql://"))
        seed_store(store, 4, seed=1)
        op = ReleaseBatchOperator(task_id="release", release_id="r", clickstream_conn_id="{{ params.conn_id }}")
        op.render_template_fields({"params": {"conn_id": "archive_store"}})
        assert store.get_batch(op.execute({})["batch_id"]).status == "released"

    def test_bad_input_fails_without_retry_and_is_still_a_value_error(self, released, tmp_path: Path):
        from airflow.sdk.exceptions import AirflowFailException

        store, batch_id = released
        assert issubclass(InvalidTaskInput, AirflowFailException) and issubclass(InvalidTaskInput, ValueError)
        bad = [
            ExtractBatchOperator(task_id="x", batch_id=batch_id, base_path=str(tmp_path), page_size="many"),
            ExtractBatchOperator(task_id="x", batch_id="../etc", base_path=str(tmp_path)),
            MarkForImprovementOperator(task_id="m"),
            MarkForImprovementOperator(task_id="m", session_ids="[1]"),
            ImportHistoryOperator(task_id="i", path=str(tmp_path), max_errors="lots"),
        ]
        for op in bad:
            with pytest.raises(AirflowFailException):
                op.execute({})

    @pytest.mark.parametrize(
        "op",
        [
            MarkForImprovementOperator(task_id="m", batch_id="nope"),
            BatchMetricsOperator(task_id="m", batch_id="nope", write_file=False),
            ExtractBatchOperator(task_id="x", batch_id="nope"),
        ],
        ids=["mark", "metrics", "extract"],
    )
    def test_unknown_ids_fail_without_retry(self, store: SessionStore, op):
        from airflow.sdk.exceptions import AirflowFailException

        with pytest.raises(AirflowFailException, match="nope"):
            op.execute({})

    def test_an_outage_is_retried_not_failed(self, monkeypatch: pytest.MonkeyPatch):
        from airflow.sdk.exceptions import AirflowFailException

        from clickstream.store import StoreUnavailable
        from tests.support.connections import free_port

        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", f"postgresql://x@127.0.0.1:{free_port()}/none")
        with pytest.raises(StoreUnavailable) as err:
            BatchMetricsOperator(task_id="m", batch_id="b1", write_file=False).execute({})
        assert not isinstance(err.value, AirflowFailException)


# --------------------------------------------------------------------------------------------- progress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)


class TestProgress:
    def test_lines_say_done_total_percentage_rate_and_time_left_at_most_every_interval(self):
        clock, out = _Clock(), _Lines()
        progress = Progress(out, "extract b1", 1000, "sessions", interval_s=5, clock=clock)
        for step in range(1, 11):  # 100 sessions a second, a report each second
            clock.now += 1
            progress.update(100 * step)
        assert out.lines == [
            "extract b1: 500 / 1,000 sessions (50.0%), 100 sessions/s, about 5 s left",
            "extract b1: 1,000 / 1,000 sessions (100.0%), 100 sessions/s, about 0 s left",
        ]
        progress.done()
        assert out.lines[-1] == "extract b1: done, 1,000 sessions in 10 s (100 sessions/s)"

    def test_an_estimate_too_small_never_passes_100_percent(self):
        clock, out = _Clock(), _Lines()
        progress = Progress(out, "x", 10, "rows", interval_s=0, clock=clock)
        clock.now += 2
        progress.update(15)
        assert out.lines == ["x: 15 / 15 rows (100.0%), 8 rows/s, about 0 s left"]

    def test_bytes_and_an_unknown_total(self):
        clock, out = _Clock(), _Lines()
        progress = Progress(out, "import", 3 << 20, "bytes", interval_s=0, clock=clock)
        clock.now += 60
        progress.update(1 << 20)
        assert out.lines[-1] == "import: 1.0 MiB / 3.0 MiB (33.3%), 17.1 KiB/s, about 2 min 00 s left"
        unknown = Progress(out, "import", None, "rows", interval_s=0, clock=clock)
        clock.now += 1
        unknown.update(50)
        assert out.lines[-1] == "import: 50 rows so far, 50 rows/s"


class TestExtractionProgress:
    def test_extraction_logs_progress_against_the_batch_size(self, released, tmp_path: Path, capsys):
        store, batch_id = released
        ExtractBatchOperator(
            task_id="extract", batch_id=batch_id, base_path=str(tmp_path), page_size=40, progress_interval_s=0
        ).execute({})
        lines = [line for line in capsys.readouterr().out.splitlines() if f"extract batch {batch_id}" in line]
        assert len(lines) == 6  # one per page with no interval
        assert "40 / 230 sessions (17.4%)" in lines[0] and "sessions/s" in lines[0] and "left" in lines[0]
        assert "230 / 230 sessions (100.0%)" in lines[-1]

    def test_a_shard_reports_against_its_share_of_the_batch(self, released, tmp_path: Path, capsys):
        store, batch_id = released
        info = store.get_batch(batch_id)
        middle = (info.min_number + info.max_number) // 2
        ExtractBatchOperator(
            task_id="extract",
            batch_id=batch_id,
            base_path=str(tmp_path),
            until_number=middle,
            write_manifest=False,
            progress_interval_s=0,
        ).execute({})
        out = capsys.readouterr().out
        estimate = shard_size(info, 0, middle)
        assert 100 <= estimate <= 130
        assert f"about {estimate} of its 230 sessions" in out
        assert f"/ {estimate} sessions" in out or "(100.0%)" in out

    def test_a_fast_extraction_logs_no_more_than_the_interval_allows(self, released, tmp_path: Path, capsys):
        store, batch_id = released
        ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path), page_size=10).execute({})
        lines = [line for line in capsys.readouterr().out.splitlines() if f"extract batch {batch_id}" in line]
        assert len(lines) <= 1  # 23 pages in well under 10 s: at most one line at the 5 s interval

    def test_shard_size_is_exact_for_the_whole_batch(self, released):
        store, batch_id = released
        info = store.get_batch(batch_id)
        assert shard_size(info, 0, None) == 230
        assert shard_size(info, info.max_number, None) == 0


class TestFoldedListings:
    def test_many_session_outcomes_are_folded_into_a_group(self, released, capsys):
        store, batch_id = released
        ids = [s["session_id"] for s in _batch(store, batch_id)][:25]
        MarkForImprovementOperator(task_id="mark", session_ids=ids).execute({})
        out = capsys.readouterr().out.splitlines()
        start = next(i for i, line in enumerate(out) if "::group::Outcome of each of the 25 sessions" in line)
        end = next(i for i, line in enumerate(out) if "::endgroup::" in line)
        assert sum(f"session {sid}:" in line for line in out[start:end] for sid in ids) == 25
