"""Erasure of a user's data through Airflow: EraseUserOperator and the clickstream_erase_user DAG (the store
operation itself: tests/store/test_erasure.py)."""

from __future__ import annotations

import pytest

from clickstream.store import SessionStore
from tests.support import REPO_ROOT
from tests.support.users import seed_two_users, user_sessions

REPO = REPO_ROOT


@pytest.fixture
def two_users(store: SessionStore) -> dict[str, str]:
    """The two users of :func:`tests.support.users.seed_two_users`: the released and the collecting batch."""
    return seed_two_users(store)


class TestEraseUserOperator:
    def test_reports_counts_and_logs_the_released_batches(
        self, clickstream_conn: SessionStore, two_users: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        from clickstream.operators import EraseUserOperator

        result = EraseUserOperator(task_id="erase", user_id="u1").execute(context={})
        assert (result["sessions"], result["events"], result["marks"]) == (2, 4, 2)
        assert [b["batch_id"] for b in result["released_batches"]] == [two_users["released"]]
        assert result["released_batches"][0]["release_id"] == "r1"
        task_log = capsys.readouterr().out
        assert f"released batch {two_users['released']} (release_id r1" in task_log
        assert two_users["collecting"] in task_log and "outside the store" in task_log
        assert user_sessions(clickstream_conn, "u1") == []

    def test_empty_user_id_fails_without_retry(self, clickstream_conn: SessionStore) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from clickstream.operators import EraseUserOperator

        with pytest.raises(AirflowFailException, match="user_id"):
            EraseUserOperator(task_id="erase", user_id="").execute(context={})


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
class TestEraseUserDag:
    def test_dag_erases_the_user(
        self, airflow_db: None, clickstream_conn: SessionStore, two_users: dict[str, str]
    ) -> None:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils.state import DagRunState

        bag = DagBag(dag_folder=str(REPO / "dags" / "clickstream_erase_user.py"))
        assert bag.import_errors == {}
        run = bag.get_dag("clickstream_erase_user").test(run_conf={"user_id": "u1"})
        assert run.state == DagRunState.SUCCESS
        assert user_sessions(clickstream_conn, "u1") == []
        assert user_sessions(clickstream_conn, "u2") == ["u2-a", "u2-b"]
