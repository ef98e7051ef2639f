"""The one place kodo's error tree becomes HTTP: status table plus handlers (never a 422)."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kodo import outages
from kodo.errors import (
    Conflict,
    DatabaseUnavailable,
    Gone,
    IdentityDrift,
    InvalidInput,
    KodoError,
    NotFound,
    PolicyViolation,
)

_STATUS: list[tuple[type[KodoError], int]] = [
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Gone, 410),
    (DatabaseUnavailable, 503),
]
# During a Postgres outage every route that needs the database answers this, at once (never a 500 stack).
UNAVAILABLE_RETRY_AFTER_SEC = 5
# Postgres refused a value (``_refused``).
REFUSED_VALUE = {"error": "invalid input: the database refused a value", "details": []}
log = structlog.get_logger("kodo.api")


def body_for(error: KodoError) -> tuple[int, dict[str, Any]]:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            body: dict[str, Any] = {"error": error.message}
            if isinstance(error, InvalidInput):
                body["details"] = error.details
            if isinstance(error, PolicyViolation):
                body["code"] = error.code
            if isinstance(error, IdentityDrift):
                body["drift"] = error.drift
            elif isinstance(error, Conflict):
                body.update(error.extra)
            if isinstance(error, DatabaseUnavailable):
                body["retryAfterSec"] = error.retry_after_sec
            return status, body
    return 500, {"error": "internal error"}


def install(app: FastAPI) -> None:
    @app.exception_handler(KodoError)
    async def _kodo(request: Request, error: KodoError) -> JSONResponse:
        if not isinstance(error, DatabaseUnavailable) and outages.is_transient(error):
            return unavailable(request, error)
        status, body = body_for(error)
        if status == 500:
            log.error("request failed", path=request.url.path, error=repr(error))
        headers = {"Retry-After": str(error.retry_after_sec)} if isinstance(error, DatabaseUnavailable) else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in error.errors()]
        return JSONResponse({"error": "invalid request", "details": details}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = "not found" if error.status_code == 404 else str(error.detail)
        return JSONResponse({"error": message}, status_code=error.status_code)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database(request: Request, error: sa.exc.DBAPIError) -> JSONResponse:
        return _failed(request, error)

    @app.exception_handler(sa.exc.DataError)
    async def _data(request: Request, error: sa.exc.DataError) -> JSONResponse:
        return _refused(request, error)

    @app.exception_handler(psycopg.Error)
    async def _driver(request: Request, error: psycopg.Error) -> JSONResponse:
        # The driver's own errors: from the reads made on the event loop (kodo.store.async_connections).
        if isinstance(error, psycopg.DataError) and not outages.is_transient(error):
            return _refused(request, error)
        return _failed(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return _failed(request, error)


def _failed(request: Request, error: BaseException) -> JSONResponse:
    """503 for a transient database error, else a logged 500 (never the stack)."""
    if outages.is_transient(error):
        return unavailable(request, error)
    log.error("unexpected error", path=request.url.path, error=repr(error))
    return JSONResponse({"error": "internal error"}, status_code=500)


def _refused(request: Request, error: BaseException) -> JSONResponse:
    """400: Postgres refused a value (its transaction rolled back, nothing was written): the input's fault."""
    log.warning("database refused a value", path=request.url.path, error=outages.describe(error))
    return JSONResponse(REFUSED_VALUE, status_code=400)


def unavailable(request: Request, error: BaseException) -> JSONResponse:
    """A 503 with ``Retry-After`` for a transient database error (``kodo.outages.is_transient``)."""
    outages.clock.failed(error)
    log.warning("database unavailable", path=request.url.path, error=outages.describe(error))
    status, body = body_for(DatabaseUnavailable("database unavailable; retry later", UNAVAILABLE_RETRY_AFTER_SEC))
    return JSONResponse(body, status_code=status, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SEC)})
