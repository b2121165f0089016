"""``POST /bulk``: many sessions and events in one request, each item accounted for in the answer.

The body is read the fast way (:class:`BulkRoute`): msgspec splits it into the JSON text of each item, which
the store decodes and checks item by item (:mod:`clickstream.store.fastrows`, the models for what that does
not take), so no Python object is built for a valid item's values. FastAPI still validates the body against
:class:`~clickstream.models.BulkIn` (on those texts) and documents it as before.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from clickstream import models
from clickstream.web.deps import require_write
from clickstream.web.errors import error_responses
from clickstream.web.holder import StoreDep


class BulkBody(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /bulk`` in the one shape the fast read takes: an object with at most ``sessions`` and
    ``events``, each a list, whose items are kept as their JSON text (``msgspec.Raw``)."""

    sessions: list[msgspec.Raw] = []
    events: list[msgspec.Raw] = []


_DECODE_BODY = msgspec.json.Decoder(BulkBody).decode


def split_body(body: bytes) -> dict[str, list[msgspec.Raw]] | None:
    """The body as ``{"sessions": [...], "events": [...]}`` of the items' JSON texts, or None when it is not
    valid UTF-8 JSON in that shape. None leaves the body to FastAPI (``json.loads``, then :class:`BulkIn`),
    whose answers to a bad body (a JSON error at its position, a missing or unknown field, a list that is
    not one) are then exactly as before. A body taken here is one ``json.loads`` parses alike (msgspec takes
    only strict JSON; valid UTF-8 is checked here, as msgspec does not check the text it skips), so an item
    that the store's fast path does not take parses, item by item, as it did in the whole body."""
    try:
        split = _DECODE_BODY(body)
        body.decode("utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return {"sessions": split.sessions, "events": split.events}


class SplitRequest(Request):
    """The request with its body read, and its JSON already split by :func:`split_body`: FastAPI asks
    :meth:`json` and gets the split, instead of parsing the whole body into Python objects."""

    def __init__(self, request: Request, body: bytes, split: dict[str, list[msgspec.Raw]]):
        super().__init__(request.scope, request.receive)
        self.raw_body = body
        self.split = split

    async def body(self) -> bytes:
        return self.raw_body

    async def json(self) -> Any:
        return self.split


class BulkRoute(APIRoute):
    """The ``/bulk`` route: its body read first and split (:func:`split_body`); a body that does not split is
    left to FastAPI as it is (it reads the body again from the request, which keeps it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            body = await request.body()  # errors (size limit, gzip) are raised as FastAPI raises them
            split = split_body(body) if body else None
            return await handler(request if split is None else SplitRequest(request, body, split))

        return route


def bulk_router() -> APIRouter:
    """The ``/bulk`` route (its bounds, ``max_bulk_items`` and the item limits, are the store's)."""
    router = APIRouter(tags=["sessions"], route_class=BulkRoute)

    @router.post(
        "/bulk",
        response_model=models.BulkResult,
        dependencies=[Depends(require_write)],
        responses=error_responses(400, 401, 403, 413, 422, 503),
        summary="Register sessions and push events in bulk",
    )
    def bulk(body: models.BulkIn, store: StoreDep) -> Response:
        """Register ``sessions`` (each as for ``POST /session``) and store ``events`` (each as an item of
        ``POST /session/events`` plus its ``session_id``); either list may be omitted.

        Sessions are written before events, so events of a session registered in the same request attach
        to it. Every item is counted once: ``sessions.registered`` + ``sessions.already_registered`` +
        ``events.stored`` + ``events.duplicates`` + ``events.over_limit`` + ``len(rejected)`` = items sent.
        An invalid item, or a session conflicting with what is stored, is listed in ``rejected`` (``item``
        such as ``sessions[3]``, and the reason naming the field) and does not stop the others. A 200 means
        everything reported stored is committed; retrying the same request changes nothing.

        More than ``[clickstream] max_bulk_items`` items (default 1000) is a 422 and stores nothing; a
        body over ``[clickstream] max_request_bytes`` (default 8 MiB) is a 413.
        """
        result = store.get().ingest_bulk(body.sessions, body.events)
        # the answer is a BulkResult already: written as JSON here, not validated and encoded again by FastAPI
        return Response(result.model_dump_json(), media_type="application/json")

    return router
