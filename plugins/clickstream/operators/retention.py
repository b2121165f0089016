"""PurgeReleasedBatchesOperator: delete released batches older than ``[clickstream] retention_days``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import ClickstreamBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

DAY_MS = 24 * 3600 * 1000


def configured_retention_days() -> str:
    """``[clickstream] retention_days`` as configured (empty: retention is off)."""
    from airflow.sdk import conf

    return (conf.get("clickstream", "retention_days", fallback="") or "").strip()


class PurgeReleasedBatchesOperator(ClickstreamBaseOperator):
    """Purge released batches released more than ``retention_days`` ago, with their sessions, events and
    improvement marks, so the store does not grow forever.

    * Only released batches; the collecting batch is never touched.
    * Only batches whose dataset is complete (its ``_manifest.json`` exists under ``base_path``), unless
      ``force``: a batch that was never extracted is kept and listed as ``kept_without_manifest``.
    * Each batch is deleted in chunks of ``chunk_sessions`` sessions, each its own short transaction, so
      ingestion into the collecting batch is not held up; a retry finishes a batch left half-way.
    * Datasets are files outside the store and are never deleted.

    Returns (XCom) ``{"retention_days", "released_before", "purged": [{batch_id, sessions, events, marks}],
    "kept_without_manifest": [batch_id, ...]}``; with retention off (no ``retention_days`` given and the
    config key empty) it does nothing and says so.

    :param retention_days: age limit in days (templated; a number > 0); default ``[clickstream]
        retention_days``; empty means off.
    :param base_path: where datasets are (templated); default ``[clickstream] dataset_base_path``.
    :param force: purge batches without a dataset manifest too (templated: ``"True"`` / ``"False"``).
    :param chunk_sessions: sessions deleted per transaction.
    :param duty_cycle: share of the time spent deleting; the purge pauses between chunks for the rest (0.5:
        as long as each chunk took), so ingestion keeps its latency.
    :param max_batches: at most this many batches per run (the oldest first).
    :param clickstream_conn_id: the session store's Airflow Connection (templated).
    """

    template_fields: Sequence[str] = (
        "retention_days",
        "base_path",
        "force",
        *ClickstreamBaseOperator.template_fields,
    )
    ui_color = "#eeeeee"

    def __init__(
        self,
        *,
        retention_days: float | str | None = None,
        base_path: str | None = None,
        force: bool | str = False,
        chunk_sessions: int = 1000,
        duty_cycle: float = 0.5,
        max_batches: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.retention_days = retention_days
        self.base_path = base_path
        self.force = force
        self.chunk_sessions = chunk_sessions
        self.duty_cycle = duty_cycle
        self.max_batches = max_batches

    def _days(self) -> float | None:
        raw = self.retention_days
        if raw is None or (isinstance(raw, str) and raw.strip() in ("", "None")):
            raw = configured_retention_days()
        if raw in ("", None):
            return None
        try:
            days = float(raw)
        except (TypeError, ValueError):
            raise self.invalid("retention_days", f"expected a number of days, got {raw!r}") from None
        if not days > 0:
            raise self.invalid("retention_days", f"must be > 0, got {days:g}")
        return days

    def _force(self) -> bool:
        if isinstance(self.force, bool):
            return self.force
        text = str(self.force).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no", "", "none"):
            return False
        raise self.invalid("force", f"expected true or false, got {self.force!r}")

    def execute(self, context: Context) -> dict[str, Any]:
        from clickstream.operators.extract import dataset_root

        days = self._days()
        force = self._force()
        if days is None:
            self.log.info("retention is off ([clickstream] retention_days is empty): nothing purged")
            return {"retention_days": None, "released_before": None, "purged": [], "kept_without_manifest": []}
        if self.chunk_sessions < 1:
            raise self.invalid("chunk_sessions", f"must be >= 1, got {self.chunk_sessions}")
        released_before = int(time.time() * 1000 - days * DAY_MS)
        purged: list[dict[str, Any]] = []
        kept: list[str] = []
        with self.store() as hook:
            candidates = hook.list_purgeable_batches(released_before, limit=self.max_batches)
            self.log.info(
                "retention %g days: %d released batch(es) released before %d", days, len(candidates), released_before
            )
            for batch in candidates:
                manifest = dataset_root(self.base_path, batch.batch_id) / "_manifest.json"
                if not force and not manifest.exists():
                    self.log.warning(
                        "kept batch %s: no dataset manifest at %s (force=True purges it)", batch.batch_id, manifest
                    )
                    kept.append(batch.batch_id)
                    continue
                started = time.monotonic()
                result = hook.purge_batch(
                    batch.batch_id, chunk_sessions=self.chunk_sessions, duty_cycle=self.duty_cycle
                )
                self.log.info(
                    "purged batch %s (released_at %s): %d sessions, %d events, %d marks in %d chunk(s), %.1f s",
                    result.batch_id,
                    batch.released_at,
                    result.sessions,
                    result.events,
                    result.marks,
                    result.chunks,
                    time.monotonic() - started,
                )
                purged.append(result.model_dump(exclude={"chunks"}))
        self.log.info("retention done: %d batch(es) purged, %d kept without a manifest", len(purged), len(kept))
        return {
            "retention_days": days,
            "released_before": released_before,
            "purged": purged,
            "kept_without_manifest": kept,
        }
