"""Request body size limit of the clickstream API (``[clickstream] max_request_bytes``).

An ASGI middleware, so it holds before anything parses the body: a declared ``Content-Length`` over the
bound is answered 413 without reading the body; a body without one (chunked) is counted as it arrives and
refused with 413 as soon as it passes the bound. Either way no handler has run, so nothing is stored.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, status

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Default of ``[clickstream] max_request_bytes``: 8 MiB.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised while the body is read; FastAPI's body parsing passes HTTPExceptions through unchanged."""

    def __init__(self, max_bytes: int):
        super().__init__(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, _detail(max_bytes))


def _detail(max_bytes: int) -> str:
    return (
        f"body: request body larger than {max_bytes} bytes ([clickstream] max_request_bytes); "
        "send fewer items per request"
    )


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413 ``{"detail": ...}``."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _answer_413(send, self.max_bytes)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:  # read outside FastAPI's handlers (e.g. by a middleware): answer here
            if started:
                raise
            await _answer_413(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer_413(send: Send, max_bytes: int) -> None:
    body = json.dumps({"detail": _detail(max_bytes)}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
