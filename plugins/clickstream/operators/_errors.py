"""How store errors end a task."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fail_without_retry() -> Iterator[None]:
    """Errors a retry cannot fix (bad input, unknown ids, conflicts) fail the task at once with the store's
    message, instead of spending the task's retries; outages (``StoreUnavailable``) still retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from clickstream.store import Conflict, InvalidInput, NotFound

    try:
        yield
    except (InvalidInput, NotFound, Conflict) as err:
        raise AirflowFailException(err.detail) from None
