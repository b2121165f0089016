"""Erasure of a user's data, and the tombstones that keep it erased."""

from __future__ import annotations

from clickstream import models
from clickstream.store.base import StoreBase
from clickstream.store.checks import validate


class ErasureOperations(StoreBase):
    def erase_user(self, user_id: str) -> models.EraseResult:
        """Remove every session, event and improvement mark of ``user_id`` in one transaction, and record a
        tombstone for each of their session ids, so that registrations and events sent for those sessions
        later are not stored again (they are counted as ``erased``). The kept metrics of the batches that held
        their sessions are dropped with them, and computed again, without them, by later reads or the metrics
        task; so are their kept search analytics (:mod:`clickstream.store.analytics`) and training-signal labels
        (:mod:`clickstream.store.labels`). A metrics (or analytics)
        computation whose snapshot predates this erasure's commit is never kept afterwards:
        the tombstones change the erasure generation it compares (``store_batch_metrics``), and they are
        inserted before the kept metrics are deleted, under a lock a keep-write waits for.

        On PostgreSQL the erasure first waits for in-flight writes of sessions and events and holds new ones
        until it commits (``lock_for_erasure``): a write racing with it is either erased or refused. SQLite's
        write lock does the same.
        """
        uid = validate(models.UserIdIn, {"user_id": user_id}).user_id
        db = self.db
        with db.transaction(write=True) as conn:
            if db.has("lock_for_erasure"):
                db.run(conn, "lock_for_erasure")
            batches = list(db.run(conn, "user_batches", user_id=uid).scalars())
            tombstones = db.run(conn, "insert_user_tombstones", user_id=uid, now=self.clock()).rowcount
            db.run(conn, "erase_user_batch_metrics", user_id=uid)  # counted their sessions: computed again
            db.run(conn, "erase_user_batch_analytics", user_id=uid)  # the same for the kept search analytics
            db.run(conn, "erase_user_batch_labels", user_id=uid)  # and for the kept training-signal labels
            events = db.run(conn, "erase_user_events", user_id=uid).rowcount
            marks = db.run(conn, "erase_user_marks", user_id=uid).rowcount
            sessions = db.run(conn, "erase_user_sessions", user_id=uid).rowcount
        return models.EraseResult(
            user_id=uid, sessions=sessions, events=events, marks=marks, batches=batches, tombstones=tombstones
        )
