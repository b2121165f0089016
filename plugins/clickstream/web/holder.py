"""One session store per API-server process, opened on first use and closed with the app's lifespan."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from clickstream.hooks import ClickstreamHook
from clickstream.store import StoreUnavailable

if TYPE_CHECKING:
    from clickstream.store import SessionStore

log = logging.getLogger(__name__)


class StoreHolder:
    """One :class:`SessionStore` per process, opened on first use, closed by :meth:`close`.

    :param conn_id: the Airflow Connection of the store.
    :param migrate: apply pending schema migrations when the store is opened.
    :param engine_kwargs: extra :func:`sqlalchemy.create_engine` arguments (pool size, ...).
    """

    def __init__(self, conn_id: str, *, migrate: bool = True, engine_kwargs: dict[str, Any] | None = None):
        self.conn_id = conn_id
        self.migrate = migrate
        self.engine_kwargs = engine_kwargs or {}
        self._store: SessionStore | None = None
        self._lock = threading.Lock()

    def get(self) -> SessionStore:
        """The store; raises :class:`StoreUnavailable` (503) when it cannot be opened."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is None:
                self._store = self._open()
            return self._store

    def _open(self) -> SessionStore:
        hook = ClickstreamHook(clickstream_conn_id=self.conn_id, engine_kwargs=dict(self.engine_kwargs))
        try:
            store = hook.get_conn()
        except Exception as err:  # connection missing or unusable: the API answers 503, Airflow keeps running
            raise StoreUnavailable(
                f"session store not configured: Airflow connection {self.conn_id!r} is not usable ({err})"
            ) from err
        if self.migrate:
            try:
                applied = store.migrate()
            except Exception as err:
                store.dispose()
                if isinstance(err, StoreUnavailable):
                    raise
                raise StoreUnavailable(f"session store schema migration failed: {err}") from err
            if applied:
                log.info("clickstream: applied session-store migrations %s", applied)
        log.info("clickstream: session store open (%s, connection %r)", store.dialect, self.conn_id)
        return store

    def close(self) -> None:
        """Dispose of the engine (the next :meth:`get` opens a new one)."""
        with self._lock:
            if self._store is not None:
                self._store.dispose()
                self._store = None


async def get_store(request: Request) -> StoreHolder:
    """The process's :class:`StoreHolder` (``app.state.clickstream``), the store dependency of every route
    (:data:`StoreDep`: the JSON routes and the Clickstream page's); handlers call its ``get()`` only once the
    request is valid, so invalid input answers 422 even while the store is down. A coroutine: it never
    blocks, so FastAPI runs it on the event loop instead of sending it to the thread pool."""
    holder: StoreHolder = request.app.state.clickstream
    return holder


StoreDep = Annotated[StoreHolder, Depends(get_store)]
