"""MarkForImprovementOperator: queue sessions for model improvement, by id or a whole batch at once."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def parse_session_ids(value: Any) -> list[str]:
    """Session ids from a list, a JSON list, or text separated by commas, spaces or new lines.

    Blank entries are dropped and duplicates keep their first position.

    :raises ValueError: naming ``session_ids`` when an entry is not a string.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"session_ids: not a valid JSON list ({err.msg})") from None
        else:
            value = re.split(r"[\s,]+", text)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"session_ids: expected a list of strings, got {type(value).__name__}")
    ids: dict[str, None] = {}
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"session_ids[{i}]: expected a string, got {item!r}")
        if item.strip():
            ids[item.strip()] = None
    return list(ids)


class MarkForImprovementOperator(BaseOperator):
    """Mark sessions for model improvement; exactly one of ``session_ids`` and ``batch_id`` is given.

    * ``session_ids``: each id goes through the store's *use for improvement* rule (eligible sessions are
      marked once; payload-search sessions and sessions without a valid event history are skipped; unknown
      ids are counted as ``not_found``). Returns ``{"counts": {...}, "outcomes": [{session_id, status,
      reason}, ...]}`` and logs one line per session.
    * ``batch_id``: every eligible session of the batch is marked in one set-based statement. Returns
      ``{"batch_id": ..., "counts": {...}}``.

    ``counts`` has ``marked``, ``already_marked``, ``skipped_payload_search``, ``skipped_no_events`` and
    ``not_found``. Marking is idempotent, so retries are safe (a retry reports ``already_marked``).

    :param session_ids: ids to mark (templated): a list, a JSON list, or comma/space/newline separated text.
    :param batch_id: a batch whose eligible sessions are all marked (templated).
    :param clickstream_conn_id: Airflow Connection of the session store (templated).
    """

    template_fields: Sequence[str] = ("session_ids", "batch_id", "clickstream_conn_id")
    ui_color = "#fdf2d0"

    def __init__(
        self,
        *,
        session_ids: Any = None,
        batch_id: str | None = None,
        clickstream_conn_id: str = "clickstream_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.session_ids = session_ids
        self.batch_id = batch_id
        self.clickstream_conn_id = clickstream_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from clickstream.hooks import ClickstreamHook
        from clickstream.operators._errors import fail_without_retry

        ids = parse_session_ids(self.session_ids)
        batch_id = (self.batch_id or "").strip() or None
        if bool(ids) == bool(batch_id):
            raise ValueError(
                "give exactly one of session_ids (a non-empty list) and batch_id; "
                f"got session_ids={self.session_ids!r}, batch_id={self.batch_id!r}"
            )
        with ClickstreamHook(self.clickstream_conn_id) as hook, fail_without_retry():
            if batch_id:
                counts = hook.mark_batch_for_improvement(batch_id).model_dump()
                self.log.info("Batch %s marked for improvement: %s", batch_id, _fmt(counts))
                return {"batch_id": batch_id, "counts": counts}
            counts_model, outcomes = hook.mark_sessions_for_improvement(ids)
        for o in outcomes:
            self.log.info(
                "session %s: %s%s", o["session_id"], o["status"], f" ({o['reason']})" if o.get("reason") else ""
            )
        counts = counts_model.model_dump()
        self.log.info("%d session(s) processed: %s", len(ids), _fmt(counts))
        return {"counts": counts, "outcomes": outcomes}


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items())
