"""Erasure of a user's data."""

from __future__ import annotations

from clickstream import models
from clickstream.store.base import StoreBase
from clickstream.store.checks import validate


class ErasureOperations(StoreBase):
    def erase_user(self, user_id: str) -> models.EraseResult:
        """Remove every session, event and improvement mark of ``user_id`` in one transaction."""
        uid = validate(models.UserIdIn, {"user_id": user_id}).user_id
        with self.db.transaction(write=True) as conn:
            batches = list(self.db.run(conn, "user_batches", user_id=uid).scalars())
            events = self.db.run(conn, "erase_user_events", user_id=uid).rowcount
            marks = self.db.run(conn, "erase_user_marks", user_id=uid).rowcount
            sessions = self.db.run(conn, "erase_user_sessions", user_id=uid).rowcount
        return models.EraseResult(user_id=uid, sessions=sessions, events=events, marks=marks, batches=batches)
