"""Error mapping of the clickstream app, written once for the JSON routes and the Clickstream page.

:func:`error_answer` decides what an error answers: its status, its ``detail`` (naming the field or id),
the structured ``errors`` of bad input, and ``Retry-After`` on a 503:

* store errors (:class:`clickstream.store.StoreError`) answer their ``http_status`` with their ``detail``
  (404 unknown id, 409 conflict, 422 invalid input, 503 store unavailable: the database is down, locked,
  or has no free pooled connection, which :class:`~clickstream.store.db.Database` reports as
  :class:`~clickstream.store.StoreUnavailable`);
* request validation errors answer 422 with ``detail`` = ``"<where>.<field>: <message>"`` (for example
  ``"query.limit: Input should be less than or equal to 1000"``) and the structured list in ``errors``;
* HTTP errors (of the auth dependencies, the body size limit) answer their own status and detail;
* anything unexpected answers 500 (and is logged with its traceback).

The JSON routes render the answer as ``{"detail": "...", "errors": [...]}`` (:func:`install_error_handlers`;
HTTP errors keep FastAPI's own JSON handler), the page as an HTML page
(:class:`clickstream.web.routes.page.HtmlRoute`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from clickstream.models import ErrorDetail
from clickstream.store import StoreError
from clickstream.store.errors import errors_detail

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying after a 503.
RETRY_AFTER_S = 5

_DESCRIPTIONS = {
    400: "The body could not be parsed (e.g. not UTF-8).",
    401: "Not authenticated: no token, or the token expired.",
    403: "Forbidden: invalid token, or the user's role lacks the permission this route needs.",
    404: "Unknown id (session, batch or release).",
    409: "Conflict with what is stored (e.g. a session re-registered with other content).",
    413: "The request body is larger than `[clickstream] max_request_bytes`; nothing was stored.",
    422: "Invalid input; `detail` names the field and the bound or rule it breaks.",
    503: "The session store is unreachable or not configured; retry after `Retry-After` seconds.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries (model :class:`~clickstream.models.ErrorDetail`) for ``codes``."""
    return {code: {"model": ErrorDetail, "description": _DESCRIPTIONS[code]} for code in codes}


@dataclass(frozen=True)
class ErrorAnswer:
    """What an error answers, whatever the format: ``status``, ``detail``, bad input's structured ``errors``
    (``None`` when there are none to list), and the response ``headers`` (``Retry-After`` on a 503)."""

    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(err: Exception, *, where: str) -> ErrorAnswer:
    """The answer to ``err``. A server-side error is logged as ``clickstream <where>: ...`` (``where``:
    ``API`` or ``page``): an unexpected one with its traceback, any other 5xx as a warning."""
    errors: list[dict[str, Any]] | None = None
    if isinstance(err, StoreError):
        status, detail = err.http_status, err.detail
        errors = list(getattr(err, "errors", None) or []) or None
    elif isinstance(err, RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in err.errors()
        ]
        status, detail = 422, errors_detail(errors) or "invalid request"
    elif isinstance(err, HTTPException):
        status, detail = err.status_code, str(err.detail)
    else:
        log.exception("clickstream %s: unexpected error", where, exc_info=err)
        return ErrorAnswer(500, f"internal error ({type(err).__name__}); see the API server log")
    if status >= 500:
        log.warning("clickstream %s: %s", where, detail)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}
    return ErrorAnswer(status, detail, errors, headers)


def _json_error(_request: Request, err: Exception) -> JSONResponse:
    answer = error_answer(err, where="API")
    body: dict[str, Any] = {"detail": answer.detail}
    if answer.errors is not None:
        body["errors"] = jsonable_encoder(answer.errors)
    return JSONResponse(body, status_code=answer.status, headers=answer.headers or None)


def install_error_handlers(app: FastAPI) -> None:
    """Answer store errors, validation errors and unexpected errors of the JSON routes as JSON (HTTP errors
    keep FastAPI's handler, which answers the same ``{"detail": ...}`` with the error's own headers)."""
    app.add_exception_handler(StoreError, _json_error)
    app.add_exception_handler(RequestValidationError, _json_error)
    app.add_exception_handler(Exception, _json_error)
