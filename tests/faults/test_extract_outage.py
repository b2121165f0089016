"""PostgreSQL goes down in the middle of an extraction (``ExtractBatchOperator``): the task fails with a store
outage, and its retry once the database is back writes exactly the dataset an undisturbed run writes: the
same rows, the same part files, the same manifest counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException

from clickstream.dataset import ShardWriter
from clickstream.operators import ExtractBatchOperator
from clickstream.store import SessionStore, StoreUnavailable
from clickstream.synthetic import seed_store
from tests.support.pgcluster import ThrowawayPostgres

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*cannot be called outside of the Task Runner"),
]

SESSIONS = 3000
PAGE_SIZE = 100
PAGES_PER_PART = 3
#: PostgreSQL is stopped once this many pages are written (of 30).
HALT_AFTER_PAGES = 7


class OutageExtract(ExtractBatchOperator):
    """An extraction during which PostgreSQL is stopped (``pg_ctl stop -m immediate``) once ``halt_after``
    pages are written; only the first run is disturbed, as when Airflow retries the task."""

    def __init__(self, *, pg: ThrowawayPostgres, halt_after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pg = pg
        self.halt_after = halt_after
        self.halted_at_page: int | None = None

    def make_writer(self, root, after, until):
        operator = self

        class Writer(ShardWriter):
            def on_page(self, pages_done: int, sessions: int, events: int) -> None:
                if operator.halted_at_page is None and pages_done == operator.halt_after:
                    operator.halted_at_page = pages_done
                    operator.pg.halt("immediate")

        return Writer(
            root, self.batch_id, after_number=after, until_number=until, pages_per_part=int(self.pages_per_part)
        )


@pytest.fixture
def released_batch(fault_pg: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A released batch of :data:`SESSIONS` synthetic sessions in a database of its own on the fault server,
    which is also the ``clickstream_default`` Connection."""
    name = f"extract_{uuid.uuid4().hex[:10]}"
    url = fault_pg.create_database(name)
    monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", url)
    store = SessionStore.from_url(url)
    try:
        store.migrate()
        seeded = seed_store(store, SESSIONS, seed=17, release_id=f"r-{name}")
        assert seeded.release is not None
        yield seeded.release["batch_id"]
    finally:
        store.dispose()
        if fault_pg.postmaster_pid() is None:
            fault_pg.resume()
        fault_pg.drop_database(name)


def _store_outage(err: BaseException | None) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` that ``err`` is, or was raised from (explicitly or while handling it)."""
    for _ in range(10):
        if err is None or isinstance(err, StoreUnavailable):
            return err
        err = err.__cause__ or err.__context__
    return None


def _dataset(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    manifest = json.loads((root / "_manifest.json").read_text())
    sessions = pd.concat([pd.read_parquet(root / "sessions" / p["name"]) for p in manifest["parts"]], ignore_index=True)
    events = pd.concat([pd.read_parquet(root / "events" / p["name"]) for p in manifest["parts"]], ignore_index=True)
    return sessions, events, manifest


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_an_extraction_cut_by_a_postgres_outage_fails_and_its_retry_writes_the_same_dataset(
    fault_pg: ThrowawayPostgres, released_batch: str, tmp_path: Path
) -> None:
    batch_id = released_batch
    clean, retried = tmp_path / "clean", tmp_path / "retried"
    options = {"task_id": "extract", "batch_id": batch_id, "page_size": PAGE_SIZE, "pages_per_part": PAGES_PER_PART}
    undisturbed = ExtractBatchOperator(base_path=str(clean), **options).execute({})
    assert undisturbed["sessions"] == SESSIONS

    task = OutageExtract(pg=fault_pg, halt_after=HALT_AFTER_PAGES, base_path=str(retried), **options)
    with pytest.raises(Exception) as failure:
        task.execute({})
    assert task.halted_at_page == HALT_AFTER_PAGES and fault_pg.postmaster_pid() is None
    outage = _store_outage(failure.value)  # the task failed because of the outage ...
    assert outage is not None, f"not a store outage: {failure.value!r}"
    assert "session store unavailable" in outage.detail
    assert not isinstance(failure.value, AirflowFailException)  # ... and Airflow may retry it
    assert not (retried / batch_id / "_manifest.json").exists()  # an incomplete dataset has no manifest
    assert 0 < len(_files(retried / batch_id)) < len(_files(clean / batch_id))

    fault_pg.resume()
    summary = task.execute({})  # the retry, undisturbed this time

    s_clean, e_clean, m_clean = _dataset(clean / batch_id)
    s_retry, e_retry, m_retry = _dataset(retried / batch_id)
    assert _files(retried / batch_id) == _files(clean / batch_id)
    pd.testing.assert_frame_equal(s_retry, s_clean)
    pd.testing.assert_frame_equal(e_retry, e_clean)
    counts = ("batch_id", "sessions", "events", "parts", "shards", "release_id", "released_at", "complete")
    assert {k: m_retry[k] for k in counts} == {k: m_clean[k] for k in counts}
    assert m_retry["sessions"] == len(s_retry) == SESSIONS and m_retry["events"] == len(e_retry)
    assert {k: summary[k] for k in ("sessions", "events", "parts")} == {
        k: undisturbed[k] for k in ("sessions", "events", "parts")
    }
