"""What every operation module of the store shares: the attributes :class:`SessionStore` sets."""

from __future__ import annotations

from collections.abc import Callable

from clickstream.store.checks import Checks
from clickstream.store.config import StoreConfig
from clickstream.store.db import Database


class StoreBase:
    """The state the operation classes (:mod:`~clickstream.store.sessions`, :mod:`~clickstream.store.batches`,
    :mod:`~clickstream.store.metrics`, :mod:`~clickstream.store.overview`, :mod:`~clickstream.store.improvement`,
    :mod:`~clickstream.store.erasure`, :mod:`~clickstream.store.retention`) work on;
    :class:`~clickstream.store.SessionStore` combines them.

    :ivar db: the connection layer (transactions, named queries).
    :ivar config: the tunables.
    :ivar checks: input checks bound to ``config``.
    :ivar clock: milliseconds since epoch.
    """

    db: Database
    config: StoreConfig
    checks: Checks
    clock: Callable[[], int]
