"""JSON answers the store already serialised (``GET /batch/sessions``), compressed where the route runs.

Airflow's API server compresses every answer of 1 KiB or more for a client that accepts gzip
(``GZipMiddleware``, level 5); an answer of 128 KiB or more, such as a page of 100 sessions, it compresses
in a worker thread: one more hop to the thread pool and back for every page. :func:`json_response`
compresses such a body in the route's own worker thread instead, as the middleware would (gzip, level 5,
``Vary: Accept-Encoding``); the middleware passes an answer that has a ``Content-Encoding`` through untouched.
Smaller bodies, and clients that do not accept gzip, get the plain body, which the middleware then handles
as before.
"""

from __future__ import annotations

import gzip

from fastapi import Request, Response

#: The body size from which the middleware would compress in a thread (Starlette's ``thread_minimum_size``).
COMPRESS_FROM = 128 * 1024
#: Airflow's ``GZipMiddleware`` level.
COMPRESS_LEVEL = 5


def json_response(request: Request, body: bytes) -> Response:
    """``body`` (JSON, UTF-8) as the answer: gzip-compressed here when it is large and the client accepts it."""
    if len(body) >= COMPRESS_FROM and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            gzip.compress(body, COMPRESS_LEVEL, mtime=0),
            media_type="application/json",
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        )
    return Response(body, media_type="application/json")
