"""Retention: find released batches older than a limit and delete them, chunk by chunk."""

from __future__ import annotations

import logging
import time

from clickstream import models
from clickstream.store.base import StoreBase
from clickstream.store.batches import require_batch
from clickstream.store.errors import Conflict, InvalidInput

log = logging.getLogger(__name__)


class RetentionOperations(StoreBase):
    def list_purgeable_batches(self, released_before: int, limit: int = 1000) -> list[models.BatchInfo]:
        """Released batches whose ``released_at`` is before ``released_before`` (ms since epoch), oldest
        first. The collecting batch is never among them."""
        if limit < 1:
            raise InvalidInput.field("limit", f"must be >= 1, got {limit}")
        with self.db.transaction(write=False) as conn:
            rows = self.db.run(conn, "purgeable_batches", released_before=released_before, limit=limit)
            return [models.BatchInfo(**r) for r in rows.mappings()]

    def purge_batch(self, batch_id: str, *, chunk_sessions: int = 1000, duty_cycle: float = 0.5) -> models.PurgeResult:
        """Delete a released batch: its sessions with their events and improvement marks, then the batch
        (whose kept metrics go with its row: ``ON DELETE CASCADE``).

        Each chunk of ``chunk_sessions`` sessions is its own short transaction, so ingestion (which writes
        to the collecting batch) is never held up for long; a purge that stops half-way leaves whole
        sessions and is finished by running it again. Each chunk records a tombstone of each session id it
        deletes (``cs_purged_session``): events that arrive later for a purged session (while its id is not
        registered again) are not stored, and are counted ``purged``. Tombstones recorded before this batch was
        released are deleted with it, so they last about one retention period and their number stays bounded
        (by the sessions purged in that time, about 50 bytes each). Datasets written from the batch are not
        touched.

        :raises NotFound: unknown ``batch_id``.
        :raises Conflict: the batch is collecting (only released batches are purged).
        """
        if chunk_sessions < 1:
            raise InvalidInput.field("chunk_sessions", f"must be >= 1, got {chunk_sessions}")
        if not 0 < duty_cycle <= 1:
            raise InvalidInput.field("duty_cycle", f"must be in (0, 1], got {duty_cycle}")
        db = self.db
        with db.transaction(write=False) as conn:
            batch = require_batch(db, conn, batch_id)
            if batch["status"] != "released":
                raise Conflict(f"batch_id {batch_id!r} is collecting: only released batches are purged")
        sessions = events = marks = chunks = 0
        while True:
            params = {"batch_id": batch_id, "limit": chunk_sessions}
            started = time.monotonic()
            with db.transaction(write=True) as conn:
                db.run(conn, "purge_chunk_tombstones", **params, now=self.clock())
                chunk_events = db.run(conn, "purge_chunk_events", **params).rowcount
                chunk_marks = db.run(conn, "purge_chunk_marks", **params).rowcount
                chunk = db.run(conn, "purge_chunk_sessions", **params).rowcount
                if chunk == 0:
                    db.run(conn, "prune_purged_tombstones", released_at=batch["released_at"])
                    db.run(conn, "delete_released_batch", batch_id=batch_id)
            sessions, events, marks = sessions + chunk, events + chunk_events, marks + chunk_marks
            if chunk == 0:
                break
            chunks += 1
            log.info("purge of batch %s: %d sessions, %d events deleted so far", batch_id, sessions, events)
            if duty_cycle < 1:
                time.sleep((time.monotonic() - started) * (1 - duty_cycle) / duty_cycle)
        return models.PurgeResult(batch_id=batch_id, sessions=sessions, events=events, marks=marks, chunks=chunks)
