"""The improvement queue: mark sessions for model improvement, hand marks to workers, finish them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickstream import models
from clickstream.store.base import StoreBase
from clickstream.store.batches import require_batch
from clickstream.store.checks import validate
from clickstream.store.errors import Conflict, NotFound


class ImprovementOperations(StoreBase):
    def use_for_improvement(self, session_id: str) -> models.UseForImprovementResult:
        """Queue a session for model improvement if it is eligible; the answer says what happened.

        Eligible: not payload-search based, and at least one event on an object among its search results
        or marked irrelevant. Cost depends on the session's events only, never on its batch.
        """
        sid = validate(models.SessionIdIn, {"session_id": session_id}).session_id
        with self.db.transaction(write=True) as conn:
            status = self.db.run(conn, "improvement_status", session_id=sid).mappings().first()
            if status is None:
                raise NotFound(f"session_id {sid!r} not found")
            if status["marked"]:
                return models.UseForImprovementResult(session_id=sid, status="already_marked")
            if status["is_payload_search"]:
                return models.UseForImprovementResult(session_id=sid, status="skipped", reason="payload_search")
            if not (status["is_irrelevant"] or status["has_event_on_result"]):
                return models.UseForImprovementResult(session_id=sid, status="skipped", reason="no_events")
            inserted = self.db.run(conn, "insert_mark", session_id=sid, now=self.clock()).first()
        return models.UseForImprovementResult(session_id=sid, status="marked" if inserted else "already_marked")

    def mark_sessions_for_improvement(self, session_ids: Sequence[str]) -> tuple[models.MarkCounts, list]:
        """:meth:`use_for_improvement` for each id; unknown ids are counted, not fatal.

        :returns: the counts per outcome and the per-session answers (unknown ids as ``not_found``).
        """
        counts = models.MarkCounts()
        outcomes: list[dict[str, Any]] = []
        for sid in session_ids:
            try:
                result = self.use_for_improvement(sid)
            except NotFound:
                counts.not_found += 1
                outcomes.append({"session_id": sid, "status": "not_found", "reason": None})
                continue
            outcomes.append(result.model_dump())
            key = result.status if result.status != "skipped" else f"skipped_{result.reason}"
            setattr(counts, key, getattr(counts, key) + 1)
        return counts, outcomes

    def mark_batch_for_improvement(self, batch_id: str) -> models.MarkCounts:
        """Mark every eligible session of a batch in one set-based statement; counts per outcome."""
        with self.db.transaction(write=True) as conn:
            require_batch(self.db, conn, batch_id)
            classes = self.db.run(conn, "batch_mark_classes", batch_id=batch_id).mappings().one()
            marked = self.db.run(conn, "mark_batch_eligible", batch_id=batch_id, now=self.clock()).rowcount
        return models.MarkCounts(marked=marked, **classes)

    def claim_improvement_marks(self, limit: int = 10) -> list[models.ImprovementMark]:
        """Hand pending marks to a worker (``processing``, attempts + 1). Concurrent workers never get
        the same mark; a mark stuck in ``processing`` past ``claim_stale_ms`` is handed out again."""
        self.checks.limit(limit)
        now = self.clock()
        with self.db.transaction(write=True) as conn:
            stale = {
                "now": now,
                "stale_before": now - self.config.claim_stale_ms,
                "max_attempts": self.config.max_attempts,
            }
            self.db.run(conn, "fail_abandoned_marks", **stale)
            rows = self.db.run(conn, "claim_marks", limit=limit, **stale).mappings().all()
        return sorted((models.ImprovementMark(**r) for r in rows), key=lambda m: (m.created_at, m.session_id))

    def complete_improvement_mark(self, session_id: str, attempt: int | None = None) -> models.ImprovementMark:
        """A claimed mark is done.

        :param attempt: the ``attempts`` of the claim being finished. Pass it: once a claim went stale and
            the mark was handed to another worker, the first worker's finish is a :class:`Conflict`.
        """
        return self._finish_mark("complete_mark", session_id, attempt)

    def fail_improvement_mark(self, session_id: str, error: str, attempt: int | None = None) -> models.ImprovementMark:
        """A claimed mark failed: back to pending, or ``failed`` once ``max_attempts`` is reached.

        :param attempt: as for :meth:`complete_improvement_mark`.
        """
        return self._finish_mark(
            "fail_mark", session_id, attempt, error=error[:4000], max_attempts=self.config.max_attempts
        )

    def _finish_mark(self, query: str, session_id: str, attempt: int | None, **params: Any) -> models.ImprovementMark:
        with self.db.transaction(write=True) as conn:
            row = (
                self.db.run(conn, query, session_id=session_id, now=self.clock(), attempt=attempt, **params)
                .mappings()
                .first()
            )
            if row is None:
                current = self.db.run(conn, "get_mark", session_id=session_id).mappings().first()
                if current is None:
                    raise NotFound(f"no improvement mark for session_id {session_id!r}")
                if current["status"] == "processing":
                    raise Conflict(
                        f"attempt: the claim of session_id {session_id!r} with attempt {attempt} "
                        f"went stale and was handed out again (attempt {current['attempts']})"
                    )
                raise Conflict(
                    f"improvement mark of session_id {session_id!r} is {current['status']}, "
                    "not processing: claim it first"
                )
        return models.ImprovementMark(**row)

    def get_improvement_mark(self, session_id: str) -> models.ImprovementMark:
        """The improvement mark of a session; :class:`NotFound` if it has none."""
        with self.db.transaction(write=False) as conn:
            row = self.db.run(conn, "get_mark", session_id=session_id).mappings().first()
        if row is None:
            raise NotFound(f"no improvement mark for session_id {session_id!r}")
        return models.ImprovementMark(**row)
