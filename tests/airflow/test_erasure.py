"""Erasure of a user's data: the store operation, EraseUserOperator and the clickstream_erase_user DAG."""

from __future__ import annotations

import pytest

from clickstream.store import NotFound, SessionStore
from tests.support import REPO_ROOT

REPO = REPO_ROOT
T0 = 1_701_234_567_890


def _register(store: SessionStore, sid: str, user: str | None) -> str:
    body = {"session_id": sid, "search_results": [{"object_id": "o1"}], "user_id": user, "created_at": T0}
    batch_id = store.register_session(body, check_window=False).batch_id
    store.push_events(
        sid,
        [
            {"event_id": f"{sid}-e1", "object_id": "o1", "created_at": T0 + 1},
            {"event_id": f"{sid}-e2", "object_id": "o2", "created_at": T0 + 2},
        ],
        check_window=False,
    )
    store.use_for_improvement(sid)
    return batch_id


@pytest.fixture
def two_users(store: SessionStore) -> dict[str, str]:
    """u1 has a session in a released batch (r1) and one in the collecting batch; u2 and an anonymous user
    have sessions in both too. Every session has 2 events and an improvement mark."""
    released = _register(store, "u1-a", "u1")
    _register(store, "u2-a", "u2")
    _register(store, "anon-a", None)
    store.release_batch("r1")
    collecting = _register(store, "u1-b", "u1")
    _register(store, "u2-b", "u2")
    return {"released": released, "collecting": collecting}


def _user_sessions(store: SessionStore, user: str) -> list[str]:
    """Every session of ``user``, found through the batch pages (the store's public read path)."""
    found = []
    for batch in store.list_batches():
        for page in store.iter_batch_pages(batch.batch_id):
            found += [s["session_id"] for s in page if s["user_id"] == user]
    return sorted(found)


class TestEraseUser:
    def test_no_row_of_the_user_remains(self, store: SessionStore, two_users: dict[str, str]) -> None:
        result = store.erase_user("u1")
        assert (result.sessions, result.events, result.marks) == (2, 4, 2)
        assert sorted(result.batches) == sorted(two_users.values())
        assert _user_sessions(store, "u1") == []
        for sid in ("u1-a", "u1-b"):
            with pytest.raises(NotFound):
                store.get_session(sid)
            with pytest.raises(NotFound):
                store.get_improvement_mark(sid)
        # The id is tombstoned: registering it again stores nothing.
        again = store.register_session({"session_id": "u1-a", "created_at": T0}, check_window=False)
        assert (again.status, again.batch_id, again.events_attached) == ("erased", None, 0)

    def test_other_users_rows_are_untouched(self, store: SessionStore, two_users: dict[str, str]) -> None:
        before = {sid: store.get_session(sid).model_dump() for sid in ("u2-a", "u2-b", "anon-a")}
        store.erase_user("u1")
        assert {sid: store.get_session(sid).model_dump() for sid in before} == before
        assert all(len(s["events"]) == 2 for s in before.values())
        assert store.get_improvement_mark("u2-a").status == "pending"
        assert store.get_batch(two_users["released"]).sessions == 2  # u2-a and anon-a remain

    def test_a_second_erasure_erases_nothing(self, store: SessionStore, two_users: dict[str, str]) -> None:
        store.erase_user("u1")
        again = store.erase_user("u1")
        assert (again.sessions, again.events, again.marks, again.batches) == (0, 0, 0, [])


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
        assert _user_sessions(clickstream_conn, "u1") == []

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
        assert _user_sessions(clickstream_conn, "u1") == []
        assert _user_sessions(clickstream_conn, "u2") == ["u2-a", "u2-b"]
