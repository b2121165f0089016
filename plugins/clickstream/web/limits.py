"""Request body size limit and content encoding of the clickstream API (``[clickstream] max_request_bytes``).

An ASGI middleware, so it holds before anything parses the body: a declared ``Content-Length`` over the
bound is answered 413 without reading the body; a body without one (chunked) is counted as it arrives and
refused with 413 as soon as it passes the bound. Either way no handler has run, so nothing is stored.

Compressed requests: a body sent with ``Content-Encoding: gzip`` is decompressed as it arrives (zlib, in
bounded steps) and the app sees the plain body; the bound applies to the compressed bytes *and* to the
decompressed ones, so a gzip bomb answers 413 after at most ``max_bytes`` were decompressed, with memory
bounded by about that much. ``identity`` (or no header) is the plain body; any other encoding answers 415
without reading the body, and a corrupt or truncated gzip stream answers 400 naming the encoding.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Default of ``[clickstream] max_request_bytes``: 8 MiB.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024

#: ``Content-Encoding`` values of request bodies the API accepts.
SUPPORTED_ENCODINGS = ("gzip", "identity")

#: Compressed bytes given to the decompressor at a time, and the most output it may produce per step.
_STEP_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised while the body is read; FastAPI's body parsing passes HTTPExceptions through unchanged."""

    def __init__(self, max_bytes: int, *, decompressed: bool = False):
        super().__init__(413, _detail(max_bytes, decompressed=decompressed))


class BadEncoding(HTTPException):
    """400: the body is not the valid stream its ``Content-Encoding`` says (raised while it is read)."""

    def __init__(self, detail: str):
        super().__init__(400, detail)


def _detail(max_bytes: int, *, decompressed: bool = False) -> str:
    what = "decompressed request body" if decompressed else "request body"
    return f"body: {what} larger than {max_bytes} bytes ([clickstream] max_request_bytes); send fewer items per request"


def _unsupported_detail(encoding: str) -> str:
    return (
        f"Content-Encoding: {encoding!r} is not supported for request bodies; "
        f"send {' or '.join(SUPPORTED_ENCODINGS)} (or no Content-Encoding)"
    )


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413 ``{"detail": ...}`` (decompressed too), decompress
    ``Content-Encoding: gzip`` bodies, and refuse other encodings with 415."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _answer(send, 413, _detail(self.max_bytes))
            return
        encoding = _content_encoding(scope)
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            await _answer(send, 415, _unsupported_detail(encoding))
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

        app_scope, app_receive = scope, limited_receive
        if encoding in ("gzip", "x-gzip"):
            app_scope = _plain_scope(scope)
            app_receive = GzipReceive(limited_receive, self.max_bytes)
        try:
            await self.app(app_scope, app_receive, tracking_send)
        except (BodyTooLarge, BadEncoding) as err:  # read outside FastAPI's handlers (e.g. by a middleware)
            if started:
                raise
            await _answer(send, err.status_code, str(err.detail))


class GzipReceive:
    """An ASGI ``receive`` giving the decompressed body of a gzip request (``receive`` gives the compressed one).

    Each compressed message is decompressed in steps of at most ``_STEP_BYTES`` of output
    (``zlib.decompressobj(wbits=31).decompress(data, max_length)``), so one small message of a highly
    compressed body never expands into more than that at once; past ``max_bytes`` of output it raises
    :class:`BodyTooLarge`. Concatenated gzip members (RFC 1952) are decompressed one after the other.
    """

    def __init__(self, receive: Receive, max_bytes: int):
        self.receive = receive
        self.max_bytes = max_bytes
        self.produced = 0
        self._decompressor = zlib.decompressobj(wbits=31)
        self._pending = b""  # compressed input not yet given to the decompressor
        self._more = True  # more compressed messages to come
        self._buffered = False  # zlib may hold more output of the input already given
        self._done = False

    async def __call__(self) -> Message:
        if self._done:
            return await self.receive()  # http.disconnect, as the server sends it
        while True:
            if not self._pending and not self._buffered and self._more:
                message = await self.receive()
                if message["type"] != "http.request":
                    return message
                self._pending = message.get("body", b"")
                self._more = bool(message.get("more_body", False))
            chunk = self._step()
            last = not self._pending and not self._buffered and not self._more
            if last:
                self._finish()
            if chunk or last:
                return {"type": "http.request", "body": chunk, "more_body": not last}

    def _step(self) -> bytes:
        """At most ``_STEP_BYTES`` of output from the pending input (less when the input runs out)."""
        out = b""
        while len(out) < _STEP_BYTES:
            d = self._decompressor
            if d.eof:
                if not self._pending:
                    break
                # the next member of a multi-member stream (or trailing garbage: the 400 below)
                self._decompressor = d = zlib.decompressobj(wbits=31)
            if not self._pending and not self._buffered:
                break
            budget = _STEP_BYTES - len(out)
            try:
                piece = d.decompress(self._pending, budget)
            except zlib.error as err:
                raise BadEncoding(f"body: not a valid gzip stream (Content-Encoding: gzip): {err}") from None
            self._pending = d.unconsumed_tail or (d.unused_data if d.eof else b"")
            # a full output buffer may leave output inside zlib even with no input left
            self._buffered = len(piece) == budget and not d.eof
            out += piece
            self.produced += len(piece)
            if self.produced > self.max_bytes:
                raise BodyTooLarge(self.max_bytes, decompressed=True)
        return out

    def _finish(self) -> None:
        self._done = True
        if not self._decompressor.eof:
            raise BadEncoding("body: the gzip stream is truncated (Content-Encoding: gzip)")


def document_encodings(app: FastAPI) -> None:
    """Declare in ``app``'s OpenAPI document what this middleware answers on every route with a request body:
    415 for an unsupported ``Content-Encoding`` (gzip is accepted), next to the routes' own 413."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            answer = {
                "description": (
                    "The body's `Content-Encoding` is neither `gzip` nor `identity`; nothing was read or stored. "
                    "(A gzip body is decompressed as it arrives; `[clickstream] max_request_bytes` bounds it "
                    "decompressed too.)"
                ),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
            }
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if isinstance(operation, dict) and "requestBody" in operation:
                        operation.setdefault("responses", {}).setdefault("415", answer)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _content_encoding(scope: Scope) -> str:
    """The request's ``Content-Encoding``, lower case and trimmed ("" when absent)."""
    value = _header(scope, b"content-encoding")
    return "" if value is None else value.decode("latin-1").strip().lower()


def _plain_scope(scope: Scope) -> Scope:
    """``scope`` as the app sees a decompressed body: without ``Content-Encoding`` and ``Content-Length``."""
    headers = [(n, v) for n, v in scope.get("headers", ()) if n not in (b"content-encoding", b"content-length")]
    return {**scope, "headers": headers}


async def _answer(send: Send, status_code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
