"""The clickstream REST API client, as the plugin ships it: :mod:`clickstream_client` answering pydantic models.

The client itself is the light distribution ``clickstream-client`` (``clients/python``, import package
:mod:`clickstream_client`: ``httpx`` only, Python 3.9+, answers as plain JSON ``dict``s). This module keeps the
plugin's names importable as they were (``from clickstream.client import ClickstreamClient, BulkWriter,
NotFoundError, ...``) and keeps their answers what they were: the pydantic models of :mod:`clickstream.models`
(``client.get_session(sid).batch_id``; a writer's ``rejected`` items and ``on_result`` answers too).

It is the least surprising way to keep both: code written against the plugin keeps attribute access and model
equality, a service that does not want the plugin installs ``clickstream-client`` and gets the same methods
(the same names and arguments) answering ``dict``s. Only :meth:`ClickstreamClient.parse_answer` differs: it
validates each answer into the model of the same name as the OpenAPI schema (``RegisterResult``,
``SessionOut``, ...). Static types of the methods are those of :mod:`clickstream_client.types`; at run time
the answers here are the models.

Usage::

    from clickstream.client import ClickstreamClient, NotFoundError

    with ClickstreamClient("http://localhost:8080", username="search-service", password="s3cret") as client:
        client.register_session({"session_id": "sess-1", "search_query": "ai transformer",
                                 "search_results": [{"object_id": "obj-1", "rank": 1.0}]})
        session = client.get_session("sess-1")          # a SessionOut
        with client.writer(max_items=1000, max_age_s=1.0) as writer:   # gzip bulk requests, retried
            writer.add_session({"session_id": "sess-2", "search_results": []})

See :mod:`clickstream_client` for errors, authentication, the writers and compression.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clickstream import models
from clickstream_client import (
    RETRY_STATUSES,
    AsyncBulkWriter,
    AuthError,
    BulkDeliveryError,
    BulkWriter,
    ClickstreamError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
    UnsupportedEncodingError,
)
from clickstream_client import AsyncClickstreamClient as _LightAsyncClient
from clickstream_client import ClickstreamClient as _LightClient

if TYPE_CHECKING:
    # The light client's methods are typed with its JSON TypedDicts; here every answer is a pydantic model
    # instead, so to a type checker these classes answer Any (their methods and arguments stay checked at run
    # time by the server and the models).
    _Client = Any
    _AsyncClient = Any
else:
    _Client = _LightClient
    _AsyncClient = _LightAsyncClient

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
    "as_model",
]


def as_model(schema: str, data: Any) -> Any:
    """``data`` (an answer's JSON) validated into the model of :mod:`clickstream.models` named ``schema``."""
    model = getattr(models, schema, None)
    if model is None:  # a schema the plugin's models do not name (a newer server): the JSON as it is
        return data
    return model.model_validate(data)


class ClickstreamClient(_Client):
    """:class:`clickstream_client.ClickstreamClient` answering the pydantic models of :mod:`clickstream.models`."""

    def parse_answer(self, schema: str, data: Any) -> Any:
        return as_model(schema, data)


class AsyncClickstreamClient(_AsyncClient):
    """:class:`clickstream_client.AsyncClickstreamClient` answering the models of :mod:`clickstream.models`."""

    def parse_answer(self, schema: str, data: Any) -> Any:
        return as_model(schema, data)
