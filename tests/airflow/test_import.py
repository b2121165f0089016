"""The history import through Airflow: the hook, the operator and the DAG (the import itself, on both
backends: tests/history/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickstream.store import InvalidInput, SessionStore
from tests.support import REPO_ROOT
from tests.support.history import mixed_file

REPO = REPO_ROOT
EXAMPLES = REPO / "examples" / "history"


# ------------------------------------------------------------------------------ hook, operator, DAG


class TestHookAndOperator:
    def test_hook_imports_a_folder_through_object_storage(self, clickstream_conn: SessionStore) -> None:
        from clickstream.hooks import ClickstreamHook

        with ClickstreamHook() as hook:
            report = hook.import_history(f"file://{EXAMPLES}")
        assert [Path(f).name for f in report.files] == ["events.jsonl", "sessions.jsonl"]
        assert (report.loaded_sessions, report.loaded_events) == (3, 4)

    def test_hook_logs_progress_by_bytes_read_against_the_files_total(self, clickstream_conn: SessionStore) -> None:
        import logging

        from clickstream.hooks import ClickstreamHook

        class Lines(logging.Handler):
            def __init__(self) -> None:
                super().__init__()
                self.lines: list[str] = []

            def emit(self, record: logging.LogRecord) -> None:
                self.lines.append(record.getMessage())

        logger = logging.getLogger("test.import.progress")
        logger.setLevel(logging.INFO)
        handler = Lines()
        logger.addHandler(handler)
        total = sum(p.stat().st_size for p in EXAMPLES.glob("*.jsonl"))
        with ClickstreamHook() as hook:
            hook.import_history(f"file://{EXAMPLES}", logger=logger)
        final = [line for line in handler.lines if line.startswith("import: bytes read")]
        assert final, handler.lines
        assert 1024 <= total < 1 << 20  # the example files: the line shows KiB
        assert final[-1].startswith(f"import: bytes read: done, {total / 1024:.1f} KiB in "), final[-1]

    def test_hook_refuses_a_missing_path(self, clickstream_conn: SessionStore, tmp_path: Path) -> None:
        from clickstream.hooks import ClickstreamHook

        with ClickstreamHook() as hook, pytest.raises(InvalidInput, match="path"):
            hook.import_history(str(tmp_path / "nope.jsonl"))

    def test_operator_fails_without_loading_when_refused(
        self, clickstream_conn: SessionStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from clickstream.operators import ImportHistoryOperator

        op = ImportHistoryOperator(task_id="imp", path=str(mixed_file(tmp_path)), invalid_threshold=0.1)
        with pytest.raises(AirflowFailException, match="nothing loaded"):
            op.execute(context={})
        task_log = capsys.readouterr().out  # the task logger writes through structlog
        assert "mixed.jsonl line 3" in task_log and "seconds" in task_log and "mixed.jsonl line 7" in task_log
        assert clickstream_conn.list_batches() == []
        # the listing is one group the Airflow UI folds: ::group:: ... ::endgroup::
        lines = task_log.splitlines()
        start = next(i for i, line in enumerate(lines) if "::group::Invalid rows (2 listed of 2)" in line)
        end = next(i for i, line in enumerate(lines) if "::endgroup::" in line)
        assert [i for i, line in enumerate(lines) if "invalid row: " in line and "mixed.jsonl" in line] == list(
            range(start + 1, end)
        )


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
class TestImportDag:
    def test_dag_imports_the_example_files(self, airflow_db: None, clickstream_conn: SessionStore) -> None:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils.state import DagRunState

        bag = DagBag(dag_folder=str(REPO / "dags" / "clickstream_import.py"))
        assert bag.import_errors == {}
        run = bag.get_dag("clickstream_import").test(
            run_conf={"path": str(EXAMPLES), "format": "jsonl", "invalid_threshold": 0, "max_errors": 10}
        )
        assert run.state == DagRunState.SUCCESS
        assert len(clickstream_conn.get_session("hist-0002").events) == 2
