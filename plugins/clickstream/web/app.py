"""The clickstream FastAPI app: its routers, error handlers, body limit, and the lifespan that opens the store.

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
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from clickstream import __version__
from clickstream.hooks import ClickstreamHook, store_config_from_airflow
from clickstream.store import StoreConfig, StoreError
from clickstream.web import gc_tuning
from clickstream.web.deps import get_user
from clickstream.web.errors import install_error_handlers
from clickstream.web.holder import StoreHolder
from clickstream.web.limits import DEFAULT_MAX_REQUEST_BYTES, BodySizeLimit, document_encodings
from clickstream.web.routes.admin import admin_router
from clickstream.web.routes.analytics import analytics_router
from clickstream.web.routes.batches import batches_router, overview_router
from clickstream.web.routes.bulk import bulk_router
from clickstream.web.routes.labels import labels_router
from clickstream.web.routes.page import page_router
from clickstream.web.routes.sessions import sessions_router

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    holder: StoreHolder = app.state.clickstream
    try:
        await run_in_threadpool(holder.get)
    except StoreError as err:
        log.warning("clickstream: %s; its routes answer 503 until the store can be opened", err.detail)
    # the garbage collector, once per worker process; never raises (called through its module, so a
    # profiler can wrap it: bench/trace.py records what it did)
    gc_tuning.tune_worker_process()
    try:
        yield
    finally:
        holder.close()


def create_app(
    *,
    conn_id: str | None = None,
    store_config: StoreConfig | None = None,
    migrate: bool | None = None,
    max_request_bytes: int | None = None,
) -> FastAPI:
    """Build the clickstream API app (cheap: no database work until its lifespan starts).

    :param conn_id: Airflow Connection of the store; default ``[clickstream] conn_id`` or
        ``clickstream_default``.
    :param store_config: bounds declared on query parameters; default from the ``[clickstream]`` section
        (the same values the store enforces).
    :param migrate: migrate the store's schema when it is opened; default ``[clickstream] api_migrate``
        (true).
    :param max_request_bytes: largest request body; larger ones answer 413 before they are parsed; default
        ``[clickstream] max_request_bytes`` (8 MiB).
    """
    from airflow.sdk import conf

    conn_id = conn_id or conf.get("clickstream", "conn_id", fallback=DEFAULT_CONN_ID)
    if migrate is None:
        migrate = conf.getboolean("clickstream", "api_migrate", fallback=True)
    if max_request_bytes is None:
        max_request_bytes = conf.getint("clickstream", "max_request_bytes", fallback=DEFAULT_MAX_REQUEST_BYTES)
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
    app.include_router(overview_router())
    app.include_router(bulk_router())
    app.include_router(admin_router())
    app.include_router(analytics_router())
    app.include_router(labels_router())
    app.include_router(page_router(config))
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    document_encodings(app)  # the middleware's 415 (gzip accepted) in the OpenAPI document
    return app
