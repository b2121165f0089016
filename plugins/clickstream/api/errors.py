"""Error mapping of the clickstream API: every error is JSON ``{"detail": "..."}`` naming the field or id.

* store errors (:class:`clickstream.store.StoreError`) answer their ``http_status`` with their ``detail``
  (404 unknown id, 409 conflict, 422 invalid input, 503 store unavailable with ``Retry-After``);
* request validation errors answer 422 with ``detail`` = ``"<where>.<field>: <message>"`` (for example
  ``"query.limit: Input should be less than or equal to 1000"``) and the structured list in ``errors``;
* anything unexpected answers 500 JSON (and is logged with its traceback), never an HTML page.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from clickstream.models import ErrorDetail
from clickstream.store import StoreError, StoreUnavailable
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


def _store_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StoreError)
    body: dict[str, Any] = {"detail": err.detail}
    errors = getattr(err, "errors", None)
    if errors:
        body["errors"] = jsonable_encoder(errors)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(err, StoreUnavailable) else None
    if err.http_status >= 500:
        log.warning("clickstream API: %s", err.detail)
    return JSONResponse(body, status_code=err.http_status, headers=headers)


def _validation_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in err.errors()]
    detail = errors_detail(errors) or "invalid request"
    return JSONResponse({"detail": detail, "errors": jsonable_encoder(errors)}, status_code=422)


def _pool_timeout(_request: Request, err: Exception) -> JSONResponse:
    log.warning("clickstream API: no free store connection: %s", err)
    return JSONResponse(
        {"detail": "session store busy: no free database connection; retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _unexpected(_request: Request, err: Exception) -> JSONResponse:
    log.exception("clickstream API: unexpected error", exc_info=err)
    return JSONResponse({"detail": f"internal error ({type(err).__name__}); see the API server log"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa_exc.TimeoutError, _pool_timeout)
    app.add_exception_handler(Exception, _unexpected)
