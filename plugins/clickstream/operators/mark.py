"""MarkForImprovementOperator: queue sessions for model improvement, by id or a whole batch at once."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import ClickstreamBaseOperator, InvalidTaskInput

if TYPE_CHECKING:
    from airflow.sdk import Context

    from clickstream.operators.lineage import Lineage

#: Above this many ids, the per-session outcome lines are folded in the task log (a ``::group::``).
FOLD_OUTCOMES_ABOVE = 20


def parse_session_ids(value: Any) -> list[str]:
    """Session ids from a list, a JSON list, or text separated by commas, spaces or new lines.

    Blank entries are dropped and duplicates keep their first position.

    :raises InvalidTaskInput: (a ``ValueError``) naming ``session_ids`` when an entry is not a string.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise InvalidTaskInput(f"session_ids: not a valid JSON list ({err.msg})") from None
        else:
            value = re.split(r"[\s,]+", text)
    if not isinstance(value, (list, tuple)):
        raise InvalidTaskInput(f"session_ids: expected a list of strings, got {type(value).__name__}")
    ids: dict[str, None] = {}
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidTaskInput(f"session_ids[{i}]: expected a string, got {item!r}")
        if item.strip():
            ids[item.strip()] = None
    return list(ids)


class MarkForImprovementOperator(ClickstreamBaseOperator):
    """Mark sessions for model improvement; exactly one of ``session_ids`` and ``batch_id`` is given.

    * ``session_ids``: each id goes through the store's *use for improvement* rule (eligible sessions are
      marked once; payload-search sessions and sessions without a valid event history are skipped; unknown
      ids are counted as ``not_found``). Returns ``{"counts": {...}, "outcomes": [{session_id, status,
      reason}, ...]}`` and logs one line per session (folded in the UI when there are many).
    * ``batch_id``: every eligible session of the batch is marked in one set-based statement. Returns
      ``{"batch_id": ..., "counts": {...}}``.

    ``counts`` has ``marked``, ``already_marked``, ``skipped_payload_search``, ``skipped_no_events`` and
    ``not_found``. Marking is idempotent, so retries are safe (a retry reports ``already_marked``). Neither
    or both given, an unreadable ``session_ids`` or an unknown batch fail the task without retry.

    :param session_ids: ids to mark (templated): a list, a JSON list, or comma/space/newline separated text.
    :param batch_id: a batch whose eligible sessions are all marked (templated).
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = ("session_ids", "batch_id", *ClickstreamBaseOperator.template_fields)
    ui_color = "#fdf2d0"

    def __init__(
        self,
        *,
        session_ids: Any = None,
        batch_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_ids = session_ids
        self.batch_id = batch_id
        self.counts: dict[str, int] | None = None
        self.requested: int | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        ids = parse_session_ids(self.session_ids)
        batch_id = (self.batch_id or "").strip() or None
        if bool(ids) == bool(batch_id):
            raise self.invalid(
                "session_ids/batch_id",
                "give exactly one of session_ids (a non-empty list) and batch_id; "
                f"got session_ids={self.session_ids!r}, batch_id={self.batch_id!r}",
            )
        with self.store() as hook:
            if batch_id:
                counts = hook.mark_batch_for_improvement(batch_id).model_dump()
                self.counts = counts
                self.log.info("Batch %s marked for improvement: %s", batch_id, _fmt(counts))
                return {"batch_id": batch_id, "counts": counts}
            counts_model, outcomes = hook.mark_sessions_for_improvement(ids)
        self.requested = len(ids)
        fold = len(outcomes) > FOLD_OUTCOMES_ABOVE
        if fold:
            self.log.info(f"::group::Outcome of each of the {len(outcomes)} sessions")
        for o in outcomes:
            self.log.info(
                "session %s: %s%s", o["session_id"], o["status"], f" ({o['reason']})" if o.get("reason") else ""
            )
        if fold:
            self.log.info("::endgroup::")
        counts = counts_model.model_dump()
        self.counts = counts
        self.log.info("%d session(s) processed: %s", len(ids), _fmt(counts))
        return {"counts": counts, "outcomes": outcomes}

    def lineage(self) -> Lineage:
        """Reads sessions and their events; writes improvement marks."""
        from clickstream.operators.lineage import EVENTS, MARKS, SESSIONS, Lineage, Table

        counts = self.counts or {}
        batch_id = (self.batch_id or "").strip() if isinstance(self.batch_id, str) else None
        run: dict[str, Any] = {"batch_id": batch_id} if batch_id else {}
        if self.requested is not None:
            run["session_ids"] = self.requested
        return Lineage(
            inputs=[Table(SESSIONS), Table(EVENTS)],
            outputs=[Table(MARKS, rows=counts.get("marked"))],
            run={**run, **counts},
        )


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items())
