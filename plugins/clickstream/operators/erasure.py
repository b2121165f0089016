"""EraseUserOperator: remove every session, event and improvement mark of one user from the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickstream.operators.base import ClickstreamBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from clickstream.models import EraseResult
    from clickstream.operators.lineage import Lineage


class EraseUserOperator(ClickstreamBaseOperator):
    """Erase a user's data from the session store (one transaction) and log what may remain elsewhere.

    The store forgets the user's sessions, their events and improvement marks. Datasets already extracted
    from **released** batches are files outside the store and are not touched: the task log lists each
    released batch that held the user's sessions (batch id, release id, release time) so that the owner of
    those datasets can erase the user there too. The same list is in the return value (XCom) as
    ``released_batches``. Idempotent: a retry erases nothing more and answers zero counts. An empty or
    invalid ``user_id`` fails the task without retry.

    :param user_id: the user to erase (templated, e.g. ``{{ params.user_id }}``).
    :param clickstream_conn_id: the session store's Airflow Connection (templated).
    """

    template_fields: Sequence[str] = ("user_id", *ClickstreamBaseOperator.template_fields)
    ui_color = "#ffd9d9"

    def __init__(self, *, user_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_id = user_id
        self.erased: EraseResult | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from clickstream.store import NotFound

        with self.store() as hook:
            result = hook.erase_user(self.user_id)
            self.erased = result
            self.log.info(
                "erased user %r: %d sessions, %d events, %d improvement marks, from %d batch(es)",
                result.user_id,
                result.sessions,
                result.events,
                result.marks,
                len(result.batches),
            )
            released, collecting = [], []
            for batch_id in result.batches:
                try:
                    batch = hook.get_batch(batch_id)
                except NotFound:  # a batch purged meanwhile: nothing of it remains in the store
                    continue
                if batch.status == "released":
                    released.append(
                        {"batch_id": batch.batch_id, "release_id": batch.release_id, "released_at": batch.released_at}
                    )
                else:
                    collecting.append(batch.batch_id)
        if collecting:
            self.log.info(
                "collecting batch %s held the user's sessions: nothing of them will be released", ", ".join(collecting)
            )
        if released:
            self.log.warning(
                "the user's sessions were in %d RELEASED batch(es); datasets extracted from them are outside "
                "the store and still hold the user's data: erase user %r there too",
                len(released),
                result.user_id,
            )
            self.log.info(f"::group::Released batches that held user {result.user_id!r} ({len(released)})")
            for b in released:
                self.log.warning(
                    "released batch %s (release_id %s, released_at %d)",
                    b["batch_id"],
                    b["release_id"],
                    b["released_at"],
                )
            self.log.info("::endgroup::")
        else:
            self.log.info("no released batch held the user's sessions: no extracted dataset holds them")
        return {**result.model_dump(mode="json"), "released_batches": released}

    def lineage(self) -> Lineage:
        """Writes (deletes from) the user's sessions, events and improvement marks. The user id is not
        reported: lineage metadata must not carry the identity being erased."""
        from clickstream.operators.lineage import EVENTS, MARKS, SESSIONS, Lineage, Table

        erased = self.erased
        return Lineage(
            inputs=[Table(SESSIONS)],
            outputs=[Table(SESSIONS), Table(EVENTS), Table(MARKS)],
            run=(
                {
                    "erased_sessions": erased.sessions,
                    "erased_events": erased.events,
                    "erased_marks": erased.marks,
                    "tombstones": erased.tombstones,
                    "batches": len(erased.batches),
                }
                if erased
                else {}
            ),
        )
