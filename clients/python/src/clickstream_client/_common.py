"""What the sync and the async client share: configuration, request bodies (JSON, gzip), answers."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from clickstream_client.routes import Call, encode_json

#: Bodies smaller than this are sent uncompressed even when compression is on (gzip would not pay).
GZIP_MIN_BYTES = 1024
#: Default zlib level of compressed bodies: 1 compresses JSON about 8x at a small CPU cost.
GZIP_LEVEL = 1
#: Where the plugin's routes are mounted on the Airflow API server.
PREFIX = "/clickstream"


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """``data`` as one gzip member (``Content-Encoding: gzip``)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def request_body(body: Any, compress: bool, level: int = GZIP_LEVEL) -> tuple[bytes | None, dict[str, str]]:
    """The bytes and headers of a JSON request body, gzip-compressed when ``compress`` (and worth it)."""
    if body is None:
        return None, {}
    data = encode_json(body)
    headers = {"Content-Type": "application/json"}
    if compress and len(data) >= GZIP_MIN_BYTES:
        data = gzip_bytes(data, level)
        headers["Content-Encoding"] = "gzip"
    return data, headers


class ClientBase:
    """Settings and the answer hook of both clients (no I/O here)."""

    prefix = PREFIX

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        username: str | None,
        password: str | None,
        compress: bool,
        compress_level: int,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._username = username
        self._password = password
        #: gzip request bodies of the write routes (``Content-Encoding: gzip``)
        self.compress = compress
        self.compress_level = compress_level

    @property
    def token(self) -> str | None:
        """The token in use (``None`` before the first login)."""
        return self._token

    def parse_answer(self, schema: str, data: Any) -> Any:
        """The value a method returns for an answer of ``schema`` (a name of :mod:`clickstream_client.types`):
        ``data``, the decoded JSON, unchanged. Subclasses may return richer objects (the plugin's
        ``clickstream.client`` returns its pydantic models)."""
        return data

    def _prepare(self, call: Call, compress: bool | None) -> tuple[str, bytes | None, dict[str, str]]:
        use = self.compress if compress is None else compress
        content, headers = request_body(call.body, use, self.compress_level)
        return self.prefix + call.path, content, headers

    def _credentials(self) -> dict[str, str]:
        if self._username is None or self._password is None:
            raise ValueError("the client has no username/password to log in with")
        return {"username": self._username, "password": self._password}


def page_parts(page: Any) -> tuple[list[Any], int | None]:
    """A batch page's sessions and ``last_number``, whether it is a ``dict`` or an object (a subclass's
    ``parse_answer`` may return models)."""
    if isinstance(page, Mapping):
        return list(page["sessions"]), page["last_number"]
    return list(page.sessions), page.last_number
