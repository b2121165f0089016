"""BatchLabelsOperator against real stores (SQLite and PostgreSQL), executed directly: the three tables read
back with pandas equal the store's fit, a retry (after a crash half-way) rewrites exactly its own files, the
manifest lists them, and bad input fails without retry."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from clickstream.dataset import read_table
from clickstream.operators import BatchLabelsOperator, ExtractBatchOperator
from clickstream.signal.pairs import skip_above_pairs
from clickstream.store import SessionStore
from clickstream.synthetic import pbm_truth, seed_store

pytestmark = pytest.mark.filterwarnings("ignore:.*cannot be called outside of the Task Runner")


@pytest.fixture
def released(store: SessionStore) -> tuple[SessionStore, str]:
    """A released ground-truth batch: clicks from a known position-based model (every position identified)."""
    truth = pbm_truth(seed=2, n_queries=6, n_candidates=12, max_position=10, page_sizes=(10,))
    counts = seed_store(store, 600, seed=2, release_id="r-labels", truth=truth)
    assert counts.release is not None
    return store, counts.release["batch_id"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestLabelsOperator:
    def test_writes_the_three_tables_that_pandas_reads_back(self, released: tuple[SessionStore, str], tmp_path: Path):
        store, batch_id = released
        op = BatchLabelsOperator(
            task_id="labels", batch_id=batch_id, base_path=str(tmp_path), page_size=20, pages_per_part=5
        )
        result = op.execute({})
        root = tmp_path / batch_id
        extract = ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path))
        extract.execute({})  # its manifest (without labels); the DAG's write_manifest lists the labels
        manifest = {"labels": {k: v for k, v in result.items() if k != "batch_id"}, "parts": []}

        curve = read_table(root, "propensities", manifest)
        assert list(curve["position"]) == list(range(1, 21))
        kept = store.batch_propensities(batch_id)
        assert list(curve["theta"].iloc[:10]) == pytest.approx([p.theta for p in kept.propensities[:10]])
        assert curve["theta"].iloc[10:].isna().all() and curve["reason"].iloc[10:].notna().all()

        judgments = read_table(root, "judgments", manifest)
        assert len(judgments) == result["report"]["judgments"] == 72
        assert set(judgments.columns) >= {"query", "object_id", "raw_ctr", "gamma", "effective_sample_size"}

        # the pairs are skip-above pairs of the batch's keyword, non-irrelevant sessions, weighted by 1/θ (clipped)
        pairs = read_table(root, "pairs", manifest)
        theta = [p.theta for p in kept.propensities]
        expected = [
            (p.session_id, p.positive_object_id, p.negative_object_id, p.weight)
            for page in store.iter_label_sessions(batch_id)
            for s in page.sessions
            for p in skip_above_pairs(s.session_id, s.query, s.results, s.clicked, theta=theta)[0]
        ]
        got = list(pairs[["session_id", "positive_object_id", "negative_object_id", "weight"]].itertuples(index=False))
        assert [tuple(g) for g in got] == expected and len(expected) > 100
        assert pairs["weight"].max() <= 10.0 and (pairs["positive_position"] > pairs["negative_position"]).all()
        assert result["pair_stats"]["pairs"] == len(pairs) == result["tables"]["pairs"]["rows"]
        assert len(result["tables"]["pairs"]["parts"]) > 1  # 20 sessions a page, 5 pages a part

    def test_a_retry_rewrites_exactly_its_own_files(self, released: tuple[SessionStore, str], tmp_path: Path):
        store, batch_id = released
        ExtractBatchOperator(task_id="extract", batch_id=batch_id, base_path=str(tmp_path)).execute({})
        root = tmp_path / batch_id
        extracted = {name: (root / name).read_bytes() for name in _files(root)}

        class Crash(RuntimeError):
            pass

        def crash_after_two_pages(sessions: int, total: int) -> None:
            if sessions >= 100:
                raise Crash("the worker died")

        import clickstream.dataset.labels as labels_module

        with pytest.raises(Crash):
            labels_module.write_batch_labels(
                store, root, batch_id, page_size=50, pages_per_part=1, on_page=crash_after_two_pages
            )
        (root / "pairs" / "part-999999999999.parquet").write_bytes(b"left by another plan")
        (root / "judgments" / "notes.txt").write_text("not a part: not ours")

        result = BatchLabelsOperator(
            task_id="labels", batch_id=batch_id, base_path=str(tmp_path), page_size=50
        ).execute({})
        listed = {f"{t}/{p['name']}" for t, v in result["tables"].items() for p in v["parts"]}
        label_files = {f for f in _files(root) if f.split("/")[0] in ("propensities", "judgments", "pairs")}
        assert label_files == listed | {"judgments/notes.txt"}
        assert {name: (root / name).read_bytes() for name in extracted} == extracted  # sessions, events, manifest
        total = sum(pq.read_metadata(root / f).num_rows for f in listed if f.startswith("pairs/"))
        assert total == result["tables"]["pairs"]["rows"]

    def test_an_unknown_or_collecting_batch_fails_without_retry(self, store: SessionStore, tmp_path: Path):
        with pytest.raises(AirflowFailException, match="not found"):
            BatchLabelsOperator(task_id="labels", batch_id="nope", base_path=str(tmp_path)).execute({})
        seed_store(store, 5, seed=1)
        collecting = store.list_batches()[0].batch_id
        with pytest.raises(AirflowFailException, match="collecting"):
            BatchLabelsOperator(task_id="labels", batch_id=collecting, base_path=str(tmp_path)).execute({})
        with pytest.raises(AirflowFailException, match="page_size"):
            BatchLabelsOperator(task_id="labels", batch_id=collecting, page_size="0").execute({})
