"""Every error as RFC 9457 problem+json, decided in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bangpae.domain.errors import Conflict, Invalid, NotFound
from bangpae.services.access import AccessDenied

log = logging.getLogger(__name__)
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
}

# What every client error of the API looks like, for its OpenAPI document.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "A stable reason, where one is given."},
        "errors": {
            "type": "array",
            "description": "Which parts of the request did not match its schema (422).",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "array"}, "msg": {"type": "string"}},
            },
        },
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "description": "Refused: RFC 9457 problem+json (401 no or a bad token, 403 not "
        "allowed, 404 absent or not yours, 409 conflict, 422 invalid, 429 throttled)",
        "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
    }
}


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def install(app: FastAPI) -> None:
    """Map every exception to problem+json; never leak a stack trace."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # Retry-After, WWW-Authenticate
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem(422, "the request does not match the schema", errors=errors)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(AccessDenied)
    async def _denied(_: Request, exc: AccessDenied) -> JSONResponse:
        return problem(403, str(exc), code=exc.code)

    @app.exception_handler(Invalid)
    async def _invalid(_: Request, exc: Invalid) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(500, "an internal error occurred; it has been logged")
