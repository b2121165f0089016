"""ClickstreamBaseOperator: what every clickstream operator shares.

* the session store's Connection, ``clickstream_conn_id`` (templated; default ``clickstream_default``, the
  hook's ``default_conn_name``), and the hook built from it (:attr:`ClickstreamBaseOperator.hook`);
* one rule for failing: an error a retry cannot fix fails the task at once, without its retries. That is
  bad input (a task argument, or what the store refuses as :class:`~clickstream.store.InvalidInput`), an
  unknown id (:class:`~clickstream.store.NotFound`) and a conflict (:class:`~clickstream.store.Conflict`).
  An outage (:class:`~clickstream.store.StoreUnavailable`) and anything unexpected are retried as usual;
* OpenLineage: ``get_openlineage_facets_on_complete`` reports what :meth:`ClickstreamBaseOperator.lineage`
  describes (the store's tables, the dataset root or files, the batch id and counts), when the optional
  OpenLineage provider is installed.

Importing this module is cheap (no store, no hook), so DAG files stay quick to parse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from clickstream.hooks import ClickstreamHook
    from clickstream.operators.lineage import Lineage

#: ``ClickstreamHook.default_conn_name``, without importing the hook (a test keeps the two equal).
DEFAULT_CONN_ID = "clickstream_default"


def conn_id_param() -> Any:
    """The ``conn_id`` param every clickstream DAG has: the session store's Connection (a trigger form field)."""
    from airflow.sdk import Param

    return Param(
        DEFAULT_CONN_ID,
        type="string",
        minLength=1,
        title="Session store connection",
        description="Airflow Connection id of the clickstream session store.",
    )


class InvalidTaskInput(AirflowFailException, ValueError):
    """A task argument that a retry cannot fix: the task fails at once, without retries.

    It is also a :class:`ValueError`, which is what these operators raised for bad arguments before, so code
    that catches ``ValueError`` keeps working.
    """


@contextmanager
def fail_without_retry() -> Iterator[None]:
    """Store errors a retry cannot fix (bad input, unknown ids, conflicts) fail the task at once with the
    store's message, instead of spending the task's retries; outages (``StoreUnavailable``) still retry."""
    from clickstream.store import Conflict, InvalidInput, NotFound

    try:
        yield
    except (InvalidInput, NotFound, Conflict) as err:
        raise AirflowFailException(err.detail) from None


class ClickstreamBaseOperator(BaseOperator):
    """Base of the clickstream operators: the store's Connection, its hook, the failure rule, lineage.

    Subclasses add their fields to ``template_fields`` (keeping ``clickstream_conn_id``), run their store
    calls inside ``with self.store() as hook:``, and describe their lineage in :meth:`lineage`.

    :param clickstream_conn_id: Airflow Connection of the session store (templated); default
        ``clickstream_default``.
    """

    template_fields: Sequence[str] = ("clickstream_conn_id",)

    def __init__(self, *, clickstream_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clickstream_conn_id = clickstream_conn_id
        self._hook: ClickstreamHook | None = None

    @property
    def hook(self) -> ClickstreamHook:
        """The :class:`~clickstream.hooks.ClickstreamHook` of ``clickstream_conn_id`` (as rendered)."""
        from clickstream.hooks import ClickstreamHook

        if self._hook is None or self._hook.clickstream_conn_id != self.clickstream_conn_id:
            self._hook = ClickstreamHook(self.clickstream_conn_id)
        return self._hook

    @contextmanager
    def store(self) -> Iterator[ClickstreamHook]:
        """The hook, for the store calls of one run: store errors a retry cannot fix fail the task at once
        (:func:`fail_without_retry`), and the hook's connections are closed at the end."""
        hook = self.hook
        try:
            with fail_without_retry():
                yield hook
        finally:
            hook.close()

    @staticmethod
    def invalid(field: str, message: str) -> InvalidTaskInput:
        """The error for a bad task argument, naming it: ``raise self.invalid("page_size", "must be >= 1")``."""
        return InvalidTaskInput(f"{field}: {message}")

    # ------------------------------------------------------------------------------------------ lineage

    def lineage(self) -> Lineage | None:
        """What this task read and wrote (after :meth:`execute`; also after a failure, with what is known).

        None: no lineage. Subclasses override it.
        """
        return None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage facets of the finished task (called by the OpenLineage provider's listener, which is
        the only caller; the provider is an optional dependency, imported here only)."""
        described = self.lineage()
        if described is None:
            return None
        from clickstream.operators.lineage import to_openlineage

        return to_openlineage(described, self.hook.sqlalchemy_url)
