"""``Content-Encoding`` of request bodies (:mod:`clickstream.web.limits`), at the ASGI level: gzip bodies are
decompressed as they arrive, bounded by ``max_bytes`` (a gzip bomb stops after at most that much output, with
bounded memory), other encodings answer 415, a corrupt stream 400. The same through a real ``airflow
api-server``: tests/client/test_gzip.py."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import pytest

from clickstream.web.limits import BodySizeLimit

MAX = 256 * 1024


async def _echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the middleware: answers the body's length, its first bytes and its header names."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = json.dumps(
        {
            "length": len(body),
            "head": bytes(body[:20]).decode("latin-1"),
            "headers": [n.decode() for n, _ in scope["headers"]],
        }
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer})


def call(chunks: Iterable[bytes], headers: dict[str, str], max_bytes: int = MAX) -> tuple[int, dict[str, Any]]:
    """Send ``chunks`` as one request's body through :class:`BodySizeLimit`; the status and the JSON answer."""
    app = BodySizeLimit(cast(Any, _echo_length), max_bytes=max_bytes)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/bulk",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    pieces: Iterator[bytes] = iter(chunks)
    pending: bytes | None = None
    started = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pending, started
        if not started:
            started, pending = True, next(pieces, None)
        if pending is None:
            return {"type": "http.disconnect"}
        body, pending = pending, next(pieces, None)
        return {"type": "http.request", "body": body, "more_body": pending is not None}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, cast(Any, send)))
    status = sent[0]["status"]
    return status, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def split(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def bomb_chunks(total: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """A gzip stream of ``total`` zero bytes, produced (and sent) piece by piece."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(chunk)
    for _ in range(total // chunk):
        out = compressor.compress(zeros)
        if out:
            yield out
    yield compressor.flush()


class TestGzip:
    def test_a_gzip_body_reaches_the_app_decompressed_without_its_encoding_headers(self) -> None:
        plain = json.dumps({"sessions": [{"session_id": f"s-{i}"} for i in range(2000)]}).encode()
        packed = gzip.compress(plain)
        status, answer = call(
            split(packed), {"content-encoding": "gzip", "content-length": str(len(packed)), "x-other": "1"}
        )
        assert status == 200
        assert answer["length"] == len(plain) and answer["head"] == plain[:20].decode()
        assert answer["headers"] == ["x-other"]

    @pytest.mark.parametrize("encoding", ["identity", "", " GZip "])
    def test_identity_no_header_and_any_case(self, encoding: str) -> None:
        body = b'{"a": 1}'
        data = gzip.compress(body) if "zip" in encoding.lower() else body
        status, answer = call([data], {"content-encoding": encoding} if encoding else {})
        assert (status, answer["length"], answer["head"]) == (200, len(body), body.decode())

    def test_concatenated_members_are_one_body(self) -> None:
        data = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
        status, answer = call(split(data, 7), {"content-encoding": "gzip"})
        assert (status, answer["length"], answer["head"]) == (200, 8, '{"a": 1}')

    def test_a_gzip_bomb_answers_413_after_at_most_max_bytes_with_bounded_memory(self) -> None:
        tracemalloc.start()
        try:
            status, answer = call(bomb_chunks(256 * 1024 * 1024, chunk=256 * 1024), {"content-encoding": "gzip"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 413
        assert answer["detail"].startswith(f"body: decompressed request body larger than {MAX} bytes")
        assert peak < 8 * MAX + 4 * 1024 * 1024  # not the 256 MiB it would decompress to

    def test_the_compressed_size_is_bounded_too(self) -> None:
        status, answer = call([b"x" * 10], {"content-encoding": "gzip", "content-length": str(MAX + 1)})
        assert status == 413 and "max_request_bytes" in answer["detail"]

    @pytest.mark.parametrize(
        ("data", "words"),
        [
            (b"not gzip at all", "not a valid gzip stream"),
            (gzip.compress(b'{"a": 1}' * 100)[:-30], "truncated"),
            (gzip.compress(b'{"a": 1}') + b"garbage", "not a valid gzip stream"),
        ],
        ids=["not-gzip", "truncated", "trailing-garbage"],
    )
    def test_a_corrupt_stream_is_400_naming_the_encoding(self, data: bytes, words: str) -> None:
        status, answer = call(split(data, 16), {"content-encoding": "gzip"})
        assert status == 400
        assert words in answer["detail"] and "Content-Encoding: gzip" in answer["detail"]


class TestUnsupported:
    @pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br", "compress"])
    def test_other_encodings_are_415_without_reading_the_body(self, encoding: str) -> None:
        def body() -> Iterator[bytes]:
            raise AssertionError("the body was read")
            yield b""

        status, answer = call(body(), {"content-encoding": encoding})
        assert status == 415
        assert repr(encoding) in answer["detail"] and "gzip" in answer["detail"]
