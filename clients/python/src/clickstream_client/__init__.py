"""A light client of the clickstream REST API (Airflow's API server, ``/clickstream``): sync and asyncio.

Needs only ``httpx`` (Python 3.9+); answers are the server's JSON objects, typed by :mod:`clickstream_client.types`.

Usage::

    from clickstream_client import ClickstreamClient, NotFoundError

    with ClickstreamClient("http://localhost:8080", username="search-service", password="s3cret") as client:
        client.register_session({"session_id": "sess-1", "search_query": "ai transformer",
                                 "search_results": [{"object_id": "obj-1", "rank": 1.0}]})
        client.push_events("sess-1", [{"event_id": "evt-1", "object_id": "obj-1"}])
        print(client.get_session("sess-1")["batch_id"])

        with client.writer(max_items=1000, max_age_s=1.0) as writer:   # gzip bulk requests, retried
            writer.add_session({"session_id": "sess-2", "search_results": []})
            writer.add_event("sess-2", {"event_id": "evt-1", "object_id": "obj-1"})

    async with AsyncClickstreamClient(url, token=token) as client:        # the same methods, awaited
        async with client.writer() as writer:
            await writer.add_session({...})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clickstream_client.client import ClickstreamClient
from clickstream_client.errors import (
    AuthError,
    BulkDeliveryError,
    ClickstreamError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    UnsupportedEncodingError,
)
from clickstream_client.writers import RETRY_STATUSES, BulkWriter

if TYPE_CHECKING:
    from clickstream_client.aio import AsyncBulkWriter, AsyncClickstreamClient


def __getattr__(name: str) -> Any:
    """The asyncio names, imported on first use (so a sync service does not pay for importing asyncio)."""
    if name in ("AsyncClickstreamClient", "AsyncBulkWriter"):
        from clickstream_client import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'clickstream_client' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "RETRY_STATUSES",
    "AsyncBulkWriter",
    "AsyncClickstreamClient",
    "AuthError",
    "BulkDeliveryError",
    "BulkWriter",
    "ClickstreamClient",
    "ClickstreamError",
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "TooLargeError",
    "UnavailableError",
    "UnsupportedEncodingError",
]
