"""Error responses: every failure becomes ``{"error": message}`` with the right status, never a traceback.

Installed by ``create_app`` so that the app plugins' routes inherit the same mapping.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kiln.errors import KilnError, UnavailableError

log = logging.getLogger(__name__)


MAX_MESSAGE_CHARS = 2000  # messages may quote client input (a 100 000-character name): keep answers small


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def kiln_error_response(exc: KilnError, method: str, path: str) -> JSONResponse:
    """The answer to a KilnError: its status and message (Retry-After on 503); 5xx faults are logged."""
    headers = None
    if isinstance(exc, UnavailableError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if exc.status >= 500 and not isinstance(exc, UnavailableError):
        log.error("%s %s failed: %s", method, path, exc)
    return error_response(exc.status, str(exc), headers)


async def kiln_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KilnError)
    return kiln_error_response(exc, request.method, request.url.path)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


async def validation_error(request: Request, exc: Exception) -> Response:
    """Pydantic/FastAPI validation: 400 for a body that is not JSON, 422 naming each bad field."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "request body is not valid JSON")
    message = "; ".join(f"{_location(err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in errors)
    return error_response(422, message or "invalid request")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.exception("unhandled error on %s %s (request id %s)", request.method, request.url.path, request_id)
    return error_response(500, f"internal server error (request id {request_id})")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KilnError, kiln_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
