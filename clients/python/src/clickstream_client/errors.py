"""Errors of the clickstream API as exceptions: :class:`ClickstreamError` (status, detail, field errors) and its
subclasses by status, and :class:`BulkDeliveryError` of the writers."""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = [
    "AuthError",
    "BulkDeliveryError",
    "ClickstreamError",
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "TooLargeError",
    "UnavailableError",
    "UnsupportedEncodingError",
]


class ClickstreamError(Exception):
    """A non-2xx answer of the clickstream API (or of ``POST /auth/token``).

    :param status: the HTTP status.
    :param detail: the answer's ``detail`` (a human-readable text naming the offending field or id), or
        its text when the answer is not the API's JSON error.
    :param errors: the answer's structured ``errors`` list (one entry per offending field: ``loc``, ``msg``,
        ``type``), if any.
    :param retry_after: the ``Retry-After`` header in seconds, if the server sent one (503).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = errors
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClickstreamError:
        """The exception (of the subclass for ``response.status_code``) for an error answer."""
        errors = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "detail" in body:
            raw = body["detail"]
            detail = raw if isinstance(raw, str) else json.dumps(raw, separators=(",", ":"), default=str)
            if isinstance(body.get("errors"), list):
                errors = body["errors"]
        else:
            detail = response.text.strip() or response.reason_phrase or "error"
        retry_after: float | None = None
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        status = response.status_code
        kind = ERROR_CLASSES.get(status, ClickstreamError)
        return kind(status, detail, errors, retry_after=retry_after)


class AuthError(ClickstreamError):
    """401 (no token, token expired, wrong credentials) or 403 (invalid token, role lacks the permission)."""


class NotFoundError(ClickstreamError):
    """404: unknown session, batch, or nothing to release."""


class ConflictError(ClickstreamError):
    """409: a ``session_id`` registered again with other content (the stored session is kept)."""


class TooLargeError(ClickstreamError):
    """413: the request body (decompressed) is larger than ``[clickstream] max_request_bytes``."""


class UnsupportedEncodingError(ClickstreamError):
    """415: the request's ``Content-Encoding`` is neither ``gzip`` nor ``identity``."""


class InvalidInputError(ClickstreamError):
    """422: invalid input; ``detail`` names the field (``body.created_at: ...``) and ``errors`` lists them."""


class UnavailableError(ClickstreamError):
    """503: the session store is unreachable or busy; retry after ``retry_after`` seconds."""


#: The exception class of each status (others are :class:`ClickstreamError`).
ERROR_CLASSES: dict[int, type[ClickstreamError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    415: UnsupportedEncodingError,
    422: InvalidInputError,
    503: UnavailableError,
}


class BulkDeliveryError(Exception):
    """A writer could not deliver some items (retries exhausted, or a non-retryable error).

    :param undelivered: the request bodies that were not delivered, each ``{"sessions": [...],
        "events": [...]}`` (the items as they would have been sent; events carry their ``session_id``).
    :param errors: the last error of each undelivered body, in the same order.
    """

    def __init__(self, undelivered: list[dict[str, list[dict[str, Any]]]], errors: list[BaseException]) -> None:
        items = sum(len(body["sessions"]) + len(body["events"]) for body in undelivered)
        last = errors[-1] if errors else None
        super().__init__(
            f"{items} item(s) in {len(undelivered)} request(s) could not be delivered"
            + (f"; last error: {type(last).__name__}: {last}" if last else "")
        )
        self.undelivered = undelivered
        self.errors = errors
