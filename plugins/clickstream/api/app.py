"""The clickstream FastAPI app and the per-process session store behind it.

:func:`create_app` builds the app (no database work). Its lifespan, entered by Airflow's API server for
every mounted plugin app, opens the store once per process: the Airflow Connection ``[clickstream]
conn_id`` (default ``clickstream_default``) is resolved through :class:`~clickstream.hooks.ClickstreamHook`
(in the API server this sees connections stored in the metadata DB), its engine created, the schema
migrated (``[clickstream] api_migrate``, default on); on shutdown the engine is disposed. If the store
cannot be opened at startup (connection missing, database down) the API server still starts: requests
answer 503 and the next one tries to open it again.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from clickstream import __version__
from clickstream.api.admin import admin_router
from clickstream.api.batches import batches_router
from clickstream.api.deps import get_user
from clickstream.api.errors import install_error_handlers
from clickstream.api.sessions import sessions_router
from clickstream.hooks import ClickstreamHook, store_config_from_airflow
from clickstream.store import StoreConfig, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from clickstream.store import SessionStore

log = logging.getLogger(__name__)

#: Default Airflow Connection of the store (``[clickstream] conn_id``).
DEFAULT_CONN_ID = ClickstreamHook.default_conn_name

_DESCRIPTION = """\
Clickstream of the search system: register sessions and their events, page through batches, release a
batch, queue sessions for model improvement, erase a user's data.

Every route needs an Airflow user: send `Authorization: Bearer <token>` (get a token with
`POST /auth/token`). Reads are open to any user; writes need permission to edit DAGs; erasure needs an
administrator. Errors are JSON `{"detail": "..."}` naming the offending field or id.
"""


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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    holder: StoreHolder = app.state.clickstream
    try:
        await run_in_threadpool(holder.get)
    except StoreError as err:
        log.warning("clickstream: %s; its routes answer 503 until the store can be opened", err.detail)
    try:
        yield
    finally:
        holder.close()


def create_app(
    *,
    conn_id: str | None = None,
    store_config: StoreConfig | None = None,
    migrate: bool | None = None,
) -> FastAPI:
    """Build the clickstream API app (cheap: no database work until its lifespan starts).

    :param conn_id: Airflow Connection of the store; default ``[clickstream] conn_id`` or
        ``clickstream_default``.
    :param store_config: bounds declared on query parameters; default from the ``[clickstream]`` section
        (the same values the store enforces).
    :param migrate: migrate the store's schema when it is opened; default ``[clickstream] api_migrate``
        (true).
    """
    from airflow.sdk import conf

    conn_id = conn_id or conf.get("clickstream", "conn_id", fallback=DEFAULT_CONN_ID)
    if migrate is None:
        migrate = conf.getboolean("clickstream", "api_migrate", fallback=True)
    config = store_config or store_config_from_airflow()

    app = FastAPI(
        title="Clickstream API",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=_lifespan,
        dependencies=[Depends(get_user)],
    )
    app.state.clickstream = StoreHolder(conn_id, migrate=migrate)
    install_error_handlers(app)
    app.include_router(sessions_router(config))
    app.include_router(batches_router(config))
    app.include_router(admin_router())
    return app
